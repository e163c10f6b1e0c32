"""Every algorithm on the real MPI transport, one process per rank, against the exact result."""

import json
import sys
import time

import pytest

from tests.conftest import PROGRAMS

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
