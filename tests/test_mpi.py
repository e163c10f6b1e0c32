"""Every algorithm on the real MPI transport, one process per rank, against the exact result."""

import json
import sys

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


@pytest.mark.parametrize("algorithm", ["ring", "naive"])
def test_a_rank_leaving_early_aborts_the_job_naming_step_and_peer(mpiexec, tmp_path, algorithm):
    done = mpiexec(3, sys.executable, PROGRAMS / "early_exit.py", algorithm, "3", tmp_path / "out",
                   timeout=120)
    assert done.returncode != 0
    assert f"made no progress for 3 s in {algorithm}, step" in done.stderr
    assert "receiving from" in done.stderr or "sending to" in done.stderr
