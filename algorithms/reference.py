"""The numpy oracle: run a schedule for all ranks at once in one process.

This is the reference that every real transport and the simulator are checked against. It
follows the schedule's semantics literally: in each step every rank's sends read the buffers
as they were when the step began, then every receive is applied in the order listed. It
validates the schedule first (all ranks, every send matched), so every schedule the property
tests execute is also checked against the rules of :mod:`collbench.algorithms.schedule`.

:func:`execute_dataflow` runs the same schedule as a dataflow instead: one op at a time, any
op whose waits (:mod:`collbench.algorithms.dependencies`) are done, in an order a random
generator picks. That every order gives the exact result is what makes the derived waits
safe for the real transports' dataflow execution.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from collbench.algorithms.dependencies import dependencies, flat_ops, message_keys, successors
from collbench.algorithms.ops import ReduceOp
from collbench.algorithms.schedule import Kind, Schedule, ScheduleError, validate


def execute(schedule: Schedule, inputs: np.ndarray, op: ReduceOp | str = ReduceOp.SUM) -> np.ndarray:
    """Return every rank's buffer after running *schedule* on *inputs* and finishing the
    operator (AVG divides every result by P).

    *inputs* has shape ``(nranks, count, ...)``: trailing axes are carried along untouched,
    which the symbolic check uses. The input is not modified. Raises ScheduleError if
    *schedule* breaks a rule (see :func:`~collbench.algorithms.schedule.validate`).
    """
    op = ReduceOp.parse(op) if isinstance(op, str) else op
    _check_inputs(schedule, inputs)
    validate(schedule)
    reduce = getattr(np, op.ufunc)
    bufs = inputs.copy()
    for index in range(schedule.nsteps):
        outgoing: dict[tuple[int, int], list[np.ndarray]] = {}
        for rank in range(schedule.nranks):
            for o in schedule.steps[rank][index]:
                if o.kind is Kind.SEND:  # copied now: the data as it was when the step began
                    outgoing.setdefault((rank, o.peer), []).append(bufs[rank, o.start:o.stop].copy())
        for rank in range(schedule.nranks):
            for o in schedule.steps[rank][index]:
                if o.kind is Kind.SEND:
                    continue
                data = outgoing[(o.peer, rank)].pop(0)
                target = bufs[rank, o.start:o.stop]
                if o.kind is Kind.RECV_REDUCE:
                    reduce(target, data, out=target)
                else:
                    target[...] = data
    op.finish(bufs, schedule.nranks, np)
    return bufs


def _check_inputs(schedule: Schedule, inputs: np.ndarray) -> None:
    if inputs.shape[:2] != (schedule.nranks, schedule.count):
        raise ValueError(f"inputs have shape {inputs.shape}, expected "
                         f"({schedule.nranks}, {schedule.count}, ...)")


def execute_dataflow(schedule: Schedule, inputs: np.ndarray, op: ReduceOp | str = ReduceOp.SUM,
                     rng: random.Random | None = None,
                     waits: Sequence[Sequence[Sequence[int]]] | None = None) -> np.ndarray:
    """Return every rank's buffer after running *schedule* as a dataflow on *inputs*.

    An op runs whole when its waits are done (a receive also needs its message sent), one at
    a time, chosen among all ranks' runnable ops by *rng* (the first runnable one if None):
    a send copies its range into its message, a receive reduces or copies its message into
    place. *waits* (per rank, per op) replaces the derived :func:`dependencies`, so a test can
    show what a weaker rule breaks. Raises ScheduleError if *schedule* breaks a rule or some
    op can never run."""
    op = ReduceOp.parse(op) if isinstance(op, str) else op
    _check_inputs(schedule, inputs)
    validate(schedule)
    reduce = getattr(np, op.ufunc)
    p = schedule.nranks
    ops = [[o for _, o in flat_ops(schedule.steps[r])] for r in range(p)]
    waits = waits if waits is not None else [dependencies(schedule.steps[r]) for r in range(p)]
    after = [successors(w) for w in waits]
    left = [[len(w) for w in per_rank] for per_rank in waits]
    keys = [message_keys(schedule.steps[r], r) for r in range(p)]
    sent: dict[tuple[int, int, int, int], np.ndarray] = {}
    parked: dict[tuple[int, int, int, int], tuple[int, int]] = {}  # receives whose message is not sent
    runnable: list[tuple[int, int]] = []

    def free(rank: int, i: int) -> None:
        """Op *i* of *rank* has no waits left: runnable, or parked until its message is sent."""
        if ops[rank][i].kind is Kind.SEND or keys[rank][i] in sent:
            runnable.append((rank, i))
        else:
            parked[keys[rank][i]] = (rank, i)

    for rank in range(p):
        for i, n in enumerate(left[rank]):
            if not n:
                free(rank, i)
    bufs, done = inputs.copy(), 0
    while runnable:
        pick = rng.randrange(len(runnable)) if rng is not None else 0
        runnable[pick], runnable[-1] = runnable[-1], runnable[pick]
        rank, i = runnable.pop()
        o, key = ops[rank][i], keys[rank][i]
        if o.kind is Kind.SEND:
            sent[key] = bufs[rank, o.start:o.stop].copy()
            if key in parked:
                runnable.append(parked.pop(key))
        else:
            target = bufs[rank, o.start:o.stop]
            if o.kind is Kind.RECV_REDUCE:
                reduce(target, sent.pop(key), out=target)
            else:
                target[...] = sent.pop(key)
        done += 1
        for j in after[rank][i]:
            left[rank][j] -= 1
            if not left[rank][j]:
                free(rank, j)
    if done != sum(map(len, ops)):
        raise ScheduleError(f"{schedule.name}: the dataflow stops with {sum(map(len, ops)) - done} "
                            "ops that can never run")
    op.finish(bufs, schedule.nranks, np)
    return bufs


def contributions(schedule: Schedule, run=execute) -> np.ndarray:
    """How many times each rank's input reached each element of each rank's result.

    Returns an int array of shape ``(nranks, count, nranks)``; a correct all-reduce gives all
    ones. Runs the oracle on one-hot inputs with SUM, so a missing or doubled contribution
    shows exactly, with no floating point in the way (MSCCLang's symbolic check). *run* is
    the executor: :func:`execute`, or :func:`execute_dataflow` with its order bound.
    """
    p, n = schedule.nranks, schedule.count
    one_hot = np.zeros((p, n, p), dtype=np.int64)
    for rank in range(p):
        one_hot[rank, :, rank] = 1
    return run(schedule, one_hot, ReduceOp.SUM)


def execute_policy(schedule: Schedule, inputs: np.ndarray, op: ReduceOp | str = ReduceOp.SUM,
                   rng: random.Random | None = None, window: int | None = None) -> np.ndarray:
    """Return every rank's buffer after running *schedule* as the dataflow executors do: each
    rank posts by :class:`~collbench.algorithms.dataflow.DataflowState` (the real executor's
    and the simulator's policy, with *window*), and of everything that could happen next (a
    message whose send and receive are both posted moves, or a landed reduction is applied)
    *rng* picks one (the first if None). Raises ScheduleError if the policy leaves some op
    unable ever to run (a deadlock), or if *schedule* breaks a rule."""
    from collbench.algorithms.dataflow import WINDOW, DataflowPlan, DataflowState

    op = ReduceOp.parse(op) if isinstance(op, str) else op
    _check_inputs(schedule, inputs)
    validate(schedule)
    reduce = getattr(np, op.ufunc)
    p = schedule.nranks
    states = [DataflowState(DataflowPlan(schedule.steps[r], window or WINDOW)) for r in range(p)]
    keys = [message_keys(schedule.steps[r], r) for r in range(p)]
    sends: dict[tuple, tuple[int, int]] = {}
    recvs: dict[tuple, tuple[int, int]] = {}
    landed: dict[tuple[int, int], np.ndarray] = {}
    can: list[tuple] = []  # ("move", key) or ("apply", rank, op)

    def post(rank: int) -> None:
        for i in states[rank].to_post():
            key = keys[rank][i]
            (sends if states[rank].plan.ops[i].kind is Kind.SEND else recvs)[key] = (rank, i)
            if key in sends and key in recvs:
                can.append(("move", key))

    def complete(rank: int, i: int) -> None:
        can.extend(("apply", rank, j) for j in states[rank].complete(i))
        post(rank)

    for rank in range(p):
        post(rank)
    bufs = inputs.copy()
    while can:
        pick = rng.randrange(len(can)) if rng is not None else 0
        can[pick], can[-1] = can[-1], can[pick]
        event = can.pop()
        if event[0] == "apply":
            _, rank, i = event
            o = states[rank].plan.ops[i]
            target = bufs[rank, o.start:o.stop]
            reduce(target, landed.pop((rank, i)), out=target)
            complete(rank, i)
            continue
        (src, i), (dst, j) = sends.pop(event[1]), recvs.pop(event[1])
        sent, got = states[src].plan.ops[i], states[dst].plan.ops[j]
        data = bufs[src, sent.start:sent.stop].copy()
        if got.kind is Kind.RECV_COPY:
            bufs[dst, got.start:got.stop] = data
            complete(dst, j)
        else:
            landed[(dst, j)] = data
            if states[dst].landed(j):
                can.append(("apply", dst, j))
        complete(src, i)
    stuck = [r for r in range(p) if not states[r].complete_all]
    if stuck:
        raise ScheduleError(f"{schedule.name}: the dataflow policy deadlocks: rank {stuck[0]} has ops "
                            "that can never run")
    op.finish(bufs, p, np)
    return bufs
