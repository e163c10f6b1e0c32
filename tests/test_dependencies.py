"""The dataflow rule: which earlier ops each op of a rank waits for, and that every order the
rule allows gives the exact all-reduce."""

import random

import numpy as np
import pytest
from collbench.algorithms import build
from collbench.algorithms.data import expected_output, make_input
from collbench.algorithms.dependencies import dependencies, successors, waits_by_rule
from collbench.algorithms.ops import DTYPES, ReduceOp
from collbench.algorithms.reference import contributions, execute, execute_dataflow
from collbench.algorithms.schedule import Kind, Op, ScheduleError
from hypothesis import given, settings
from hypothesis import strategies as st

SEND, REDUCE, COPY = Kind.SEND, Kind.RECV_REDUCE, Kind.RECV_COPY


def test_ring_rank_0_of_3_waits_by_hand():
    """Ring, P = 3, one element per chunk; rank 0's ops in order:
    0 send c0, 1 reduce c2 (step 0); 2 send c2, 3 reduce c1 (step 1);
    4 send c1, 5 copy c0 (step 2); 6 send c0, 7 copy c2 (step 3)."""
    steps = build("ring", 3, 3).steps[0]
    assert [(o.kind, o.start) for s in steps for o in s] == [
        (SEND, 0), (REDUCE, 2), (SEND, 2), (REDUCE, 1), (SEND, 1), (COPY, 0), (SEND, 0), (COPY, 2)]
    assert dependencies(steps) == [
        (), (),
        (1,),     # sends c2 once reduced into (read after write)
        (),       # c1 untouched before
        (3,),     # sends c1 once reduced
        (0,),     # copies over c0 once its step-0 send is done with it (write after read)
        (5,),     # forwards the copied c0
        (1, 2),   # copies over c2: after its reduction (write after write) and its send
    ]


def test_naive_root_reductions_of_one_step_do_not_wait_for_each_other():
    steps = build("naive", 3, 10).steps
    assert dependencies(steps[0]) == [(), (), (0, 1), (0, 1)]  # the result goes out once both land
    assert dependencies(steps[1]) == [(), (0,)]  # the broadcast overwrites what was sent


def test_partial_overlaps_wait_on_each_element_s_last_writer_and_readers():
    steps = ((Op(REDUCE, 1, 0, 4),), (Op(SEND, 1, 2, 6),), (Op(COPY, 1, 4, 8),),
             (Op(SEND, 1, 0, 8),), (Op(REDUCE, 1, 0, 8), Op(REDUCE, 2, 0, 8)), (Op(REDUCE, 1, 3, 5),))
    assert dependencies(steps) == [
        (),
        (0,),          # reads [2, 4), which op 0 wrote
        (1,),          # writes [4, 6), which op 1 reads; op 0's [0, 4) does not overlap
        (0, 2),        # reads what ops 0 and 2 wrote; sends never wait for sends
        (0, 1, 2, 3),  # [2, 4): last written by op 0, read by ops 1 and 3 since; [4, 8): op 2, op 3
        (0, 1, 2, 3),  # the same step's reductions do not wait for each other
        (4, 5),        # both reductions of the step before wrote [3, 5)
    ]


def test_sends_never_wait_for_sends():
    steps = ((Op(SEND, 1, 0, 4),), (Op(SEND, 2, 0, 4),))
    assert dependencies(steps) == [(), ()]


@pytest.mark.parametrize(("name", "options"), [("naive", {}), ("ring", {}), ("ring", {"segments": 3}),
                                               ("rabenseifner", {})])
@pytest.mark.parametrize("p", [2, 3, 5, 6, 8])
def test_direct_waits_imply_exactly_the_pairwise_rule(name, options, p):
    for count in (1, p - 1, p, 2 * p + 1, 97):
        schedule = build(name, p, count, **options)
        for rank in range(p):
            direct = dependencies(schedule.steps[rank])
            rule = waits_by_rule(schedule.steps[rank])
            assert all(set(d) <= r for d, r in zip(direct, rule))
            assert _closure(direct) == [set().union(r, *(_closure(direct)[i] for i in r)) for r in rule]


def _closure(waits):
    closed = []
    for before in waits:
        closed.append(set(before).union(*(closed[i] for i in before)))
    return closed


def test_successors_invert_waits():
    assert successors([(), (0,), (0, 1)]) == [[1, 2], [2], []]


VARIANTS = st.one_of(st.tuples(st.just("naive"), st.just({})),
                     st.tuples(st.just("rabenseifner"), st.just({})),
                     st.tuples(st.just("ring"), st.builds(lambda s: {"segments": s}, st.integers(1, 5))))


@settings(max_examples=120, deadline=None)
@given(variant=VARIANTS, p=st.integers(1, 64), count=st.one_of(st.integers(0, 70), st.integers(70, 400)),
       dtype=st.sampled_from(DTYPES), op=st.sampled_from(list(ReduceOp)), seed=st.integers(0, 1000),
       rng=st.randoms(use_true_random=False))
def test_every_order_the_waits_allow_gives_the_exact_all_reduce(variant, p, count, dtype, op, seed, rng):
    name, options = variant
    schedule = build(name, p, count, **options)
    inputs = np.stack([make_input(r, p, count, dtype, op, seed) for r in range(p)])
    result = execute_dataflow(schedule, inputs, op, rng)
    assert (result == expected_output(p, count, dtype, op, seed)).all()


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(["naive", "ring", "rabenseifner"]), p=st.sampled_from([2, 3, 5, 8]),
       count=st.integers(10_000, 50_000), rng=st.randoms(use_true_random=False))
def test_large_counts_in_any_order_reach_every_rank_once(name, p, count, rng):
    schedule = build(name, p, count, **({"segments": 4} if name == "ring" else {}))
    assert (contributions(schedule, lambda s, x, o: execute_dataflow(s, x, o, rng)) == 1).all()


def _hand_made(dropped: str):
    """Three ranks, four elements, and two transfers through rank 1 that only the *dropped*
    wait orders: rank 1 reduces rank 0's buffer and forwards the sum to rank 2 (read after
    write); rank 1 sends its buffer to rank 2 and copies rank 0's over it (write after read);
    rank 1 reduces rank 0's buffer, then copies rank 2's over it (write after write)."""
    from collbench.algorithms.schedule import ScheduleBuilder

    b = ScheduleBuilder(dropped, 3, 4)
    first, second = {"read after write": ((0, 1, True), (1, 2, False)),
                     "write after read": ((1, 2, False), (0, 1, False)),
                     "write after write": ((0, 1, True), (2, 1, False))}[dropped]
    b.transfer(0, first[0], first[1], 0, 4, reduce=first[2])
    b.transfer(1, second[0], second[1], 0, 4, reduce=second[2])
    return b.build()


@pytest.mark.parametrize("dropped", ["read after write", "write after read", "write after write"])
def test_each_kind_of_wait_is_needed(dropped):
    """Without one kind of wait some order gives another result than the steps do; with all
    three, none does."""
    schedule = _hand_made(dropped)

    def keep(a: Op, b: Op) -> bool:
        kind = ("read after write" if b.kind is SEND else
                "write after read" if a.kind is SEND else "write after write")
        return kind != dropped

    weaker = []
    for rank in range(schedule.nranks):
        ops = [o for s in schedule.steps[rank] for o in s]
        weaker.append([[i for i in rule if keep(ops[i], ops[j])]
                       for j, rule in enumerate(waits_by_rule(schedule.steps[rank]))])
    inputs = np.arange(12, dtype=np.int64).reshape(3, 4) * 10 ** np.arange(3)[:, None]
    stepwise = execute(schedule, inputs)
    outcomes = {execute_dataflow(schedule, inputs, rng=random.Random(seed), waits=weaker).tobytes()
                for seed in range(50)}
    assert len(outcomes) == 2 and stepwise.tobytes() in outcomes
    assert {execute_dataflow(schedule, inputs, rng=random.Random(seed)).tobytes()
            for seed in range(50)} == {stepwise.tobytes()}


def test_an_op_that_can_never_run_is_reported():
    schedule = build("ring", 2, 2)
    waits = [[(1,), (0,), (), ()], [[] for _ in range(4)]]  # ops 0 and 1 of rank 0 wait for each other
    inputs = np.zeros((2, 2))
    with pytest.raises(ScheduleError, match="can never run"):
        execute_dataflow(schedule, inputs, waits=waits)


def test_posting_policy_on_a_two_segment_ring_by_hand():
    """Ring, P = 2, 4 elements, 2 segments; rank 0's ops: 0 send [0,1), 1 reduce [2,3) (step 0);
    2 send [2,3), 3 copy [0,1), 4 send [1,2), 5 reduce [3,4) (step 1); 6 send [3,4), 7 copy
    [1,2) (step 2). Receives go in order, a copy only once its waits are done; sends as soon
    as theirs are, out of order (send 4 before send 2)."""
    from collbench.algorithms.dataflow import DataflowPlan, DataflowState

    plan = DataflowPlan(build("ring", 2, 4, segments=2).steps[0])
    assert [(o.kind, o.start) for o in plan.ops] == [
        (SEND, 0), (REDUCE, 2), (SEND, 2), (COPY, 0), (SEND, 1), (REDUCE, 3), (SEND, 3), (COPY, 1)]
    state = DataflowState(plan)
    assert state.to_post() == [1, 0, 4]  # copy 3 waits for send 0 and holds the receives behind it
    assert state.complete(0) == [] and state.to_post() == [3, 5]  # copy 7 waits for send 4
    assert state.landed(1) is True  # reduce 1 waits for nothing: apply it
    assert state.complete(1) == [] and state.to_post() == [2]
    assert state.landed(5) is True and state.complete(5) == [] and state.to_post() == [6]
    for i in (2, 3, 4):
        state.complete(i)
    assert state.to_post() == [7]
    for i in (6, 7):
        state.complete(i)
    assert state.complete_all


def test_the_send_window_holds_back_only_sends_that_overtake():
    """Window 1, raised to step 0's two sends. Ops: 0, 1 send [0,1), [1,2) (step 0); 2 reduce
    [2,3) (step 1); 3 send [2,3), which waits for it (step 2); 4 send [3,4), ready at once
    (step 3). Send 4 would overtake send 3 and two are out: it waits for a free place. Send
    3, the lowest not posted, goes once ready whatever the window."""
    from collbench.algorithms.dataflow import DataflowPlan, DataflowState

    steps = ((Op(SEND, 1, 0, 1), Op(SEND, 1, 1, 2)), (Op(REDUCE, 1, 2, 3),), (Op(SEND, 1, 2, 3),),
             (Op(SEND, 1, 3, 4),))
    plan = DataflowPlan(steps, window=1)
    assert (plan.send_window, plan.recv_window) == (2, 1)
    state = DataflowState(plan)
    assert state.to_post() == [2, 0, 1]
    state.complete(0)
    assert state.to_post() == [4]  # one place free
    assert state.landed(2) and state.complete(2) == []
    assert state.to_post() == [3]  # sends 1 and 4 are out, but 3 is the lowest not posted


@settings(max_examples=120, deadline=None)
@given(variant=VARIANTS, p=st.integers(1, 40), count=st.one_of(st.integers(0, 70), st.integers(70, 400)),
       window=st.sampled_from([1, 2, 3, 64]), dtype=st.sampled_from(DTYPES),
       op=st.sampled_from(list(ReduceOp)), seed=st.integers(0, 1000), rng=st.randoms(use_true_random=False))
def test_the_executors_posting_policy_never_deadlocks_and_is_exact(variant, p, count, window, dtype, op,
                                                                    seed, rng):
    """The policy the MPI executor and the simulator share (receives in order, sends when
    ready, windows as small as 1), with messages and reductions completing in any order."""
    from collbench.algorithms.reference import execute_policy

    name, options = variant
    schedule = build(name, p, count, **options)
    inputs = np.stack([make_input(r, p, count, dtype, op, seed) for r in range(p)])
    result = execute_policy(schedule, inputs, op, rng, window)
    assert (result == expected_output(p, count, dtype, op, seed)).all()
