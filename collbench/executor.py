"""Run one rank's part of a schedule on a real transport.

Planning is kept apart from running (Gloo's constructor/``run()`` split, made explicit): the
:class:`Executor` turns the rank's steps into buffer views, tags and a scratch area once, so
:meth:`Executor.run` allocates nothing and only posts, waits and reduces. The same code runs
on numpy and CuPy buffers: reductions are ``xp.<ufunc>(a, b, out=a)``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from collbench.algorithms.ops import ReduceOp, numpy_dtype
from collbench.algorithms.schedule import Kind, Op, Schedule, validate_rank
from collbench.transports.base import Progress, Transfer, Transport

TAGS_PER_STEP = 1024
"""Messages between one pair of ranks in one step must stay below this (tag arithmetic)."""


@dataclass
class _PlannedRecv:
    start: int
    stop: int
    scratch: tuple[int, int] | None
    """Where in the scratch area a reducing receive lands; None for a copy straight into place."""


@dataclass
class _PlannedStep:
    index: int
    sends: list[tuple[int, int, int, int]]  # (start, stop, peer, tag)
    recvs: list[tuple[_PlannedRecv, int, int]]  # (plan, peer, tag)
    send_ops: list[int] = field(default_factory=list)  # op numbers (flat_ops), for traces
    recv_ops: list[int] = field(default_factory=list)


def _tags(step_index: int, ops) -> list[int]:
    """Tag of each op: the k-th op with a given peer in step s gets ``s*TAGS_PER_STEP + k``,
    which is exactly the schedule's matching rule (k-th send a->b matches k-th recv at b)."""
    seen: defaultdict[tuple[bool, int], int] = defaultdict(int)
    tags = []
    for op in ops:
        key = (op.kind is Kind.SEND, op.peer)
        tags.append(step_index * TAGS_PER_STEP + seen[key])
        seen[key] += 1
    return tags


class Executor:
    """Runs *schedule* for ``transport.rank`` with reduction *op* on buffers of *dtype*.

    Only this rank's steps are built and checked (:func:`~collbench.algorithms.schedule.validate_rank`):
    checking all P ranks' matching here would cost every rank O(P) times its own work; the
    algorithms' matching is checked by the property tests, which validate every schedule the
    numpy oracle runs. Raises ScheduleError if this rank's steps break a rule."""

    def __init__(self, schedule: Schedule, transport: Transport, dtype, op: ReduceOp,
                 progress: Progress | None = None) -> None:
        if schedule.nranks != transport.size:
            raise ValueError(f"{schedule.name} was built for {schedule.nranks} ranks, "
                             f"the transport has {transport.size}")
        validate_rank(schedule, transport.rank)
        dtype = numpy_dtype(dtype) if isinstance(dtype, str) else dtype
        self.schedule, self.transport, self.op = schedule, transport, op
        self.progress = progress or Progress()
        self.xp = transport.xp
        self._reduce = transport.reducer(op.ufunc, dtype)
        self._finish = op is ReduceOp.AVG  # divide the sum by P once the schedule is done
        self._steps: list[_PlannedStep] = []
        self.trace = None
        """A :class:`~collbench.trace.Trace` that records this rank's op events, or None. A
        step's sends are stamped done when the step ends (MPI reports them with the step)."""
        self.ops: list[Op] = []
        """This rank's ops as :func:`~collbench.algorithms.dependencies.flat_ops` numbers them."""
        self.op_steps: list[int] = []
        scratch_len = 0
        for index, step in enumerate(schedule.steps[transport.rank]):
            if not step:
                continue
            planned, offset = _PlannedStep(index, [], []), 0
            for op_, tag in zip(step, _tags(index, step)):
                (planned.send_ops if op_.kind is Kind.SEND else planned.recv_ops).append(len(self.ops))
                self.ops.append(op_)
                self.op_steps.append(index)
                if op_.kind is Kind.SEND:
                    planned.sends.append((op_.start, op_.stop, op_.peer, tag))
                    continue
                scratch = None
                if op_.kind is Kind.RECV_REDUCE:
                    scratch, offset = (offset, offset + op_.length), offset + op_.length
                planned.recvs.append((_PlannedRecv(op_.start, op_.stop, scratch), op_.peer, tag))
            scratch_len = max(scratch_len, offset)
            self._steps.append(planned)
        self._scratch = self.xp.empty(scratch_len, dtype=dtype)
        self._bound: tuple | None = None

    def _bind(self, recvbuf) -> list[tuple]:
        """Views of *recvbuf* and the scratch area for every step, made once per buffer."""
        if self._bound is None or self._bound[0] is not recvbuf:
            transfer = self._transfer
            steps = []
            for step in self._steps:
                sends = [transfer(recvbuf[a:b], peer, tag, True) for a, b, peer, tag in step.sends]
                recvs = [transfer(recvbuf[p.start:p.stop] if p.scratch is None
                                  else self._scratch[p.scratch[0]:p.scratch[1]], peer, tag, False)
                         for p, peer, tag in step.recvs]
                peers = (tuple(t.peer for t in recvs), tuple(t.peer for t in sends))
                targets = [None if p.scratch is None else recvbuf[p.start:p.stop]
                           for p, _, _ in step.recvs]
                pair = None
                if len(sends) <= 1 and len(recvs) <= 1:
                    pair = (sends[0] if sends else None, recvs[0] if recvs else None,
                            targets[0] if targets else None)
                steps.append((step.index, sends, recvs, peers, targets, pair))
            self._bound = (recvbuf, steps)
        return self._bound[1]

    def _transfer(self, buf, peer: int, tag: int, send: bool) -> Transfer:
        return Transfer(buf, peer, tag, self.transport.message(buf, peer, tag, send=send))

    def run(self, recvbuf, sendbuf=None) -> None:
        """All-reduce in place on *recvbuf*, or out of place from *sendbuf* into *recvbuf*
        (the copy is part of the operation, as in MPI libraries); AVG's division by P is
        part of it too."""
        if sendbuf is not None:
            recvbuf[...] = sendbuf
        if self.trace is not None:
            self._run_traced(recvbuf)
            self.op.finish(recvbuf, self.transport.size, self.xp)
            return
        progress, name, reduce = self.progress, self.schedule.name, self._reduce
        exchange, pair_exchange = self.transport.exchange, self.transport.pair
        for index, sends, recvs, peers, targets, pair in self._bind(recvbuf):
            progress.waiting(name, index, *peers)
            if pair is not None:  # the ring's and Rabenseifner's every step: no generator
                send, recv, target = pair
                pair_exchange(send, recv, progress)
                if target is not None:
                    reduce(target, recv.buf, out=target)
                continue
            for i in exchange(sends, recvs, progress):
                target = targets[i]
                if target is not None:
                    reduce(target, recvs[i].buf, out=target)
        if self._finish:
            self.op.finish(recvbuf, self.transport.size, self.xp)

    def _run_traced(self, recvbuf) -> None:
        """:meth:`run` recording every op's events in :attr:`trace` (no shortcut for pairs)."""
        progress, name, reduce, trace = self.progress, self.schedule.name, self._reduce, self.trace
        for planned, (index, sends, recvs, peers, targets, _) in zip(self._steps, self._bind(recvbuf)):
            progress.waiting(name, index, *peers)
            for i in planned.recv_ops + planned.send_ops:
                trace.event("post", i)
            for k in self.transport.exchange(sends, recvs, progress):
                trace.event("land", planned.recv_ops[k])
                target = targets[k]
                if target is not None:
                    trace.event("reduce start", planned.recv_ops[k])
                    reduce(target, recvs[k].buf, out=target)
                    trace.event("reduce end", planned.recv_ops[k])
            for i in planned.send_ops:
                trace.event("send done", i)
