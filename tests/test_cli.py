"""``collbench run`` end to end under real mpiexec: table, CSV/JSON, results folder, resume,
verification, and one clear sentence for every kind of bad input."""

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from collbench.schema import PROVENANCE_KEYS, SAMPLE_COLUMNS, SUMMARY_COLUMNS
from tests.conftest import PROGRAMS, ROOT, app_stderr, kill_job, mpi_env, mpiexec_path

pytestmark = pytest.mark.mpi
SMALL = ["-b", "8", "-e", "4K", "-f", "8", "-n", "3", "-w", "1"]  # sizes 8, 64, 512, 4096


def collbench(mpiexec, nranks, *args, **kwargs):
    return mpiexec(nranks, sys.executable, "-m", "collbench", *args, **kwargs)


def test_run_prints_a_table_and_writes_a_complete_results_folder(mpiexec, tmp_path):
    out = tmp_path / "r"
    done = collbench(mpiexec, 3, "run", *SMALL, "--out", out)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("#") and "busbw" in line and "#wrong" in line for line in lines)
    # 3 samples: min..max covers the median with probability 1 - 2/2^3, which is all the header claims
    assert "# ci: 75% confidence interval of the median" in done.stdout and "too few for 95%" in done.stdout
    assert any(line.startswith("#") and "ci75-lo" in line and "ci75-hi" in line for line in lines)
    rows = [line.split() for line in lines if not line.startswith("#")]
    assert len(rows) == 4 * 4 * 2  # algorithms x sizes x (out, in)
    assert {r[4] for r in rows} == {"naive", "ring", "rabenseifner", "native"}
    assert all(r[-1] == "0" for r in rows)

    run = json.loads((out / "run.json").read_text())
    assert set(PROVENANCE_KEYS) - {"slurm"} <= set(run)
    assert run["nranks"] == 3 and sum(run["ranks_per_node"].values()) == 3
    assert run["rank_hosts"] == [socket.gethostname()] * 3  # gathered from every rank, in rank order
    assert run["versions"]["mpi_library"] and run["versions"]["numpy"]
    assert "\\u0000" not in (out / "run.json").read_text()  # Open MPI's library string ends in a NUL
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")  # decides what a polling rank costs
    assert run["machine"]["sched_autogroup"] == (autogroup.read_text().strip() == "1" if autogroup.exists()
                                                 else None)
    summary, samples = pd.read_csv(out / "summary.csv"), pd.read_csv(out / "samples.csv")
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert list(samples.columns) == list(SAMPLE_COLUMNS)
    assert len(summary) == 32 and (summary.n_wrong == 0).all()
    combined = samples[samples["rank"] == -1]  # the ranks' times combined; then each rank's own
    assert len(combined) == 32 * (1 + 1 + 3)  # first + warm-up + timed, every one kept
    assert combined.groupby("phase").size().to_dict() == {"first": 32, "timed": 96, "warmup": 32}
    assert samples.groupby("rank").size().to_dict() == {-1: 160, 0: 160, 1: 160, 2: 160}
    assert summary.busbw_GBps.to_numpy() == pytest.approx(summary.algbw_GBps.to_numpy() * 4 / 3)
    assert (summary.ci_low_us <= summary.median_us).all() and (summary.median_us <= summary.ci_high_us).all()


def test_csv_and_json_outputs_are_machine_readable(mpiexec, tmp_path):
    done = collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "ring", "--modes", "in", "--format", "csv",
                     "--out", tmp_path / "c")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [int(r["size_bytes"]) for r in rows] == [8, 64, 512, 4096]
    done = collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "native", "--modes", "out",
                     "--format", "json", "--out", tmp_path / "j")
    assert done.returncode == 0, done.stderr
    points = json.loads(done.stdout)["points"]
    assert [p["algorithm"] for p in points] == ["native"] * 4 and points[0]["n_wrong"] == 0


def test_an_experiment_file_describes_the_same_sweep(mpiexec, tmp_path):
    experiment = tmp_path / "exp.toml"
    experiment.write_text('name = "exp"\n[run]\nalgorithms = ["rabenseifner"]\nminbytes = "1K"\n'
                          'maxbytes = "4K"\nstepfactor = 2\niters = 2\nwarmup_iters = 0\n'
                          'datatype = "int32"\nop = "max"\nmodes = ["in"]\n')
    done = collbench(mpiexec, 3, "run", "-x", experiment, "--out", tmp_path / "x")
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "x" / "summary.csv")
    assert list(summary.size_bytes) == [1024, 2048, 4096]
    assert set(summary.dtype) == {"int32"} and set(summary.op) == {"max"}
    assert json.loads((tmp_path / "x" / "run.json").read_text())["config"]["name"] == "exp"


def test_a_run_killed_midway_keeps_its_points_and_resumes(tmp_path):
    out = tmp_path / "k"
    args = [mpiexec_path(), "-n", "2", sys.executable, "-m", "collbench", "run", "--algorithms",
            "ring,native", "-b", "1K", "-e", "64M", "-f", "4", "-n", "30", "-w", "2", "--modes", "out",
            "--out", str(out)]
    job = subprocess.Popen(args, env=mpi_env(2), cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    summary = out / "summary.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (summary.exists() and len(pd.read_csv(summary)) >= 3):
        time.sleep(0.2)
    kill_job(job.pid)
    job.wait()
    kept = pd.read_csv(summary)
    assert 3 <= len(kept) < 18, "the run should have been killed midway"

    done = subprocess.run(args, env=mpi_env(2), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {len(kept)} point(s) already stored" in done.stdout
    final = pd.read_csv(summary)
    assert len(final) == 18 and not final.duplicated(["algorithm", "size_bytes"]).any()
    pd.testing.assert_frame_equal(final.iloc[: len(kept)], kept)  # earlier points untouched
    assert len(json.loads((out / "run.json").read_text())["resumed"]) == 1


def test_a_wrong_element_is_counted_and_fails_the_command(mpiexec, tmp_path):
    done = mpiexec(2, sys.executable, PROGRAMS / "plant_error.py", tmp_path / "p")
    assert done.returncode == 1
    assert "point(s) had wrong results" in done.stderr
    summary = pd.read_csv(tmp_path / "p" / "summary.csv")
    assert (summary[summary.algorithm == "ring"].n_wrong == 1).all()  # one element, one check
    assert (summary[summary.algorithm == "native"].n_wrong == 0).all()


BAD_INPUTS = {
    "unknown algorithm": (["--algorithms", "ring,tree"], "unknown algorithm 'tree'"),
    "unknown dtype": (["-d", "float8"], "unknown data type 'float8'"),
    "nccl-tests fp8": (["-d", "f8e4m3"], "unknown data type 'f8e4m3'"),
    "unknown op": (["-o", "mulsum"], "unknown op 'mulsum'"),
    "unknown transport": (["--transport", "tcp"], "unknown transport 'tcp'"),
    "-a given algorithms": (["-a", "ring"], "-a is nccl-tests' --average (0, 1, 2 or 3); choose "
                            "algorithms with --algorithms"),
    "-m given a mode": (["-m", "in"], "-m is nccl-tests' --agg_iters (a count); choose out/in-place "
                        "with --modes"),
    "average out of range": (["-a", "4"], "-a/--average must be 0 (rank 0), 1 (mean), 2 (min) or 3"),
    "no aggregation": (["-m", "0"], "-m/--agg_iters must be at least 1"),
    "unknown rank samples": (["--rank-samples", "some"], "--rank-samples must be all or none, got 'some'"),
    "unknown timing": (["--timing", "batched"], "unknown timing 'batched'; choose per-call or aggregate"),
    "bfloat16 on the GPU": (["-d", "bfloat16", "--buffers", "cupy"], "bfloat16 needs host buffers"),
    "bad bandwidth gate": (["--min-busbw", "fast"], "--min-busbw takes a bandwidth in GB/s, got 'fast'"),
    "negative size": (["-b=-8"], "is not a size"),
    "non-numeric size": (["-e", "lots"], "'lots' is not a size"),
    "reversed bounds": (["-b", "1M", "-e", "1K"], "is larger than the largest"),
    "size not a multiple": (["-b", "6", "-e", "6"], "not a multiple of the element size (4 B)"),
    "bad iterations": (["-n", "0"], "-n/--iters must be at least 1, got 0"),
    "negative warm-ups": (["-w=-1"], "-w/--warmup_iters must be at least 0, got -1"),
    "no segments": (["--segments", "0"], "--segments must be at least 1, got 0"),
    "non-numeric iterations": (["-n", "ten"], "iters must be a whole number"),
    "native over verbs": (["--transport", "verbs", "--algorithms", "ring,native"],
                          "the verbs transport has no native"),
    "unknown thread level": (["--mpi-thread-level", "many"], "--mpi-thread-level must be one of single,"),
    "unknown execution": (["--execution", "eager"], "unknown execution 'eager'"),
    "dataflow over nccl": (["--transport", "nccl", "--execution", "dataflow"],
                           "runs on the mpi and verbs transports"),
    "name with a path": (["--name", "../../x"], "run name '../../x' becomes a folder name under results/"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gets_one_sentence_and_exit_2(collbench_cmd, tmp_path, case):
    flags, message = BAD_INPUTS[case]
    done = subprocess.run([*collbench_cmd, "run", *flags, "--out", str(tmp_path / "never")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "never").exists()


def test_a_malformed_experiment_file_is_named(collbench_cmd, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\niters = \n")
    done = subprocess.run([*collbench_cmd, "run", "-x", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"experiment file {bad} is not valid TOML" in done.stderr
    bad.write_text("[run]\nitres = 3\n")
    done = subprocess.run([*collbench_cmd, "run", "-x", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown setting(s) itres" in done.stderr


@pytest.mark.parametrize("text, message", [
    ("[runn]\niters = 3\n", "unknown table or key(s) runn; an experiment file holds name, [run] and [slurm]"),
    ("iters = 3\n[run]\n", "unknown table or key(s) iters"),
    ("", "has no [run] table"),
    ('name = "x"\n', "has no [run] table"),
])
def test_an_experiment_file_that_would_run_something_else_is_refused(collbench_cmd, tmp_path, text, message):
    experiment = tmp_path / "exp.toml"
    experiment.write_text(text)
    done = subprocess.run([*collbench_cmd, "run", "-x", str(experiment), "--out", str(tmp_path / "never")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "never").exists()


def test_a_repeated_algorithm_is_measured_once(mpiexec, tmp_path):
    done = collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "ring,native,ring", "--modes", "out,out",
                     "--out", tmp_path / "d")
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "d" / "summary.csv")
    assert list(summary.algorithm) == ["ring", "native"] * 4
    assert json.loads((tmp_path / "d" / "run.json").read_text())["config"]["algorithms"] == ["ring", "native"]


def test_resuming_with_other_settings_is_refused_and_force_new_sets_the_folder_aside(mpiexec, tmp_path):
    out = tmp_path / "r"
    assert collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "ring", "--out", out).returncode == 0
    before = (out / "summary.csv").read_text()
    for nranks, flags, differ in ((2, ["-n", "5", "-d", "int32"],
                                   "iters 3 -> 5; datatype 'float32' -> 'int32'"), (3, [], "nranks 2 -> 3")):
        done = collbench(mpiexec, nranks, "run", *SMALL, "--algorithms", "ring", *flags, "--out", out)
        assert done.returncode == 2 and app_stderr(done.stderr).count("\n") == 1, done.stderr
        assert f"results folder {out} was measured with other settings ({differ}): rerun" in done.stderr
        assert "--force-new" in done.stderr and (out / "summary.csv").read_text() == before
    # settings that only choose points may change: a wider sweep extends the folder
    done = collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "ring,native", "--out", out)
    assert done.returncode == 0 and "resuming: 8 point(s) already stored" in done.stdout, done.stderr

    done = collbench(mpiexec, 2, "run", *SMALL[:-4], "-n", "5", "-w", "1", "--algorithms", "ring",
                     "--force-new", "--out", out)
    assert done.returncode == 0, done.stderr
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("r.")]
    assert f"moved the earlier results in {out} to {aside}" in done.stderr
    assert len(pd.read_csv(aside / "summary.csv")) == 16  # nothing lost
    fresh = pd.read_csv(out / "summary.csv")
    assert len(fresh) == 8 and set(fresh.iters) == {5}


def test_measuring_into_a_folder_of_predictions_is_refused(mpiexec, tmp_path):
    out = tmp_path / "pred"
    done = subprocess.run([sys.executable, "-m", "collbench", "sim", "--network", "ib-edr", "--algorithms",
                           "ring", "--ranks", "2", "--sizes", "8,64", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before = (out / "summary.csv").read_text()
    done = collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "ring", "--out", out)
    assert done.returncode == 2 and "source 'simulated' -> 'measured'" in done.stderr, done.stderr
    assert (out / "summary.csv").read_text() == before


def test_a_second_run_into_a_busy_folder_is_refused(mpiexec, tmp_path):
    out = tmp_path / "busy"
    args = [mpiexec_path(), "-n", "2", sys.executable, "-m", "collbench", "run", "--algorithms",
            "ring,native", "-b", "1K", "-e", "64M", "-f", "4", "-n", "30", "--modes", "out",
            "--out", str(out)]
    first = subprocess.Popen(args, env=mpi_env(2), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "summary.csv").exists():
            time.sleep(0.2)
        assert first.poll() is None, "the first run should still be measuring"
        done = collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "ring", "--modes", "out", "--out", out)
        assert done.returncode == 2 and app_stderr(done.stderr).count("\n") == 1, done.stderr
        assert f"results folder {out} is in use by another run (pid " in done.stderr
        assert done.stdout == "" and first.poll() is None
    finally:
        kill_job(first.pid)
        first.wait()


def test_an_unwritable_results_folder_is_refused_on_every_rank(mpiexec, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = collbench(mpiexec, 2, "run", *SMALL, "--out", blocker / "sub")
    assert done.returncode != 0
    assert done.stderr.count(f"cannot write to results folder {blocker / 'sub'}") == 1
    assert "Traceback" not in done.stderr and blocker.read_text() == "not a folder"


@pytest.mark.parametrize("policy", ["busy", "yield"])
def test_both_wait_policies_give_exact_results_and_say_which(mpiexec, tmp_path, policy):
    done = collbench(mpiexec, 3, "run", *SMALL, "--algorithms", "naive,ring", "--out", tmp_path / policy,
                     env={"COLLBENCH_MPI_WAIT": policy})
    assert done.returncode == 0, done.stderr
    assert f"wait={policy}" in done.stdout.splitlines()[0]
    assert (pd.read_csv(tmp_path / policy / "summary.csv").n_wrong == 0).all()


def test_an_unknown_wait_policy_is_one_sentence(mpiexec, tmp_path):
    done = collbench(mpiexec, 2, "run", *SMALL, "--out", tmp_path / "w", env={"COLLBENCH_MPI_WAIT": "spin"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "COLLBENCH_MPI_WAIT must be auto, yield or busy, not 'spin'" in done.stderr


def test_doctor_reports_mpi_and_the_optional_stacks(collbench_cmd):
    done = subprocess.run([*collbench_cmd, "doctor"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    library = subprocess.run([sys.executable, "-c", "from mpi4py import MPI; "
                              "print(MPI.Get_library_version().split()[0])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    mpi = [line for line in done.stdout.splitlines() if line.split()[:2] == ["ok", "mpi"]]
    assert library and len(mpi) == 1 and library in mpi[0] and mpiexec_path() in mpi[0]


@pytest.mark.parametrize(("flag", "variable", "level"), [
    (None, None, "funneled"),  # an application with threads of its own, not mpi4py's MULTIPLE
    ("single", None, "single"),
    (None, "serialized", "serialized"),  # mpi4py follows the variable; so does the run
    ("multiple", "multiple", "multiple"),
])
def test_mpi_starts_at_the_thread_level_asked_for_and_run_json_records_it(mpiexec, tmp_path, flag,
                                                                           variable, level):
    env = {"MPI4PY_RC_THREAD_LEVEL": variable} if variable else {}
    args = ["--mpi-thread-level", flag] if flag else []
    done = collbench(mpiexec, 2, "run", "--algorithms", "native", "-b", "8", "-e", "8", "-n", "1",
                     "--modes", "in", *args, "--out", tmp_path / "t", env=env)
    assert done.returncode == 0, done.stderr
    run = json.loads((tmp_path / "t" / "run.json").read_text())
    assert run["mpi_threads"] == {"requested": level, "provided": level,
                                  "mpi4py_rc_environment": env}
    assert run["transport"]["threads"] == level and f"threads={level}" in done.stdout
    assert run["config"]["mpi_thread_level"] == level


def test_a_thread_level_flag_that_contradicts_mpi4pys_variable_is_refused(collbench_cmd, tmp_path):
    done = subprocess.run([*collbench_cmd, "run", "--mpi-thread-level", "single", "--out", tmp_path / "n"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "MPI4PY_RC_THREAD_LEVEL": "multiple"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--mpi-thread-level single contradicts MPI4PY_RC_THREAD_LEVEL=multiple" in done.stderr
