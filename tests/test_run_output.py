"""``collbench run`` as nccl-tests users and shell pipelines use it, under real mpiexec:
nccl-tests' type and op names measured by every algorithm, both timings, the average bus
bandwidth footer and the --min-busbw gate, every rank's times kept, progress lines when
stderr is not a terminal, and output into a pipe whose reader leaves early."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PROGRAMS, ROOT, mpi_env, mpiexec_path

SMALL = ["-b", "8", "-e", "4K", "-f", "8", "-n", "3", "-w", "1"]  # sizes 8, 64, 512, 4096


def collbench(mpiexec, nranks, *args, **kwargs):
    return mpiexec(nranks, sys.executable, "-m", "collbench", *args, **kwargs)


@pytest.mark.mpi
def test_bfloat16_and_avg_are_measured_exactly_by_every_algorithm(mpiexec, tmp_path):
    """Three ranks: the average of integers is not an integer, so the division is checked."""
    done = collbench(mpiexec, 3, "run", "-d", "bfloat16", "-o", "avg", "-b", "6", "-e", "96", "-f", "4",
                     "-n", "2", "-w", "0", "--out", tmp_path / "bf16", "--no-progress")
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "bf16" / "summary.csv")
    assert set(summary.algorithm) == {"naive", "ring", "rabenseifner", "native"}
    assert len(summary) == 4 * 3 * 2 and (summary.n_wrong == 0).all()
    assert set(summary.dtype) == {"bfloat16"} and set(summary.op) == {"avg"}
    assert " bfloat16   avg " in done.stdout

    done = collbench(mpiexec, 3, "run", "-d", "half", "-o", "avg", "--execution", "dataflow",
                     "--algorithms", "naive,ring,rabenseifner", "-b", "2", "-e", "2K", "-f", "32", "-n", "2",
                     "-w", "0", "--out", tmp_path / "half", "--no-progress")
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "half" / "summary.csv")
    assert set(summary.dtype) == {"float16"} and len(summary) == 3 * 3 * 2 and (summary.n_wrong == 0).all()


@pytest.mark.mpi
def test_timings_take_their_barriers_and_report_their_statistic(mpiexec, tmp_path):
    done = mpiexec(2, sys.executable, PROGRAMS / "count_barriers.py", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # per-call: one barrier before each of first + 2 warm-ups + 5 timed; aggregate: one per block
    assert report["barriers"] == {"per-call": 1 + 2 + 5, "aggregate": 3}

    for timing, combine in (("per-call", np.max), ("aggregate", np.mean)):
        folder = tmp_path / timing
        run = json.loads((folder / "run.json").read_text())
        assert run["config"]["timing"] == timing and len(run["rank_hosts"]) == 2
        summary, samples = pd.read_csv(folder / "summary.csv"), pd.read_csv(folder / "samples.csv")
        timed = samples[samples.phase == "timed"]
        own = timed[timed["rank"] >= 0].pivot(index="rank", columns="iter", values="time_us").to_numpy()
        combined = timed[timed["rank"] == -1].sort_values("iter").time_us.to_numpy()
        assert own.shape == (2, 5)
        assert combined == pytest.approx(combine(own, axis=0))
        point = summary.iloc[0]
        assert point.timing == timing
        expected = np.median(combined) if timing == "per-call" else own.mean(axis=1).mean()
        assert point.reported_us == pytest.approx(expected)
        assert point.algbw_GBps == pytest.approx(1024 / (expected * 1e-6) / 1e9)


@pytest.mark.mpi
def test_the_footer_the_bandwidth_gate_and_progress_lines(mpiexec, tmp_path):
    out = tmp_path / "gate"
    done = collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "ring,native", "--min-busbw", "1e9",
                     "--out", out)
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "is below --min-busbw 1e+09 GB/s" in errors[0], done.stderr
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 16 and json.loads((out / "run.json").read_text())["end_time"]
    footer = [line for line in done.stdout.splitlines() if line.startswith("# Avg bus bandwidth")]
    assert len(footer) == 1
    assert float(footer[0].split(":")[1].split()[0]) == pytest.approx(summary.busbw_GBps.mean(), rel=1e-5)
    assert "# Out of bounds values : 0 OK" in done.stdout
    # stderr is a pipe here, as under mpiexec and Slurm: plain progress lines, first and last
    assert "collbench: progress 1/16 points" in done.stderr
    assert "collbench: progress 16/16 points" in done.stderr and "ETA" in done.stderr

    done = collbench(mpiexec, 2, "run", *SMALL, "--algorithms", "ring", "--min-busbw", "0", "--no-progress",
                     "--rank-samples", "none", "--out", tmp_path / "pass")
    assert done.returncode == 0, done.stderr
    assert "progress" not in done.stderr
    samples = pd.read_csv(tmp_path / "pass" / "samples.csv")
    assert set(samples["rank"]) == {-1} and len(samples) == 8 * (1 + 1 + 3)


def read_then_close(command: list, lines: int, **kwargs) -> tuple[int, str, list[str]]:
    """Start *command*, read *lines* lines of its output, close the pipe as ``head`` does, and
    wait for it: its exit status, its stderr and the lines read."""
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                           **kwargs)
    got = [job.stdout.readline() for _ in range(lines)]
    job.stdout.close()
    err = job.stderr.read()
    return job.wait(timeout=300), err, got


def test_run_into_a_closed_pipe_finishes_and_stores_every_point(tmp_path):
    """A singleton run (no launcher): its own stdout is the pipe."""
    out = tmp_path / "single"
    status, err, got = read_then_close([sys.executable, "-m", "collbench", "run", "-b", "8", "-e", "64K",
                                        "-f", "2", "-n", "3", "-w", "0", "--algorithms", "ring,native",
                                        "--out", str(out)], 3, env=mpi_env(1))
    assert got[0].startswith("# collbench: 1 ranks")
    assert status == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert len(pd.read_csv(out / "summary.csv")) == 14 * 2 * 2
    assert json.loads((out / "run.json").read_text())["end_time"]
    assert "collbench: progress 56/56 points" in err


def test_sim_and_report_into_a_closed_pipe_finish_quietly(tmp_path):
    sim = [sys.executable, "-m", "collbench", "sim", "--ranks", "2,4,8,16", "--sizes", "1K..1M"]
    whole = subprocess.run([*sim, "--out", str(tmp_path / "whole")], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
    assert whole.returncode == 0, whole.stderr
    status, err, _ = read_then_close([*sim, "--out", str(tmp_path / "cut")], 3)
    assert status == 0 and "Traceback" not in err, err
    rows = [len(pd.read_csv(tmp_path / name / "summary.csv")) for name in ("cut", "whole")]
    assert rows[0] == rows[1] > 100

    status, err, _ = read_then_close([sys.executable, "-m", "collbench", "report", str(tmp_path / "cut"),
                                      "--out", str(tmp_path / "report"), "--formats", "png"], 0)
    assert status == 0 and "Traceback" not in err, err
    assert (tmp_path / "report" / "index.html").exists()


def _tee_keeps_writing() -> bool:
    tee = shutil.which("tee")
    return bool(tee) and "--output-error" in subprocess.run([tee, "--help"], capture_output=True,
                                                             text=True).stdout


@pytest.mark.mpi
@pytest.mark.skipif(not _tee_keeps_writing(), reason="needs GNU tee's -p (--output-error)")
def test_under_mpiexec_tee_p_keeps_the_job_alive_when_the_reader_leaves(tmp_path):
    """MPICH's mpiexec ends the whole job when its own output pipe breaks (it kills the ranks),
    which nothing inside a rank can prevent; the documented way to look at the start of a
    long run is ``| tee -p LOG | head``: tee keeps reading, so the job finishes."""
    launcher = mpiexec_path()
    if launcher is None:
        pytest.skip("no mpiexec found beside Python or on PATH: pip install mpi4py mpich")
    out, log = tmp_path / "teed", tmp_path / "run.log"
    command = (f"{launcher} -n 2 {sys.executable} -m collbench run -b 8 -e 64K -f 2 -n 3 -w 0 "
               f"--algorithms ring,native --no-progress --out {out} | tee -p {log}")
    status, err, got = read_then_close(["bash", "-c", command], 5, env=mpi_env(2))
    assert got[0].startswith("# collbench: 2 ranks") and "Traceback" not in err, err
    assert len(pd.read_csv(out / "summary.csv")) == 14 * 2 * 2
    assert json.loads((out / "run.json").read_text())["end_time"]
    assert "# Avg bus bandwidth" in log.read_text()
