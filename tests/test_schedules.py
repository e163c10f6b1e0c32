"""Every algorithm, run by the numpy oracle, is an exact all-reduce for any P, count, dtype, op."""

import numpy as np
import pytest
from collbench.algorithms import (
    ALGORITHMS,
    Kind,
    Op,
    Schedule,
    ScheduleError,
    build,
    chunk_bounds,
    validate,
    validate_rank,
)
from collbench.algorithms.data import expected_output, make_input
from collbench.algorithms.ops import DTYPES, ReduceOp
from collbench.algorithms.reference import contributions, execute
from hypothesis import given, settings
from hypothesis import strategies as st

VARIANTS = [("naive", {}), ("ring", {}), ("ring", {"segments": 4}), ("rabenseifner", {})]
VARIANT_IDS = ["naive", "ring", "ring-seg4", "rabenseifner"]
RANKS = [1, 2, 3, 4, 5, 7, 8, 9, 13, 16]


def counts_for(p: int) -> list[int]:
    return sorted({0, 1, max(p - 1, 0), p, p + 1, 1000})


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("p", RANKS)
def test_every_rank_gets_each_contribution_exactly_once(name, options, p):
    for count in counts_for(p):
        result = contributions(build(name, p, count, **options))
        assert (result == 1).all(), f"{name} p={p} count={count}"


@settings(max_examples=150, deadline=None)
@given(variant=st.sampled_from(VARIANTS), p=st.integers(1, 64), count=st.integers(0, 300),
       dtype=st.sampled_from(DTYPES), op=st.sampled_from(list(ReduceOp)),
       seed=st.integers(0, 1000))
def test_oracle_result_equals_the_exact_all_reduce(variant, p, count, dtype, op, seed):
    name, options = variant
    schedule = build(name, p, count, **options)
    inputs = np.stack([make_input(r, p, count, dtype, op, seed) for r in range(p)]) if p else None
    result = execute(schedule, inputs, op)
    expected = expected_output(p, count, dtype, op, seed)
    assert (result == expected).all()


@settings(max_examples=20, deadline=None)
@given(p=st.sampled_from([2, 3, 5, 8]), count=st.integers(10_000, 100_000))
def test_large_counts_stay_exact(p, count):
    for name in ALGORITHMS:
        assert (contributions(build(name, p, count)) == 1).all()


@pytest.mark.parametrize("p", [31, 32, 33, 64])
def test_large_rank_counts_with_large_buffers(p):
    for name in ALGORITHMS:
        schedule = build(name, p, 100_003)
        inputs = np.stack([make_input(r, p, 100_003, "int64", ReduceOp.SUM) for r in range(p)])
        assert (execute(schedule, inputs) == expected_output(p, 100_003, "int64", ReduceOp.SUM)).all()


def test_inputs_are_exact_in_float16_and_agree_with_int64():
    for op in ReduceOp:
        exact = expected_output(64, 500, "int64", op)
        assert (expected_output(64, 500, "float16", op).astype(np.int64) == exact).all()


@pytest.mark.parametrize("p", [2, 3, 4, 5, 6, 7, 8, 12, 16, 64])
def test_rabenseifner_steps_match_thakur_rabenseifner_gropp(p):
    """log2(p') halving and doubling steps, plus 2 fold steps and 1 unfold step if P is not a
    power of two; a power of two has neither."""
    pof2 = 1 << (p.bit_length() - 1)
    log = pof2.bit_length() - 1
    schedule = build("rabenseifner", p, 1000)
    assert schedule.nsteps == 2 * log + (3 if p != pof2 else 0)


def test_ring_sends_only_to_the_next_rank_and_has_2p_minus_2_steps():
    schedule = build("ring", 5, 100)
    assert schedule.nsteps == 8
    for rank in range(5):
        assert {op.peer for _, op in schedule.ops(rank) if op.kind is Kind.SEND} == {(rank + 1) % 5}


def test_pipelined_ring_overlaps_segments_in_extra_steps():
    assert build("ring", 4, 100, segments=3).nsteps == 2 * 3 + 2
    assert build("ring", 4, 100, segments=3).message_count() == 3 * build("ring", 4, 100).message_count()


def test_naive_root_receives_everything_in_one_step():
    schedule = build("naive", 4, 10)
    assert [op.kind for op in schedule.steps[0][0]] == [Kind.RECV_REDUCE] * 3
    assert schedule.message_count() == 6


def test_empty_ranges_emit_no_ops():
    assert build("ring", 8, 0).message_count() == 0
    assert build("ring", 8, 3).message_count() == 3 * 2 * 7  # only non-empty chunks travel


@pytest.mark.parametrize(("count", "parts"), [(0, 3), (2, 5), (10, 3), (1000, 7)])
def test_chunk_bounds_are_balanced_and_cover(count, parts):
    bounds = chunk_bounds(count, parts)
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def _schedule(steps_by_rank, count=10) -> Schedule:
    return Schedule("hand-made", len(steps_by_rank), count, tuple(tuple(s) for s in steps_by_rank))


def test_validate_rejects_a_send_without_its_receive():
    lonely = _schedule([[(Op(Kind.SEND, 1, 0, 5),)], [()]])
    with pytest.raises(ScheduleError, match="step 0: rank 0 sends lengths"):
        validate(lonely)


def test_validate_rejects_a_receive_overlapping_a_send_and_names_rank_and_step():
    clash = _schedule([[(Op(Kind.SEND, 1, 0, 5), Op(Kind.RECV_COPY, 1, 4, 9))],
                       [(Op(Kind.SEND, 0, 4, 9), Op(Kind.RECV_COPY, 0, 0, 5))]])
    with pytest.raises(ScheduleError, match="rank 0, step 0"):
        validate(clash)


def test_validate_rejects_ranges_outside_the_buffer_and_bad_peers():
    with pytest.raises(ScheduleError, match="outside"):
        validate(_schedule([[(Op(Kind.SEND, 1, 5, 11),)], [(Op(Kind.RECV_COPY, 0, 5, 11),)]]))
    with pytest.raises(ScheduleError, match="invalid peer"):
        validate(_schedule([[(Op(Kind.SEND, 0, 0, 1),)], [()]]))


def test_unknown_algorithm_and_bad_sizes_are_refused():
    with pytest.raises(KeyError, match="known: naive, ring, rabenseifner"):
        build("tree", 4, 10)
    with pytest.raises(ScheduleError, match="at least 1"):
        build("ring", 0, 10)
    with pytest.raises(ScheduleError, match="non-negative"):
        build("naive", 4, -1)


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=VARIANT_IDS)
def test_steps_are_built_per_rank_and_streamed_alike(name, options):
    """``steps[rank]``, ``stream(rank)`` and ``stream_fields(rank)`` give the same ops."""
    schedule = build(name, 13, 100, **options)
    assert len(schedule.steps) == 13
    for rank in range(13):
        steps = schedule.steps[rank]
        assert len(steps) == schedule.nsteps
        assert all(type(op) is Op for step in steps for op in step)
        assert list(schedule.stream(rank)) == list(steps)
        assert [tuple(map(tuple, step)) for step in schedule.stream_fields(rank)] == list(steps)
        assert schedule.steps[rank - 13] is steps  # built once, kept
    with pytest.raises(IndexError):
        schedule.steps[13]
    assert list(schedule.steps) == [schedule.steps[r] for r in range(13)]


def test_one_rank_of_a_huge_schedule_is_built_alone():
    """A rank builds its own steps in O(its steps), whatever P: a real job never pays P times."""
    half = 500_000_000  # rank 5 is the odd rank of a folded pair: it exchanges halves with 4
    assert build("rabenseifner", 2**20 + 3, 2 * half).steps[5][0] == (
        Op(Kind.RECV_REDUCE, 4, half, 2 * half), Op(Kind.SEND, 4, 0, half))
    assert build("naive", 10**6, 10).steps[7] == ((Op(Kind.SEND, 0, 0, 10),), (Op(Kind.RECV_COPY, 0, 0, 10),))
    ring = build("ring", 20_000, 10**6)
    assert ring.nsteps == len(ring.steps[3]) == 2 * 19_999
    assert ring.steps[3][0] == (Op(Kind.RECV_REDUCE, 2, 100, 150), Op(Kind.SEND, 4, 150, 200))


@pytest.mark.parametrize("p", [2, 3, 8, 13])
def test_message_counts_match_the_closed_forms(p):
    assert build("ring", p, 10 * p).message_count() == 2 * p * (p - 1)
    assert build("naive", p, 10).message_count() == 2 * (p - 1)


def test_validate_rank_checks_one_rank_alone():
    """validate_rank sees a rank's own errors, not a partner that never answers."""
    lonely = _schedule([[(Op(Kind.SEND, 1, 0, 5),)], [()]])
    validate_rank(lonely, 0)
    validate_rank(lonely, 1)
    with pytest.raises(ScheduleError, match="outside"):
        validate_rank(_schedule([[(Op(Kind.SEND, 1, 5, 11),)], [()]]), 0)
    with pytest.raises(ScheduleError, match="different numbers of steps"):
        validate_rank(_schedule([[(), ()], [()]]), 1)
