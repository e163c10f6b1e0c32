"""Every algorithm on the real MPI transport, one process per rank, against the exact result."""

import json
import sys
import time

import pytest

from tests.conftest import PROGRAMS, bind_to_core

pytestmark = pytest.mark.mpi

FULL_GRID = {}  # every dtype, op and count
SMALL_GRID = {"--dtypes": "float16,bfloat16,float32,uint8,int64",  # oversubscribed ranks
              "--ops": "sum,prod,max,avg"}


@pytest.mark.parametrize("nranks", [1, 2, 3, 4, 5, 7, 8])
def test_algorithms_on_real_mpi_match_the_exact_result(mpiexec, nranks):
    grid = FULL_GRID if nranks <= 4 else SMALL_GRID
    args = [a for pair in grid.items() for a in pair]
    done = mpiexec(nranks, sys.executable, PROGRAMS / "check_allreduce.py", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["nranks"] == nranks and report["failures"] == []
    assert report["checked"] >= 200


@pytest.mark.parametrize("nranks", [2, 3, 4, 5])
def test_dataflow_execution_matches_the_exact_result(mpiexec, nranks):
    """Odd counts, a large one (rendezvous, reduced in pieces), ring chunks in 5 segments, and a
    window of one op of each kind: the tightest posting the executor allows."""
    for window in ("16", "1"):
        done = mpiexec(nranks, sys.executable, PROGRAMS / "check_allreduce.py", "--execution", "dataflow",
                       "--window", window, "--segments", "5", "--counts", "0,1,3,7,1001,300001",
                       "--dtypes", "float16,float64,int32", "--ops", "sum,prod,min")
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["failures"] == [] and report["checked"] == 3 * 3 * 6 * 5 * 2


@pytest.mark.parametrize(("algorithm", "execution"), [("ring", "step"), ("naive", "step"),
                                                      ("ring", "dataflow"), ("naive", "dataflow")])
def test_a_rank_leaving_early_aborts_the_job_naming_step_and_peer(mpiexec, tmp_path, algorithm, execution):
    done = mpiexec(3, sys.executable, PROGRAMS / "early_exit.py", algorithm, "3", tmp_path / "out",
                   execution, timeout=120)
    assert done.returncode != 0
    assert f"made no progress for 3 s in {algorithm}, step" in done.stderr
    assert "receiving from" in done.stderr or "sending to" in done.stderr


@pytest.mark.parametrize("kind", ["RuntimeError", "CollbenchError"])
def test_an_error_on_one_rank_aborts_the_job_at_once_with_its_message(mpiexec, tmp_path, kind):
    start = time.monotonic()
    done = mpiexec(3, sys.executable, PROGRAMS / "fail_on_rank.py", kind, tmp_path / "out", timeout=120)
    assert time.monotonic() - start < 60  # the watchdog would take 300 s
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("collbench:")]
    prefix = "collbench: error: rank 1: " + ("RuntimeError: " if kind == "RuntimeError" else "")
    assert len(ours) == 1 and ours[0].startswith(prefix + "planted failure on rank 1"), done.stderr
    assert "Traceback" not in done.stderr


def test_ranks_each_have_a_cpu_when_their_masks_can_be_matched_to_distinct_cpus():
    from collbench.launcher import each_has_a_cpu

    assert each_has_a_cpu([[0], [1]])  # bound, one core each: the case a mask count got wrong
    assert each_has_a_cpu([[0, 1], [0, 1]])  # unbound on two cores
    assert not each_has_a_cpu([[0, 1]] * 3)  # unbound, three ranks on two cores
    assert not each_has_a_cpu([[0], [0]])  # two ranks bound to one core
    assert not each_has_a_cpu([[0], [0], [0, 1, 2]])  # three CPUs in all, but two ranks want cpu 0
    assert each_has_a_cpu([[0, 1], [0], [1, 2]])  # needs the augmenting path: 0->1, 1->0, 2->2
    assert each_has_a_cpu([])


@pytest.mark.parametrize("nranks", [2, 3])
def test_bound_ranks_wait_busy_unless_two_share_a_core(mpiexec, tmp_path, nranks):
    import os

    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("binding two ranks to distinct cores needs two CPUs")
    done = mpiexec(nranks, *bind_to_core(nranks), sys.executable, "-m", "collbench", "run",
                   "--algorithms", "ring", "-b", "8", "-e", "8", "-n", "1", "-w", "0", "--modes", "in",
                   "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr
    wait = json.loads((tmp_path / "r" / "run.json").read_text())["transport"]["wait"]
    assert wait == ("busy" if nranks <= cpus else "yield")
