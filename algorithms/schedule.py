"""The schedule: what every rank sends and receives, step by step, as plain data.

A :class:`Schedule` holds, for each rank, the same number of steps; a step is a tuple of
:class:`Op` that the rank posts together and waits for together. A ``SEND`` ships the
element range ``[start, stop)`` of the rank's buffer *as it was when the step began*; a
``RECV_REDUCE`` combines the incoming data into ``[start, stop)`` with the reduction operator,
a ``RECV_COPY`` overwrites it. The k-th send from rank a to rank b in step s is matched with
the k-th receive at b from a in step s; executors derive message tags from that rule.

Inside one step of one rank, a receive never overlaps a send (so a send can read the live
buffer while receives land), and a ``RECV_COPY`` overlaps nothing. Several ``RECV_REDUCE`` may
target the same range (the naive root gathering everyone's buffer); they are applied in the
order listed, which matters only for non-associative floating point, never for the crafted
inputs the checks use. :func:`validate` enforces all of this.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import Enum


class ScheduleError(ValueError):
    """Raised when a schedule breaks a rule; the message names the rank, step and op."""


class Kind(Enum):
    """What an :class:`Op` does with its element range."""

    SEND = "send"
    RECV_REDUCE = "recv_reduce"
    RECV_COPY = "recv_copy"


@dataclass(frozen=True, slots=True)
class Op:
    """One send or receive of the half-open element range ``[start, stop)``."""

    kind: Kind
    peer: int
    start: int
    stop: int
    lane: int = 0
    """Pipeline lane (segment id) of the op; 0 when the algorithm does not pipeline."""

    @property
    def length(self) -> int:
        return self.stop - self.start


Step = tuple[Op, ...]


@dataclass(frozen=True)
class Schedule:
    """An algorithm instance for *nranks* ranks and *count* elements."""

    name: str
    nranks: int
    count: int
    steps: tuple[tuple[Step, ...], ...]
    """``steps[rank][i]`` is the i-th step of ``rank``; every rank has ``nsteps`` of them."""

    @property
    def nsteps(self) -> int:
        return len(self.steps[0]) if self.steps else 0

    def ops(self, rank: int):
        """Yield ``(step_index, op)`` for every op of *rank*, in order."""
        for i, step in enumerate(self.steps[rank]):
            for op in step:
                yield i, op

    def message_count(self) -> int:
        """Number of point-to-point messages in the whole schedule."""
        return sum(op.kind is Kind.SEND for r in range(self.nranks) for _, op in self.ops(r))


def chunk_bounds(count: int, nparts: int) -> list[tuple[int, int]]:
    """Split ``[0, count)`` into *nparts* contiguous ranges, the first ``count % nparts``
    one element longer; ranges are empty when ``count < nparts``."""
    if nparts < 1:
        raise ScheduleError(f"cannot split into {nparts} parts")
    base, extra = divmod(count, nparts)
    bounds, start = [], 0
    for i in range(nparts):
        stop = start + base + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


class ScheduleBuilder:
    """Collects ops per rank and step; empty ranges are dropped, as the vocabulary asks."""

    def __init__(self, name: str, nranks: int, count: int) -> None:
        if nranks < 1:
            raise ScheduleError(f"{name}: nranks must be at least 1, got {nranks}")
        if count < 0:
            raise ScheduleError(f"{name}: count must be non-negative, got {count}")
        self.name, self.nranks, self.count = name, nranks, count
        self._ops: list[defaultdict[int, list[Op]]] = [defaultdict(list) for _ in range(nranks)]
        self.nsteps = 0

    def transfer(self, step: int, src: int, dst: int, start: int, stop: int,
                 reduce: bool, lane: int = 0) -> None:
        """Add a send of ``[start, stop)`` from *src* and its matching receive at *dst*."""
        self.nsteps = max(self.nsteps, step + 1)
        if stop <= start:
            return
        kind = Kind.RECV_REDUCE if reduce else Kind.RECV_COPY
        self._ops[src][step].append(Op(Kind.SEND, dst, start, stop, lane))
        self._ops[dst][step].append(Op(kind, src, start, stop, lane))

    def build(self) -> Schedule:
        steps = tuple(
            tuple(tuple(self._ops[r].get(i, ())) for i in range(self.nsteps))
            for r in range(self.nranks)
        )
        schedule = Schedule(self.name, self.nranks, self.count, steps)
        validate(schedule)
        return schedule


def _overlaps(a: Op, b: Op) -> bool:
    return a.start < b.stop and b.start < a.stop


def _check_step_ops(schedule: Schedule, rank: int, index: int, step: Step) -> None:
    nranks, count = schedule.nranks, schedule.count
    for op in step:
        if not 0 <= op.peer < nranks or op.peer == rank:
            raise ScheduleError(f"{schedule.name}: rank {rank}, step {index}: {op} has an invalid peer")
        if not 0 <= op.start < op.stop <= count:
            raise ScheduleError(f"{schedule.name}: rank {rank}, step {index}: {op} is empty or "
                                f"outside [0, {count})")
    if len(step) < 2:
        return
    where = f"{schedule.name}: rank {rank}, step {index}"
    recvs = [op for op in step if op.kind is not Kind.SEND]
    sends = [op for op in step if op.kind is Kind.SEND]
    for recv in recvs:
        for send in sends:
            if _overlaps(recv, send):
                raise ScheduleError(f"{where}: {recv} overlaps {send} in the same step")
        for other in recvs:
            if other is not recv and _overlaps(recv, other) and Kind.RECV_COPY in (
                    recv.kind, other.kind):
                raise ScheduleError(f"{where}: {recv} overlaps {other} in the same step")


def validate(schedule: Schedule) -> None:
    """Check the structural rules of the module docstring.

    Raises ScheduleError naming the rank, step and op if a send has no matching receive
    (or the lengths differ), if a range is empty or outside ``[0, count)``, or if ops of one
    step overlap in a way the executors cannot run concurrently.
    """
    if len(schedule.steps) != schedule.nranks:
        raise ScheduleError(f"{schedule.name}: {len(schedule.steps)} step lists "
                            f"for {schedule.nranks} ranks")
    if len({len(s) for s in schedule.steps}) > 1:
        raise ScheduleError(f"{schedule.name}: ranks have different numbers of steps")
    for rank in range(schedule.nranks):
        for index, step in enumerate(schedule.steps[rank]):
            _check_step_ops(schedule, rank, index, step)
    for index in range(schedule.nsteps):
        sent: defaultdict[tuple[int, int], list[Op]] = defaultdict(list)
        received: defaultdict[tuple[int, int], list[Op]] = defaultdict(list)
        for rank in range(schedule.nranks):
            for op in schedule.steps[rank][index]:
                if op.kind is Kind.SEND:
                    sent[(rank, op.peer)].append(op)
                else:
                    received[(op.peer, rank)].append(op)
        for pair in sent.keys() | received.keys():
            sends, recvs = sent.get(pair, []), received.get(pair, [])
            if [s.length for s in sends] != [r.length for r in recvs]:
                raise ScheduleError(
                    f"{schedule.name}: step {index}: rank {pair[0]} sends lengths "
                    f"{[s.length for s in sends]} to rank {pair[1]}, which receives "
                    f"{[r.length for r in recvs]}")
