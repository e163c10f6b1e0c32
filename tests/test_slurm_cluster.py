"""Rendered scripts under a real Slurm: a private one-node cluster on localhost.

The fixture installs Debian's slurmctld, slurmd, slurm-client and munge when it runs as root
on Debian, starts a cluster of its own with ``scripts/slurm-local.sh`` (its configuration
in a temporary folder, on free ports) and stops the daemons it started by their pids. It
skips, saying why, when it is not root, not on Debian or the packages cannot be installed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
PROFILE = ROOT / "slurm" / "profiles" / "localhost.toml"
BIN = Path(sys.executable).parent
"""The test venv's bin folder: collbench, python and the PyPI mpich's mpiexec."""

SMALL = """\
[run]
name = "{name}"
algorithms = ["ring", "native"]
minbytes = "8"
maxbytes = "1K"
stepfactor = 8
iters = 3
warmup_iters = 1
"""
# Long enough (seconds, not milliseconds) that a job can be cancelled or requeued between points.
LONG = """\
[run]
name = "{name}"
algorithms = ["naive", "ring", "rabenseifner", "native"]
minbytes = "8"
maxbytes = "1M"
stepfactor = 4
iters = 50
warmup_iters = 2
"""


@dataclass(frozen=True)
class Cluster:
    env: dict
    folder: Path


def _skip_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the local Slurm cluster needs root (to install packages and run slurmd)"
    if not Path("/etc/debian_version").exists() or not shutil.which("apt-get"):
        return "the local Slurm cluster needs Debian's slurmctld/slurmd packages (apt-get)"
    if not (BIN / "collbench").exists() or not (BIN / "mpiexec").exists():
        return f"{BIN} lacks collbench or mpiexec (pip install -e '.[mpi]')"
    return None


def _free_port_pair() -> int:
    """A port p such that p and p + 1 are free (slurmctld and slurmd)."""
    for _ in range(100):
        port = random.randrange(20000, 40000)
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair found")


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        print(f"skipping the Slurm cluster tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm") / "cluster"
    env = {**os.environ, "SLURM_CI_DIR": str(folder), "SLURM_CI_PORT": str(_free_port_pair()),
           "SLURM_CI_CPUS": "8", "SLURM_CONF": str(folder / "slurm.conf"),
           "SLURM_CI_FIRST_JOB_ID": str(random.randrange(10_000, 1_000_000))}
    installed = subprocess.run(["bash", str(SCRIPT), "install"], env=env, capture_output=True,
                               text=True, timeout=900)
    if installed.returncode != 0:
        reason = f"the Slurm packages could not be installed: {_tail(installed.stderr)}"
        print(f"skipping the Slurm cluster tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                                 text=True, timeout=120)
        assert started.returncode == 0, f"slurm did not start: {_tail(started.stderr, 20)}"
        yield Cluster(env, folder)
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def experiment(tmp_path: Path, name: str, body: str = SMALL) -> Path:
    path = tmp_path / f"{name}.toml"
    setup = f"export PATH={shlex.quote(str(BIN))}:$PATH"
    path.write_text(body.format(name=name) + f"\n[slurm]\nsetup = [{json.dumps(setup)}]\n")
    return path


def collbench(cluster: Cluster, *args) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "collbench"), *map(str, args)], env=cluster.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def submit(cluster: Cluster, exp: Path, tmp_path: Path, *args) -> list[str]:
    done = collbench(cluster, "slurm", "submit", exp, "--profile", PROFILE, "--run-id", "r",
                     "--results", tmp_path / "res", *args)
    return [line.split("\t")[0] for line in done.stdout.splitlines()]


def wait_gone(cluster: Cluster, job_ids: list[str], timeout: float = 180) -> None:
    """Wait until no job (or array task) of *job_ids* is queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster.env, capture_output=True,
                             text=True).stdout.split()
        if not {line.split("_")[0] for line in out} & set(job_ids):
            return
        time.sleep(0.5)
    raise AssertionError(f"jobs {job_ids} still queued after {timeout} s")


def logs(folder: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(folder.glob("slurm-*.out")))


def summary_rows(results: Path) -> list[dict]:
    path = results / "summary.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def points(exp: Path) -> int:
    from collbench.config import load_experiment, make_config

    settings = load_experiment(exp)
    settings.pop("extra")
    config = make_config(settings)
    return len(config.algorithms) * len(config.sizes()) * len(config.modes)


def check_results(results: Path, exp: Path, job_id: str, ranks: int, srun: bool = True) -> dict:
    """The folder holds every point, all verified, and the Slurm job in its provenance.

    Under mpiexec the ranks inherit the Slurm step of hydra's proxies (one task per node),
    so SLURM_NTASKS counts proxies, not ranks; only srun's is checked."""
    sweep = results.parent
    assert (results / "run.json").exists(), logs(sweep)
    rows = summary_rows(results)
    assert len(rows) == points(exp), logs(sweep)
    assert all(row["n_wrong"] == "0" for row in rows)
    assert {row["nranks"] for row in rows} == {str(ranks)}
    run = json.loads((results / "run.json").read_text())
    slurm = run["slurm"]
    assert slurm["job_id"] == job_id
    assert slurm["nodelist"] == socket.gethostname().split(".")[0]
    assert slurm["partition"] == "debug"
    assert slurm["ntasks"] == str(ranks) if srun else "ntasks" in slurm
    assert "tasks_per_node" in slurm and run["environment"]["SLURM_JOB_ID"] == job_id
    journal = (results / "slurm-jobs.tsv").read_text().splitlines()
    assert journal[0].startswith("time\tjob_id") and job_id in [j.split("\t")[1] for j in journal]
    assert (sweep / f"job-{job_id}").resolve() == results.resolve()
    return run


def test_rendered_cpu_script_runs_under_sbatch_wait(cluster, tmp_path):
    exp = experiment(tmp_path, "plain")
    collbench(cluster, "slurm", "render", exp, "--profile", PROFILE, "--ntasks-per-node", "2",
              "--run-id", "r", "--results", tmp_path / "res", "-o", tmp_path / "scripts")
    sweep = tmp_path / "res" / "plain-r"
    sweep.mkdir(parents=True)  # the Slurm log's folder
    done = subprocess.run(["sbatch", "--wait", "--parsable",
                           str(tmp_path / "scripts" / "cb-plain-n1-t2.sbatch")],
                          env=cluster.env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr + logs(sweep)
    job_id = done.stdout.strip().split(";")[0]
    run = check_results(sweep / "n1-t2", exp, job_id, ranks=2)
    assert run["slurm"]["ntasks_per_node"] == "2"


def test_array_sweep_with_mpiexec(cluster, tmp_path):
    exp = experiment(tmp_path, "array")
    (job_id,) = submit(cluster, exp, tmp_path, "--mode", "array", "--ntasks-per-node", "2,4",
                       "--launcher", "mpiexec")
    wait_gone(cluster, [job_id])
    sweep = tmp_path / "res" / "array-r"
    for task, ranks in enumerate((2, 4)):
        results = sweep / f"n1-t{ranks}"
        journal = (results / "slurm-jobs.tsv").read_text().splitlines()[1].split("\t")
        run = check_results(results, exp, journal[1], ranks, srun=False)
        assert run["slurm"]["array_job_id"] == job_id
        assert run["slurm"]["array_task_id"] == str(task)


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_chain_runs_one_job_after_the_other(cluster, tmp_path):
    exp = experiment(tmp_path, "chain")
    first, second = submit(cluster, exp, tmp_path, "--mode", "chain", "--ntasks-per-node", "2,3")
    shown = subprocess.run(["scontrol", "show", "job", second], env=cluster.env,
                           capture_output=True, text=True).stdout
    assert f"Dependency=afterany:{first}" in shown
    wait_gone(cluster, [first, second])
    sweep = tmp_path / "res" / "chain-r"
    run1 = check_results(sweep / "n1-t2", exp, first, 2)
    check_results(sweep / "n1-t3", exp, second, 3)
    started2 = (sweep / "n1-t3" / "slurm-jobs.tsv").read_text().splitlines()[1].split("\t")[0]
    assert _time(run1["end_time"]) <= _time(started2)


def test_cancelled_job_resumes_when_resubmitted(cluster, tmp_path):
    exp = experiment(tmp_path, "resume", LONG)
    (job_id,) = submit(cluster, exp, tmp_path, "--ntasks-per-node", "2")
    sweep = tmp_path / "res" / "resume-r"
    results = sweep / "n1-t2"
    deadline = time.monotonic() + 150
    while len(summary_rows(results)) < 2:
        assert time.monotonic() < deadline, "no point finished in time: " + logs(sweep)
        time.sleep(0.2)
    subprocess.run(["scancel", job_id], env=cluster.env, check=True)
    wait_gone(cluster, [job_id])
    before = summary_rows(results)
    assert 2 <= len(before) < points(exp), "the job finished before it could be cancelled"

    script = sweep / "jobs" / "cb-resume-n1-t2.sbatch"
    done = subprocess.run(["sbatch", "--wait", "--parsable", str(script)], env=cluster.env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr + logs(sweep)
    again = done.stdout.strip().split(";")[0]
    run = check_results(results, exp, again, 2)
    after = summary_rows(results)
    assert after[:len(before)] == before  # finished points kept, not measured again
    assert len(run["resumed"]) == 1
    journal = [line.split("\t")[1] for line in (results / "slurm-jobs.tsv").read_text().splitlines()]
    assert journal[1:] == [job_id, again]


def test_requeued_job_keeps_its_points_and_resumes(cluster, tmp_path):
    exp = experiment(tmp_path, "requeue", LONG)
    (job_id,) = submit(cluster, exp, tmp_path, "--ntasks-per-node", "2")
    sweep = tmp_path / "res" / "requeue-r"
    results = sweep / "n1-t2"
    deadline = time.monotonic() + 150
    while len(summary_rows(results)) < 2:
        assert time.monotonic() < deadline, "no point finished in time: " + logs(sweep)
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job_id], env=cluster.env, check=True)
    wait_gone(cluster, [job_id], timeout=400)
    run = check_results(results, exp, job_id, 2)
    assert run["slurm"]["restart_count"] == "1" and len(run["resumed"]) == 1
    journal = [line.split("\t") for line in (results / "slurm-jobs.tsv").read_text().splitlines()]
    assert [(j[1], j[4]) for j in journal[1:]] == [(job_id, "0"), (job_id, "1")]
