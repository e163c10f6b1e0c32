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

The algorithms' schedules are built **per rank, on demand** (:class:`RankSteps`): a real job's
rank needs only its own steps, and the ring at P ranks has 2P(P-1) messages, four million at
P = 1024, which no rank should build or hold. ``steps[rank]`` builds one rank's steps and keeps
them; :meth:`Schedule.stream` yields them one step at a time and keeps nothing, and
:meth:`Schedule.stream_fields` does the same with plain tuples (the simulator).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, overload


class ScheduleError(ValueError):
    """Raised when a schedule breaks a rule; the message names the rank, step and op."""


class Kind(Enum):
    """What an :class:`Op` does with its element range."""

    SEND = "send"
    RECV_REDUCE = "recv_reduce"
    RECV_COPY = "recv_copy"


class Op(NamedTuple):
    """One send or receive of the half-open element range ``[start, stop)``.

    A named tuple, not a dataclass: a large ring has millions of ops, built on demand, and a
    named tuple is built in less than half the time of a frozen dataclass (0.9 against
    1.9 us on the project's VM); executors unpack it as ``kind, peer, start, stop, lane = op``.
    The pipeline *lane* (segment id) is 0 when the algorithm does not pipeline.
    """

    kind: Kind
    peer: int
    start: int
    stop: int
    lane: int = 0

    @property
    def length(self) -> int:
        return self.stop - self.start


Step = tuple[Op, ...]

OpFields = tuple[Kind, int, int, int, int]
"""An op as the plain tuple ``(kind, peer, start, stop, lane)``: what :class:`Op` names."""


class RankSteps(Sequence[tuple[Step, ...]]):
    """The ``steps`` of a schedule built per rank: ``[rank]`` calls *generate(rank)* on first
    use and keeps the result; :meth:`stream` yields a rank's steps without keeping them.

    *generate(rank)* yields exactly *nsteps* steps (empty ones included), which ``[rank]``
    checks. Its ops may be :class:`Op` or plain :data:`OpFields` tuples, which ``[rank]`` and
    :meth:`stream` turn into :class:`Op`; :meth:`stream_fields` passes them through as they
    come, for an executor that only unpacks them. A generator of millions of ops yields plain
    tuples: CPython builds them several times faster than named tuples and unpacks them three
    times faster (only exact tuples take its fast path); measured in the simulator, 1.3 us of
    about 6 per ring step at P = 256. Building every rank through ``[rank]``
    keeps them all (the numpy oracle does, at small P); code that visits ranks once should
    use :meth:`stream`.
    """

    __slots__ = ("nranks", "nsteps", "_generate", "_built")

    def __init__(self, nranks: int, nsteps: int,
                 generate: Callable[[int], Iterable[tuple[Op | OpFields, ...]]]) -> None:
        self.nranks = nranks
        self.nsteps = nsteps
        self._generate = generate
        self._built: dict[int, tuple[Step, ...]] = {}

    def __len__(self) -> int:
        return self.nranks

    @overload
    def __getitem__(self, rank: int) -> tuple[Step, ...]: ...

    @overload
    def __getitem__(self, rank: slice) -> tuple[tuple[Step, ...], ...]: ...

    def __getitem__(self, rank):
        if isinstance(rank, slice):
            return tuple(self[r] for r in range(*rank.indices(self.nranks)))
        if rank < 0:
            rank += self.nranks
        if not 0 <= rank < self.nranks:
            raise IndexError(f"rank {rank} out of range for {self.nranks} ranks")
        steps = self._built.get(rank)
        if steps is None:
            steps = tuple(self.stream(rank))
            if len(steps) != self.nsteps:
                raise ScheduleError(f"rank {rank} has {len(steps)} steps, expected {self.nsteps}")
            self._built[rank] = steps
        return steps

    def stream(self, rank: int) -> Iterator[Step]:
        """The steps of *rank*, built as they are consumed and not kept."""
        make = Op._make
        for step in self._generate(rank):
            yield tuple(map(make, step))

    def stream_fields(self, rank: int) -> Iterator[tuple[Op | OpFields, ...]]:
        """As :meth:`stream`, each op as the generator made it: an :class:`Op` or its plain
        :data:`OpFields` tuple."""
        return iter(self._generate(rank))


@dataclass(frozen=True)
class Schedule:
    """An algorithm instance for *nranks* ranks and *count* elements."""

    name: str
    nranks: int
    count: int
    steps: Sequence[Sequence[Step]]
    """``steps[rank][i]`` is the i-th step of ``rank``; every rank has ``nsteps`` of them.
    A :class:`RankSteps` (built per rank on demand) for the algorithms; any sequence of
    sequences for a schedule written out by hand."""

    @property
    def nsteps(self) -> int:
        if isinstance(self.steps, RankSteps):
            return self.steps.nsteps
        return len(self.steps[0]) if self.steps else 0

    def stream(self, rank: int) -> Iterator[Step]:
        """The steps of *rank* one at a time; a lazily built schedule builds them as they
        are consumed and keeps none, so a pass over all ranks holds one rank's step at once."""
        if isinstance(self.steps, RankSteps):
            return self.steps.stream(rank)
        return iter(self.steps[rank])

    def stream_fields(self, rank: int) -> Iterator[tuple[Op | OpFields, ...]]:
        """As :meth:`stream`, each op an :class:`Op` or a plain :data:`OpFields` tuple with
        the same fields (cheaper, from a large generator): for executors that only unpack
        ``kind, peer, start, stop, lane = op``. The simulator reads the steps this way."""
        if isinstance(self.steps, RankSteps):
            return self.steps.stream_fields(rank)
        return iter(self.steps[rank])

    def ops(self, rank: int) -> Iterator[tuple[int, Op]]:
        """Yield ``(step_index, op)`` for every op of *rank*, in order."""
        for i, step in enumerate(self.stream(rank)):
            for op in step:
                yield i, op

    def message_count(self) -> int:
        """Number of point-to-point messages in the whole schedule (builds every rank's
        steps once, keeping none)."""
        send = Kind.SEND
        return sum(op[0] is send for r in range(self.nranks) for step in self.stream_fields(r) for op in step)


def check_size(name: str, nranks: int, count: int) -> None:
    """Raise ScheduleError unless *nranks* >= 1 and *count* >= 0 (every generator's inputs)."""
    if nranks < 1:
        raise ScheduleError(f"{name}: nranks must be at least 1, got {nranks}")
    if count < 0:
        raise ScheduleError(f"{name}: count must be non-negative, got {count}")


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


def chunk_start(count: int, nparts: int, index: int) -> int:
    """Where chunk *index* of :func:`chunk_bounds` starts (``index == nparts``: *count*), in
    O(1), for generators that must not build a list of all P chunks for each rank."""
    base, extra = divmod(count, nparts)
    return index * base + min(index, extra)


class ScheduleBuilder:
    """Collects ops per rank and step for a schedule written out whole (small hand-made
    schedules, in tests and benchmarks); empty ranges are dropped, as the vocabulary asks.
    :meth:`build` validates it."""

    def __init__(self, name: str, nranks: int, count: int) -> None:
        check_size(name, nranks, count)
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
            if other is not recv and Kind.RECV_COPY in (recv.kind, other.kind) and _overlaps(
                    recv, other):
                raise ScheduleError(f"{where}: {recv} overlaps {other} in the same step")


def validate_rank(schedule: Schedule, rank: int) -> None:
    """Check the rules one rank can check alone: its number of steps, its peers and ranges,
    and the overlaps inside each of its steps. O(that rank's ops): what a real executor
    runs before using a schedule, instead of :func:`validate` over all P ranks.

    Raises ScheduleError naming the rank, step and op."""
    for _ in _checked_steps(schedule, rank):
        pass


def _checked_steps(schedule: Schedule, rank: int) -> Iterator[tuple[int, Step]]:
    """Yield ``(index, step)`` of *rank*, each checked by the rules one rank can check alone;
    raise ScheduleError at the end if the rank's number of steps is not the schedule's."""
    nsteps = 0
    for index, step in enumerate(schedule.stream(rank)):
        _check_step_ops(schedule, rank, index, step)
        yield index, step
        nsteps += 1
    if nsteps != schedule.nsteps:
        raise ScheduleError(f"{schedule.name}: ranks have different numbers of steps "
                            f"(rank {rank}: {nsteps}, rank 0: {schedule.nsteps})")


def validate(schedule: Schedule) -> None:
    """Check the structural rules of the module docstring for every rank, and that every
    send has its receive.

    Raises ScheduleError naming the rank, step and op if a send has no matching receive
    (or the lengths differ), if a range is empty or outside ``[0, count)``, or if ops of one
    step overlap in a way the executors cannot run concurrently.

    Time and memory are O(messages), which is P times what one rank needs: the numpy oracle
    runs it on every schedule it executes (so the property tests check every algorithm this
    way, for P up to 64), and :class:`~collbench.algorithms.schedule.ScheduleBuilder` on what it
    builds. At run time a real rank checks only its own steps (:func:`validate_rank`), and
    the simulator reports a message whose partner never comes as it runs.
    """
    if len(schedule.steps) != schedule.nranks:
        raise ScheduleError(f"{schedule.name}: {len(schedule.steps)} step lists "
                            f"for {schedule.nranks} ranks")
    send = Kind.SEND
    sent: defaultdict[tuple[int, int, int], list[int]] = defaultdict(list)
    received: defaultdict[tuple[int, int, int], list[int]] = defaultdict(list)
    for rank in range(schedule.nranks):
        for index, step in _checked_steps(schedule, rank):
            for op in step:
                if op.kind is send:
                    sent[(index, rank, op.peer)].append(op.stop - op.start)
                else:
                    received[(index, op.peer, rank)].append(op.stop - op.start)
    for index, src, dst in sorted(sent.keys() | received.keys()):
        sends, recvs = sent.get((index, src, dst), []), received.get((index, src, dst), [])
        if sends != recvs:
            raise ScheduleError(
                f"{schedule.name}: step {index}: rank {src} sends lengths {sends} to rank "
                f"{dst}, which receives {recvs}")
