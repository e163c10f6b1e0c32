"""When a rank running a schedule as a dataflow posts and applies each op: one policy, shared
by the real executor (:mod:`collbench.dataflow`) and the simulator (:mod:`collbench.sim.dataflow`),
so that a prediction is of the code that runs.

The waits are :func:`~collbench.algorithms.dependencies.dependencies`. On top of them:

- **Receives** are posted in schedule order, the q-th only once the (q - window)-th is
  complete (applied). A copying receive also waits for its waits, since it lands in place;
  a reducing one is posted at once into scratch, and *applied* (reduced into place) once
  it has landed and its waits are done.
- **Sends** are posted as soon as their waits are done, lowest op first, while fewer than
  *window* are outstanding; the lowest send not yet posted is posted when ready whatever
  the window (so a segment that is ready never waits behind one that is not, and a send
  needed by the lowest step always goes).
- Windows are raised to the most ops of their kind in one step.

This cannot deadlock: take the unfinished op of the lowest step on any rank. Its waits are in
earlier steps, so done. If it is a send, every send before it is ready too (same or earlier
steps), so they are posted in turn as the lowest, and it is posted. If it is a receive, the
receive *window* places before it is of an earlier step, hence complete, so it is posted.
Its partner likewise, so the message completes. (:func:`collbench.algorithms.reference.execute_policy`
runs this policy under drawn completion orders; the property tests find neither a deadlock
nor a wrong result.)

A receive's scratch slot (reducing receives) is its position among receives modulo the
window: receive q is posted only after receive q - window was applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heappop, heappush

from collbench.algorithms.dependencies import dependencies, flat_ops, successors
from collbench.algorithms.schedule import Kind, Step

SEND, RECV, REDUCE = 0, 1, 2
"""Op kinds as executors test them (small ints: the hot loops compare them)."""

WINDOW = 64
"""Default window of receives and of sends (raised to a step's ops of the kind)."""


class DataflowPlan:
    """A rank's ops, numbered as by :func:`~collbench.algorithms.dependencies.flat_ops`, with
    their kinds, waits and the posting windows; made once per schedule and rank."""

    def __init__(self, steps: Sequence[Step], window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError(f"the dataflow window must be at least 1, got {window}")
        ops = flat_ops(steps)
        self.steps = [index for index, _ in ops]
        self.ops = [op for _, op in ops]
        self.kinds = [SEND if o.kind is Kind.SEND else REDUCE if o.kind is Kind.RECV_REDUCE else RECV
                      for o in self.ops]
        waits = dependencies(steps)
        self.nwaits = [len(w) for w in waits]
        self.after = successors(waits)
        self.send_order = [i for i, k in enumerate(self.kinds) if k == SEND]
        self.recv_order = [i for i, k in enumerate(self.kinds) if k != SEND]
        self.initial_sends = [i for i in self.send_order if not self.nwaits[i]]
        """The sends that wait for nothing, in order (a valid heap)."""
        self.falses = [False] * len(self.ops)
        most = [0, 0]
        for step in steps:
            sends = sum(o.kind is Kind.SEND for o in step)
            most = [max(most[0], sends), max(most[1], len(step) - sends)]
        self.send_window, self.recv_window = max(window, most[0]), max(window, most[1])

    def scratch_slots(self) -> tuple[dict[int, int], int]:
        """Where each reducing receive lands in a scratch area, and the area's length in
        elements: slot (position among receives mod window) of the longest one, or its own
        place when all of them together take less."""
        lengths = [self.ops[i].length if self.kinds[i] == REDUCE else 0 for i in self.recv_order]
        own, slot = sum(lengths), max(lengths, default=0)
        at, offset = {}, 0
        for q, (i, n) in enumerate(zip(self.recv_order, lengths)):
            if not n:
                continue
            if own <= slot * self.recv_window:
                at[i], offset = offset, offset + n
            else:
                at[i] = (q % self.recv_window) * slot
        return at, min(own, slot * self.recv_window)


class DataflowState:
    """One run of a :class:`DataflowPlan`: what is posted, landed and complete.

    The executor calls :meth:`to_post` for the ops to post now, :meth:`landed` when a
    reducing receive's message is in (True: apply it now), and :meth:`complete` when an op
    is done (a send done, a copy landed, a reduction applied); :meth:`complete` returns the
    landed reducing receives it frees to apply."""

    __slots__ = ("plan", "left", "arrived", "finished", "posted", "next_recv", "sends_ready", "first_send",
                 "sends_out", "done")

    def __init__(self, plan: DataflowPlan) -> None:
        self.plan = plan
        n = len(plan.ops)
        self.left = list(plan.nwaits)
        self.arrived = [False] * n
        self.finished = [False] * n
        self.posted = [False] * n
        """Sends posted (receives are posted in order: those before :attr:`next_recv`)."""
        self.sends_ready: list[int] = []
        """Sends whose waits are done, not posted yet: a heap of op numbers."""
        self.reset()

    def reset(self) -> None:
        """Start a new run, reusing the lists (a real executor's timed loop allocates none)."""
        plan = self.plan
        self.left[:] = plan.nwaits
        falses = plan.falses
        self.arrived[:] = falses
        self.finished[:] = falses
        self.posted[:] = falses
        self.sends_ready[:] = plan.initial_sends
        self.next_recv = 0
        self.first_send = 0
        """Position in the plan's send order of the lowest send not posted yet."""
        self.sends_out = 0
        self.done = 0

    @property
    def complete_all(self) -> bool:
        return self.done == len(self.plan.ops)

    def to_post(self) -> list[int]:
        """The ops to post now, receives first, and mark them posted."""
        plan, left, finished = self.plan, self.left, self.finished
        out = []
        order, kinds, window = plan.recv_order, plan.kinds, plan.recv_window
        q = self.next_recv
        while q < len(order):
            i = order[q]
            if (kinds[i] == RECV and left[i]) or (q >= window and not finished[order[q - window]]):
                break
            out.append(i)
            q += 1
        self.next_recv = q
        ready, order = self.sends_ready, plan.send_order
        while ready:
            i = ready[0]
            lowest = order[self.first_send] == i
            if self.sends_out >= plan.send_window and not lowest:
                break
            heappop(ready)
            self.posted[i] = True
            out.append(i)
            self.sends_out += 1
            if lowest:
                self.first_send += 1
                while self.first_send < len(order) and self.posted[order[self.first_send]]:
                    self.first_send += 1
        return out

    def landed(self, i: int) -> bool:
        """Reducing receive *i* has landed; True if it may be applied now."""
        self.arrived[i] = True
        return not self.left[i]

    def complete(self, i: int) -> list[int]:
        """Op *i* is done; return the landed reducing receives this frees to apply."""
        plan, left, arrived = self.plan, self.left, self.arrived
        self.done += 1
        self.finished[i] = True
        if plan.kinds[i] == SEND:
            self.sends_out -= 1
        freed = []
        for j in plan.after[i]:
            left[j] -= 1
            if not left[j]:
                kind = plan.kinds[j]
                if kind == SEND:
                    heappush(self.sends_ready, j)
                elif kind == REDUCE and arrived[j]:
                    freed.append(j)
        return freed
