"""nccl-tests' names and reduction semantics, by hand: type names, avg, bfloat16, how the
ranks' times combine under each timing, the footer's average and the progress lines."""

import io

import ml_dtypes
import numpy as np
import pytest
from collbench.algorithms.data import expected_output, make_input
from collbench.algorithms.ops import DTYPES, ReduceOp, canonical_dtype, numpy_dtype

from collbench.config import make_config
from collbench.errors import CollbenchError
from collbench.harness import point_time
from collbench.output import ProgressLines, average_busbw


@pytest.mark.parametrize(("name", "numpy_name"), [
    ("half", "float16"), ("float", "float32"), ("double", "float64"), ("int", "int32"),
    ("bfloat16", "bfloat16"), ("int8", "int8"), ("uint8", "uint8"), ("uint32", "uint32"),
    ("uint64", "uint64"), ("float16", "float16"), ("float32", "float32"), ("float64", "float64")])
def test_nccl_tests_type_names_mean_the_same_type(name, numpy_name):
    assert canonical_dtype(name) == numpy_name
    assert make_config({"datatype": name}).datatype == numpy_name


def test_every_type_has_its_size_and_bfloat16_is_ml_dtypes():
    sizes = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1,
             "int32": 4, "uint32": 4, "int64": 8, "uint64": 8}
    assert {d: numpy_dtype(d).itemsize for d in DTYPES} == sizes
    assert numpy_dtype("bfloat16") == np.dtype(ml_dtypes.bfloat16)
    half = make_config({"datatype": "half", "minbytes": "2", "maxbytes": "8", "stepfactor": "2"})
    assert half.sizes() == [2, 4, 8]


def test_fp8_and_unknown_names_are_refused_naming_the_known_ones():
    for name in ("f8e4m3", "float8", "char"):
        with pytest.raises(CollbenchError, match=f"unknown data type '{name}'; choose from .*bfloat16.*half"):
            make_config({"datatype": name})


def test_avg_divides_the_sum_by_the_rank_count():
    floats = np.array([4, 6, 7], dtype=np.float32)
    ReduceOp.AVG.finish(floats, 4, np)
    assert floats.tolist() == [1.0, 1.5, 1.75]
    ints = np.array([7, -1], dtype=np.int32)
    ReduceOp.AVG.finish(ints, 4, np)
    assert ints.tolist() == [1, -1]  # rounded toward minus infinity
    same = np.array([4.0])
    ReduceOp.SUM.finish(same, 4, np)
    assert same.tolist() == [4.0]


def test_bfloat16_avg_over_two_ranks_by_hand():
    # rank 0: (j + 0) % 8 = 0 1 2 3; rank 1: (j + 3) % 8 = 3 4 5 6; sums 3 5 7 9; halves exact.
    assert make_input(1, 2, 4, "bfloat16", ReduceOp.AVG).astype(np.float32).tolist() == [3, 4, 5, 6]
    result = expected_output(2, 4, "bfloat16", ReduceOp.AVG)
    assert result.dtype == numpy_dtype("bfloat16")
    assert result.astype(np.float32).tolist() == [1.5, 2.5, 3.5, 4.5]


def test_bfloat16_sums_stay_exact_up_to_256_ranks():
    """bfloat16 holds every integer up to 256 only: the inputs shrink so that P·max <= 256."""
    for p, largest in ((2, 7), (36, 7), (37, 6), (100, 2), (256, 1)):
        inputs = [make_input(r, p, 300, "bfloat16", ReduceOp.SUM).astype(np.int64) for r in range(p)]
        assert max(int(x.max()) for x in inputs) == largest
        exact = sum(inputs)
        assert exact.max() <= 256
        assert (expected_output(p, 300, "bfloat16", ReduceOp.SUM).astype(np.int64) == exact).all()


def test_avg_of_three_ranks_is_the_exact_sum_divided_once():
    exact_sum = expected_output(3, 50, "int64", ReduceOp.SUM)
    got = expected_output(3, 50, "float32", ReduceOp.AVG)
    assert (got == (exact_sum.astype(np.float32) / np.float32(3))).all()


RANK_TIMES = np.array([[1.0, 2.0, 3.0],    # rank 0, three timed iterations
                       [3.0, 4.0, 8.0]])   # rank 1


@pytest.mark.parametrize(("timing", "average", "expected"), [
    ("per-call", None, 4.0),   # max per iteration 3 4 8, median 4
    ("per-call", 2, 2.0),      # min per iteration 1 2 3, median 2
    ("per-call", 1, 3.0),      # mean per iteration 2 3 5.5, median 3
    ("aggregate", None, 3.5),  # rank means 2 and 5, their mean (all_reduce_perf's default)
    ("aggregate", 3, 5.0),     # the slower rank's mean
    ("aggregate", 0, 2.0),     # rank 0's mean
])
def test_the_reported_time_by_timing_and_average(timing, average, expected):
    config = make_config({"timing": timing, "average": average})
    assert point_time(RANK_TIMES, config) == expected


def test_default_average_follows_the_timing():
    assert make_config({}).average == 3 and make_config({"timing": "aggregate"}).average == 1
    assert make_config({"timing": "aggregate", "average": "3"}).average == 3


def test_footer_average_is_the_plain_mean_of_the_points():
    assert average_busbw([{"busbw_GBps": 1.0}, {"busbw_GBps": 2.0}, {"busbw_GBps": 6.0}]) == 3.0


def test_progress_lines_come_at_the_first_point_the_last_and_every_interval():
    out = io.StringIO()
    lines = ProgressLines(4, interval=3600, stream=out)
    for _ in range(4):
        lines.advance()
    text = out.getvalue().splitlines()
    assert [t.split(" points")[0] for t in text] == ["collbench: progress 1/4", "collbench: progress 4/4"]
    assert text[-1].endswith("ETA 0m00s")
    every = io.StringIO()
    lines = ProgressLines(3, interval=0, stream=every)
    for _ in range(3):
        lines.advance()
    assert len(every.getvalue().splitlines()) == 3
