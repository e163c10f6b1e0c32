"""Memory per point: a rank holds its send and receive buffers and the schedule's scratch
area, and nothing else of the message's size (inputs, the expected result and the check are
built from one period of their pattern)."""

import itertools
import json
import sys
import tracemalloc

import numpy as np
import pytest
from collbench.algorithms.data import (
    _values,
    count_mismatches,
    expected_output,
    make_input,
    period,
)
from collbench.algorithms.ops import ReduceOp, numpy_dtype

from tests.conftest import PROGRAMS

MiB = 1 << 20


def test_inputs_follow_their_formulas_by_hand():
    # SUM: (j + 3·rank) mod 8
    assert make_input(1, 2, 10, "int32", ReduceOp.SUM).tolist() == [3, 4, 5, 6, 7, 0, 1, 2, 3, 4]
    # PROD at P = 2, rank 0: -1 where j mod 3 = 0, doubled where j mod 2 = 0
    assert make_input(0, 2, 6, "int32", ReduceOp.PROD).tolist() == [-2, 1, 2, -1, 2, 1]
    # MAX: (7j + 13·rank) mod 101 - 50, with the seed shifting j
    assert make_input(1, 4, 3, "int64", ReduceOp.MAX, seed=2).tolist() == [-23, -16, -9]
    assert expected_output(2, 4, "int64", ReduceOp.SUM).tolist() == [3, 5, 7, 9]  # (j)+(j+3)
    assert period(5, "float32", ReduceOp.PROD) == 15 and period(3, "float32", ReduceOp.PROD) == 3


@pytest.mark.parametrize(("nranks", "dtype", "op"), list(itertools.product(
    [1, 2, 3, 7, 64], ["float16", "bfloat16", "float32", "int64"], ReduceOp)))
def test_the_repeated_period_is_the_formula_at_every_index(nranks, dtype, op):
    for count, seed, rank in ((0, 0, 0), (1, 3, nranks - 1), (1000, 1, 0), (4099, 2, nranks // 2)):
        j = np.arange(count, dtype=np.int64) + seed
        direct = _values(j, rank, nranks, dtype, op, np).astype(numpy_dtype(dtype))
        assert make_input(rank, nranks, count, dtype, op, seed).tobytes() == direct.tobytes()


def _peak(function, *args) -> int:
    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_input_or_expected_result_costs_its_own_bytes_only():
    # formerly an int64 index array (2x the message) and temporaries as large: ~6x
    for dtype in ("float32", "float16", "int64"):
        size = 4 * MiB
        count = size // np.dtype(numpy_dtype(dtype)).itemsize
        assert size <= _peak(make_input, 3, 8, count, dtype, ReduceOp.PROD) < size + 64 * 1024
        assert size <= _peak(expected_output, 8, count, dtype, ReduceOp.SUM) < size + 64 * 1024


def test_a_check_counts_every_wrong_element_in_a_chunks_memory():
    expected = expected_output(4, 1_000_003, "float32", ReduceOp.SUM)
    got = expected.copy()
    got[[0, 65_535, 65_536, 999_999, 1_000_002]] += 1
    pattern = expected[:period(4, "float32", ReduceOp.SUM)]
    assert count_mismatches(got, pattern) == 5 and count_mismatches(expected, pattern) == 0
    assert _peak(count_mismatches, got, pattern) < MiB  # the buffer is 4 MB


@pytest.mark.mpi
def test_each_point_holds_its_buffers_and_scratch_and_no_more(mpiexec):
    size = 4 * MiB
    done = mpiexec(2, sys.executable, PROGRAMS / "footprint.py", size, timeout=300)
    assert done.returncode == 0, done.stderr
    ranks = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(ranks) == 2
    for points in ranks:
        for name, (peak, scratch, wrong) in points.items():
            assert wrong == 0, name
            # send + receive + the schedule's scratch (ring and Rabenseifner M/2 at P = 2,
            # naive's root M), plus a check chunk and the plan
            assert 2 * size + scratch <= peak < 2 * size + scratch + MiB // 2, (name, peak, scratch)
            assert peak < 3.2 * size, name
