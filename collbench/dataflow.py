"""Run one rank's part of a schedule as a dataflow: each op starts as soon as what it waits for
is done (:mod:`collbench.algorithms.dependencies`), a received segment is reduced the moment it
lands and may be applied, and the send that needs it is posted at once.

How a rank runs its ops (planned once, like :class:`~collbench.executor.Executor`):

- Sends and receives are each posted **in schedule order**, the q-th of a kind only once
  the (q - *window*)-th of that kind is complete (a receive once applied). A send is posted
  once its waits are done; a copying receive too, since it lands in place; a reducing
  receive at once, into scratch, and reduced once its message is in and its waits are done.
  This cannot deadlock when the window is at least a step's ops of a kind (it is raised to
  that): take the unfinished op of the lowest step on any rank; its waits are in earlier
  steps, so done, and so is the op *window* places before it; every op before it in its
  order is posted or done by then, so it is posted, and its partner likewise.
- Completions are taken as they come (the transport's Testsome/Waitsome). A reduction runs
  in pieces of :data:`PIECE_BYTES` with a test for completions between them, so that
  rendezvous transfers keep moving while the core reduces.
- Scratch: a reducing receive's slot is its position among receives modulo the window
  (free again by then: receive q is posted only after receive q - window was applied), or
  its own area when that is smaller in all.

Nothing is allocated per call but small Python bookkeeping: views, persistent requests and
the reduction pieces are made when a buffer is first bound.
"""

from __future__ import annotations

from collections import deque

from collbench.algorithms.dependencies import dependencies, flat_ops, successors
from collbench.algorithms.ops import ReduceOp, numpy_dtype
from collbench.algorithms.schedule import Kind, Schedule, validate_rank
from collbench.errors import CollbenchError
from collbench.executor import TAGS_PER_STEP
from collbench.transports.base import Progress, Transport

WINDOW = 16
"""Default bound on outstanding sends, and on outstanding receives (raised to a step's ops)."""

PIECE_BYTES = 256 << 10
"""A reduction runs in pieces of this many bytes, testing for completions in between."""

SEND, RECV, REDUCE = 0, 1, 2
"""Op kinds as the run loop tests them."""


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
        ops = flat_ops(steps)
        self.steps = [index for index, _ in ops]
        self.ops = [op_ for _, op_ in ops]
        self.kinds = [SEND if o.kind is Kind.SEND else REDUCE if o.kind is Kind.RECV_REDUCE else RECV
                      for o in self.ops]
        self.tags = op_tags(steps)
        self.nwaits = [len(w) for w in dependencies(steps)]
        self.after = successors(dependencies(steps))
        self.send_order = [i for i, k in enumerate(self.kinds) if k == SEND]
        self.recv_order = [i for i, k in enumerate(self.kinds) if k != SEND]
        most = [0, 0]
        for step in steps:
            sends = sum(o.kind is Kind.SEND for o in step)
            most = [max(most[0], sends), max(most[1], len(step) - sends)]
        self.send_window, self.recv_window = max(window, most[0]), max(window, most[1])
        self._plan_scratch(dtype)
        self._bound: tuple | None = None

    def _plan_scratch(self, dtype) -> None:
        """Where each reducing receive lands: slot q mod window of the longest one, or its own
        area when all of them together take less."""
        lengths = [self.ops[i].length if self.kinds[i] == REDUCE else 0 for i in self.recv_order]
        own, slot = sum(lengths), max(lengths, default=0)
        self.scratch_at: dict[int, int] = {}
        offset = 0
        for q, (i, n) in enumerate(zip(self.recv_order, lengths)):
            if not n:
                continue
            if own <= slot * self.recv_window:
                self.scratch_at[i], offset = offset, offset + n
            else:
                self.scratch_at[i] = (q % self.recv_window) * slot
        self._scratch = self.xp.empty(min(own, slot * self.recv_window), dtype=dtype)

    def _bind(self, recvbuf) -> tuple:
        """Messages, reduction pieces and targets for *recvbuf*, made once per buffer."""
        if self._bound is None or self._bound[0] is not recvbuf:
            message = self.transport.message
            piece = max(1, PIECE_BYTES // self._itemsize)
            messages, pieces = [], []
            for i, o in enumerate(self.ops):
                if self.kinds[i] == REDUCE:
                    at = self.scratch_at[i]
                    area = self._scratch[at:at + o.length]
                    cuts = [(a, min(a + piece, o.stop)) for a in range(o.start, o.stop, piece)]
                    pieces.append([(recvbuf[a:b], area[a - o.start:b - o.start]) for a, b in cuts])
                else:
                    area = recvbuf[o.start:o.stop]
                    pieces.append(None)
                messages.append(message(area, o.peer, self.tags[i], send=self.kinds[i] == SEND))
            self._bound = (recvbuf, messages, pieces)
        return self._bound

    def run(self, recvbuf, sendbuf=None) -> None:
        """All-reduce in place on *recvbuf*, or out of place from *sendbuf* into *recvbuf*
        (AVG's division by P included)."""
        if sendbuf is not None:
            recvbuf[...] = sendbuf
        _, messages, pieces = self._bind(recvbuf)
        _Run(self, messages, pieces).run()
        self.op.finish(recvbuf, self.transport.size, self.xp)


class _Run:
    """The state of one call of :meth:`DataflowExecutor.run`."""

    def __init__(self, ex: DataflowExecutor, messages: list, pieces: list) -> None:
        self.ex, self.messages, self.pieces = ex, messages, pieces
        self.left = list(ex.nwaits)
        self.arrived = [False] * len(ex.ops)
        self.ready: deque[int] = deque()  # reducing receives in and free to apply
        self.inflight: list = []  # transport handles of posted ops, and their op indices
        self.inflight_ops: list[int] = []
        self.next_send = self.next_recv = 0
        self.finished = [False] * len(ex.ops)
        self.done = 0
        self.trace = ex.trace

    def run(self) -> None:
        ex, total = self.ex, len(self.ex.ops)
        transport, progress = ex.transport, ex.progress
        self.post()
        while self.done < total:
            if self.ready:
                self.apply(self.ready.popleft())
                self.post()
                continue
            progress.waiting(ex.schedule.name, ex.steps[self.inflight_ops[0]] if self.inflight_ops else None,
                             *self.peers())
            self.completed(transport.completed(self.inflight, True))
            self.post()

    def peers(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        ops, kinds = self.ex.ops, self.ex.kinds
        return (tuple(ops[i].peer for i in self.inflight_ops if kinds[i] != SEND),
                tuple(ops[i].peer for i in self.inflight_ops if kinds[i] == SEND))

    def post(self) -> None:
        """Post the next receives and sends in schedule order while their windows allow (the
        op *window* places earlier of the kind is complete) and, for sends and copying
        receives, their waits are done."""
        ex, left, finished, trace = self.ex, self.left, self.finished, self.trace
        start = ex.transport.start
        order, kinds, window = ex.recv_order, ex.kinds, ex.recv_window
        while self.next_recv < len(order):
            q = self.next_recv
            i = order[q]
            if (kinds[i] == RECV and left[i]) or (q >= window and not finished[order[q - window]]):
                break
            self.inflight.append(start(self.messages[i]))
            self.inflight_ops.append(i)
            self.next_recv += 1
            if trace is not None:
                trace.event("post", i)
        order, window = ex.send_order, ex.send_window
        while self.next_send < len(order):
            q = self.next_send
            i = order[q]
            if left[i] or (q >= window and not finished[order[q - window]]):
                break
            self.inflight.append(start(self.messages[i]))
            self.inflight_ops.append(i)
            self.next_send += 1
            if trace is not None:
                trace.event("post", i)

    def completed(self, indices) -> None:
        """Handle the in-flight ops at *indices* (of :attr:`inflight`) that completed."""
        if not indices:
            return
        kinds, trace = self.ex.kinds, self.trace
        for k in sorted(indices, reverse=True):
            i = self.inflight_ops[k]
            del self.inflight[k], self.inflight_ops[k]
            kind = kinds[i]
            if kind == REDUCE:
                self.arrived[i] = True
                if trace is not None:
                    trace.event("land", i)
                if not self.left[i]:
                    self.ready.append(i)
            else:
                if trace is not None:
                    trace.event("send done" if kind == SEND else "land", i)
                self.finish(i)
        self.ex.progress.ticks += 1

    def finish(self, i: int) -> None:
        """Op *i* is complete: release what waits for it."""
        self.done += 1
        self.finished[i] = True
        left, arrived, ready = self.left, self.arrived, self.ready
        for j in self.ex.after[i]:
            left[j] -= 1
            if not left[j] and arrived[j]:
                ready.append(j)

    def apply(self, i: int) -> None:
        """Reduce the landed receive *i* into place, piece by piece, taking completions and
        posting what they free between pieces."""
        reduce, test = self.ex._reduce, self.ex.transport.completed
        trace = self.trace
        if trace is not None:
            trace.event("reduce start", i)
        for target, data in self.pieces[i]:
            reduce(target, data, out=target)
            if self.inflight:
                self.completed(test(self.inflight, False))
                self.post()
        if trace is not None:
            trace.event("reduce end", i)
        self.finish(i)

