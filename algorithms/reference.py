"""The numpy oracle: run a schedule for all ranks at once in one process.

This is the reference that every real transport and the simulator are checked against. It
follows the schedule's semantics literally: in each step every rank's sends read the buffers
as they were when the step began, then every receive is applied in the order listed. It
validates the schedule first (all ranks, every send matched), so every schedule the property
tests execute is also checked against the rules of :mod:`collbench.algorithms.schedule`.
"""

from __future__ import annotations

import numpy as np
from collbench.algorithms.ops import ReduceOp
from collbench.algorithms.schedule import Kind, Schedule, validate


def execute(schedule: Schedule, inputs: np.ndarray, op: ReduceOp | str = ReduceOp.SUM) -> np.ndarray:
    """Return every rank's buffer after running *schedule* on *inputs* and finishing the
    operator (AVG divides every result by P).

    *inputs* has shape ``(nranks, count, ...)``: trailing axes are carried along untouched,
    which the symbolic check uses. The input is not modified. Raises ScheduleError if
    *schedule* breaks a rule (see :func:`~collbench.algorithms.schedule.validate`).
    """
    op = ReduceOp.parse(op) if isinstance(op, str) else op
    if inputs.shape[:2] != (schedule.nranks, schedule.count):
        raise ValueError(f"inputs have shape {inputs.shape}, expected "
                         f"({schedule.nranks}, {schedule.count}, ...)")
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


def contributions(schedule: Schedule) -> np.ndarray:
    """How many times each rank's input reached each element of each rank's result.

    Returns an int array of shape ``(nranks, count, nranks)``; a correct all-reduce gives all
    ones. Runs the oracle on one-hot inputs with SUM, so a missing or doubled contribution
    shows exactly, with no floating point in the way (MSCCLang's symbolic check).
    """
    p, n = schedule.nranks, schedule.count
    one_hot = np.zeros((p, n, p), dtype=np.int64)
    for rank in range(p):
        one_hot[rank, :, rank] = 1
    return execute(schedule, one_hot, ReduceOp.SUM)
