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
from collbench.algorithms.ring import ring

from collbench.config import make_config
from collbench.footprint import available_bytes, point_bytes, rank_bytes, scratch_elements
from tests.conftest import PROGRAMS, app_stderr

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


CHECK = (1 << 16) * (3 * 4 + 1)  # the check's chunk of float32: reference, two temporaries, a mask


def test_the_footprint_of_each_algorithm_by_hand():
    config = make_config({"minbytes": 8, "maxbytes": 4096})  # float32: 1024 elements at 4 KiB
    assert rank_bytes(4096, 4, 0) == 8192 + CHECK
    # ring, P = 4: one reducing receive of a quarter (256 elements) per step
    assert point_bytes(config, "ring", 4, 1, 4096) == 8192 + 256 * 4 + CHECK
    # naive: the root posts the P-1 reducing receives of whole messages at once; the others none
    assert point_bytes(config, "naive", 4, 0, 4096) == 8192 + 3 * 4096 + CHECK
    assert point_bytes(config, "naive", 4, 3, 4096) == 8192 + CHECK
    # Rabenseifner, P = 2: half the message in the first exchange; native: the library's one message
    assert point_bytes(config, "rabenseifner", 2, 1, 4096) == 8192 + 2048 + CHECK
    assert point_bytes(config, "native", 2, 0, 4096) == 8192 + 4096 + CHECK


def test_a_dataflow_scratch_holds_a_window_of_reducing_receives():
    steps = ring(4, 1024).steps[0]  # three reducing receives of 256, one per step
    assert scratch_elements(steps, "step") == 256
    assert scratch_elements(steps, "dataflow") == 768  # all three fit in the window of 64
    assert scratch_elements(steps, "dataflow", window=2) == 512


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    1234 kB\n")
    assert available_bytes(meminfo) == 1234 * 1024
    assert available_bytes(tmp_path / "absent") is None
    if sys.platform == "linux":
        assert 0 < available_bytes() < 1 << 50


@pytest.mark.mpi
@pytest.mark.parametrize("execution", ["step", "dataflow"])
def test_each_point_holds_its_buffers_and_scratch_and_no_more(mpiexec, execution):
    size = 4 * MiB
    config = make_config({"minbytes": size, "maxbytes": size, "execution": execution})
    done = mpiexec(2, sys.executable, PROGRAMS / "footprint.py", size, execution, timeout=300)
    assert done.returncode == 0, done.stderr
    ranks = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(ranks) == 2
    for rank, points in enumerate(ranks):
        for name, (peak, scratch, wrong) in points.items():
            assert wrong == 0, name
            algorithm = name.split("/")[0]
            # the predicted footprint is what was allocated, to within the check's allowance
            predicted = point_bytes(config, algorithm, 2, rank, size) - (size if algorithm == "native" else 0)
            assert peak <= predicted <= peak + CHECK, (name, peak, predicted)
            if algorithm != "native":
                assert predicted - 2 * size - CHECK == scratch, name
            # send + receive + the schedule's scratch (ring and Rabenseifner M/2 at P = 2,
            # naive's root M), plus a check chunk and the plan
            assert 2 * size + scratch <= peak < 2 * size + scratch + MiB // 2, (name, peak, scratch)
            assert peak < 3.2 * size, name


@pytest.mark.mpi
def test_a_sweep_larger_than_memory_is_refused_before_allocating(mpiexec, collbench_cmd, tmp_path):
    done = mpiexec(2, *collbench_cmd, "run", "-b", "1T", "-e", "1T", "--out", tmp_path / "never", timeout=60)
    lines = app_stderr(done.stderr).splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("collbench: error: the largest size, 1 TiB, needs ")
    assert " per node for " in lines[0] and " available: choose a smaller -e" in lines[0]
    assert not (tmp_path / "never").exists() and "Traceback" not in done.stderr


@pytest.mark.mpi
@pytest.mark.skipif(sys.platform != "linux", reason="limits the address space with ulimit -v (Linux)")
def test_an_allocation_that_still_fails_is_one_sentence(mpiexec, tmp_path):
    # 1.5 GB of address space per rank passes the memory check but not 2 x 1 GiB of buffers
    run = f"ulimit -v 1500000; exec {sys.executable} -m collbench run --algorithms ring -b 1G -e 1G " \
          f"-n 1 -w 0 --out {tmp_path / 'out'}"
    done = mpiexec(2, "bash", "-c", run, timeout=120)
    lines = app_stderr(done.stderr).splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "could not allocate the buffers of ring, 1073741824 B" in lines[0]
    assert "choose a smaller -e" in lines[0] and "Traceback" not in done.stderr
