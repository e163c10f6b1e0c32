"""Run one rank's part of a schedule as a dataflow: each op starts as soon as what it waits for
is done, a received segment is reduced the moment it lands and may be applied, and the send
that needs it is posted at once (NCCL's recvReduceSend).

When each op is posted and applied is :mod:`collbench.algorithms.dataflow`'s policy (the waits
of :mod:`collbench.algorithms.dependencies`, windows of outstanding ops), which the simulator
runs too. This module adds the transport: persistent requests started one op at a time,
completions taken as they come (the transport's Testsome/Waitsome), and reductions in
pieces of :data:`PIECE_BYTES` with a test for completions between them, so that rendezvous
transfers keep moving while the core reduces; a completion's freed sends are posted before
the next piece.

Nothing is allocated per call but small Python bookkeeping: views, persistent requests,
scratch and the reduction pieces are made when a buffer is first bound.
"""

from __future__ import annotations

from collections import deque

from collbench.algorithms.dataflow import REDUCE, SEND, WINDOW, DataflowPlan, DataflowState
from collbench.algorithms.ops import ReduceOp, numpy_dtype
from collbench.algorithms.schedule import Kind, Schedule, validate_rank
from collbench.errors import CollbenchError
from collbench.executor import TAGS_PER_STEP
from collbench.transports.base import Progress, Transport

PIECE_BYTES = 256 << 10
"""A reduction runs in pieces of this many bytes, testing for completions in between."""


def op_tags(steps) -> list[int]:
    """The tag of every op of a rank, numbered as by
    :func:`~collbench.algorithms.dependencies.flat_ops`: ``step*TAGS_PER_STEP + k`` for the
    k-th op with a peer in a step (the schedule's matching rule, as the step executor)."""
    tags = []
    for index, step in enumerate(steps):
        seen: dict[tuple[bool, int], int] = {}
        for op in step:
            key = (op.kind is Kind.SEND, op.peer)
            k = seen.get(key, 0)
            seen[key] = k + 1
            tags.append(index * TAGS_PER_STEP + k)
    return tags


class DataflowExecutor:
    """Runs *schedule* for ``transport.rank`` as a dataflow; the contract of
    :class:`~collbench.executor.Executor` (``run(recvbuf, sendbuf=None)``).

    Raises CollbenchError if the transport cannot run a dataflow, ScheduleError if this
    rank's steps break a rule."""

    def __init__(self, schedule: Schedule, transport: Transport, dtype, op: ReduceOp,
                 progress: Progress | None = None, window: int = WINDOW, trace=None) -> None:
        if schedule.nranks != transport.size:
            raise ValueError(f"{schedule.name} was built for {schedule.nranks} ranks, "
                             f"the transport has {transport.size}")
        if not transport.dataflow:
            raise CollbenchError(f"the {transport.name} transport runs schedules step by step only; "
                                 "use --execution step")
        if window < 1:
            raise CollbenchError(f"the dataflow window must be at least 1, got {window}")
        validate_rank(schedule, transport.rank)
        dtype = numpy_dtype(dtype) if isinstance(dtype, str) else dtype
        self.schedule, self.transport, self.op = schedule, transport, op
        self.progress = progress or Progress()
        self.trace = trace
        """A :class:`~collbench.trace.Trace` that records this rank's op events, or None."""
        self.xp = transport.xp
        self._reduce = transport.reducer(op.ufunc, dtype)
        self._itemsize = dtype.itemsize
        steps = schedule.steps[transport.rank]
        self.plan = DataflowPlan(steps, window)
        self.tags = op_tags(steps)
        self.scratch_at, length = self.plan.scratch_slots()
        self._scratch = self.xp.empty(length, dtype=dtype)
        self._bound: tuple | None = None

    def _bind(self, recvbuf) -> tuple:
        """Messages, reduction pieces and the run state for *recvbuf*, made once per buffer."""
        if self._bound is None or self._bound[0] is not recvbuf:
            message = self.transport.message
            piece = max(1, PIECE_BYTES // self._itemsize)
            messages, pieces = [], []
            kinds = self.plan.kinds
            for i, o in enumerate(self.plan.ops):
                if kinds[i] == REDUCE:
                    at = self.scratch_at[i]
                    area = self._scratch[at:at + o.length]
                    cuts = [(a, min(a + piece, o.stop)) for a in range(o.start, o.stop, piece)]
                    pieces.append([(recvbuf[a:b], area[a - o.start:b - o.start]) for a, b in cuts])
                else:
                    area = recvbuf[o.start:o.stop]
                    pieces.append(None)
                messages.append(message(area, o.peer, self.tags[i], send=kinds[i] == SEND))
            self._bound = (recvbuf, messages, pieces, _Run(self, messages, pieces))
        return self._bound

    def run(self, recvbuf, sendbuf=None) -> None:
        """All-reduce in place on *recvbuf*, or out of place from *sendbuf* into *recvbuf*
        (AVG's division by P included)."""
        if sendbuf is not None:
            recvbuf[...] = sendbuf
        run = self._bind(recvbuf)[3]
        run.state.reset()
        run.trace = self.trace
        run.run()
        self.op.finish(recvbuf, self.transport.size, self.xp)


class _Run:
    """The calls of :meth:`DataflowExecutor.run` on one buffer: the policy's state (reset per
    call) and the ops in flight."""

    def __init__(self, ex: DataflowExecutor, messages: list, pieces: list) -> None:
        self.ex, self.messages, self.pieces = ex, messages, pieces
        self.state = DataflowState(ex.plan)
        self.ready: deque[int] = deque()  # landed reducing receives free to apply
        self.inflight: list = []  # transport handles of posted ops, and their op numbers
        self.inflight_ops: list[int] = []
        self.trace = ex.trace

    def run(self) -> None:
        ex, state = self.ex, self.state
        transport, progress = ex.transport, ex.progress
        progress.waiting(ex.schedule.name)
        progress.source = self.where
        self.post()
        total = len(ex.plan.ops)
        while state.done < total:
            if self.ready:
                self.apply(self.ready.popleft())
                self.post()
                continue
            self.completed(transport.completed(self.inflight, True))
            self.post()

    def where(self) -> tuple[int | None, tuple[int, ...], tuple[int, ...]]:
        """The step of the oldest op in flight and the peers of all of them (receiving from,
        sending to): what the watchdog names when this rank is stuck."""
        ops, kinds, steps = self.ex.plan.ops, self.ex.plan.kinds, self.ex.plan.steps
        inflight = list(self.inflight_ops)
        return (min((steps[i] for i in inflight), default=None),
                tuple(ops[i].peer for i in inflight if kinds[i] != SEND),
                tuple(ops[i].peer for i in inflight if kinds[i] == SEND))

    def post(self) -> None:
        """Post what the policy allows now."""
        start, messages, trace = self.ex.transport.start, self.messages, self.trace
        for i in self.state.to_post():
            self.inflight.append(start(messages[i]))
            self.inflight_ops.append(i)
            if trace is not None:
                trace.event("post", i)

    def completed(self, indices) -> None:
        """Handle the in-flight ops at *indices* (of :attr:`inflight`) that completed."""
        if not indices:
            return
        kinds, state, trace = self.ex.plan.kinds, self.state, self.trace
        for k in sorted(indices, reverse=True):
            i = self.inflight_ops[k]
            del self.inflight[k], self.inflight_ops[k]
            kind = kinds[i]
            if trace is not None:
                trace.event("send done" if kind == SEND else "land", i)
            if kind != REDUCE:
                self.ready.extend(state.complete(i))
            elif state.landed(i):
                self.ready.append(i)
        self.ex.progress.ticks += 1

    def apply(self, i: int) -> None:
        """Reduce the landed receive *i* into place, piece by piece, taking completions and
        posting what they free between pieces."""
        reduce, test = self.ex._reduce, self.ex.transport.completed
        trace = self.trace
        if trace is not None:
            trace.event("reduce start", i)
        pieces = self.pieces[i]
        last = len(pieces) - 1
        for k, (target, data) in enumerate(pieces):
            reduce(target, data, out=target)
            if k < last and self.inflight:
                self.completed(test(self.inflight, False))
                self.post()
        if trace is not None:
            trace.event("reduce end", i)
        self.ready.extend(self.state.complete(i))
