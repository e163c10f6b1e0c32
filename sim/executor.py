"""The simulated executor: one SimPy process per rank runs an algorithm's schedule, the very
:class:`~algorithms.schedule.Schedule` object the real executor runs, over a
:class:`~sim.topology.Topology`.

What a rank does in a step, and what it costs:

- It posts all the step's ops at once. Its CPU spends the per-message *overhead* on each
  send in turn, so the i-th send of the step is ready ``i * overhead`` after the step began.
- A message moves when both its send is ready and its receive is posted (a rendezvous, as
  MPI does for large messages): it then drains through the links of its route, sharing them
  with other flows (:mod:`sim.fabric`), and arrives one route latency after its last byte
  left.
- A ``RECV_REDUCE`` then costs ``gamma`` per byte of the rank's CPU; reductions of one step
  run one at a time, in order of arrival, and not before the step's sends are issued. A
  ``RECV_COPY`` costs nothing more. A send is complete when its message has arrived.
- Overhead and reductions take :attr:`~sim.topology.Topology.cpu_slowdown` times longer on a
  node whose ranks outnumber its cores.
- The step ends when all its ops are complete; the rank then starts its next step at once.
  No rank waits for any other except through the messages it needs: there is no global
  synchronisation between steps.

Matching follows the schedule's rule: the k-th send from a to b in step s meets the k-th
receive at b from a in step s.

Cost: per rank and non-empty step, one wake-up event. A message whose links nothing else
can use while it is in flight (see :meth:`Simulation._start`) costs no event of its own;
any other costs one completion event in the fabric per change of its rate, plus one rate
recomputation shared by all flows starting or ending in the same instant. When the
per-message overhead is not zero, a message whose send is ready later than its receive
costs one more event, to start it, unless it can skip the sharing model.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import simpy
from simpy.events import NORMAL

from algorithms.schedule import Kind, Schedule
from sim.fabric import Fabric, Flow
from sim.network import NetworkSpec
from sim.topology import Topology


@dataclass(frozen=True)
class SimResult:
    """What one simulated all-reduce took."""

    time: float
    """Simulated seconds from the common start to the last rank's end."""
    rank_times: tuple[float, ...]
    """When each rank finished its last step."""
    messages: int
    events: int
    """SimPy events processed (flow completions, rate recomputations, flow starts, wake-ups)."""
    wall: float
    """Wall-clock seconds the simulation took."""


class _Rank:
    """Book-keeping of one rank's current step."""

    __slots__ = ("start", "pending", "end", "reduces", "nsends", "sends_left", "recvs_left", "wake",
                 "overhead", "gamma")

    def __init__(self, overhead: float = 0.0, gamma: float = 0.0) -> None:
        self.overhead = overhead
        """This rank's per-message overhead, stretched by its node's CPU sharing."""
        self.gamma = gamma
        """This rank's seconds per byte reduced, stretched likewise."""
        self.start = self.end = 0.0
        self.pending = self.nsends = self.sends_left = self.recvs_left = 0
        self.reduces: list[tuple[float, float]] = []
        self.wake: simpy.Event | None = None


class Simulation:
    """Run *schedule* with elements of *itemsize* bytes on *spec*."""

    def __init__(self, schedule: Schedule, spec: NetworkSpec, itemsize: int = 4) -> None:
        if itemsize < 1:
            raise ValueError(f"itemsize must be at least 1 byte, got {itemsize}")
        self.schedule = schedule
        self.spec = spec
        self.itemsize = itemsize
        self.topology = Topology(spec, schedule.nranks)
        self.env = simpy.Environment()
        self.fabric = Fabric(self.env)
        self.ranks = [_Rank(spec.overhead * slow, spec.gamma * slow) for slow in self.topology.cpu_slowdown]
        self.finished = [0.0] * schedule.nranks
        self.waiting: dict[tuple[int, int, int, int], tuple] = {}
        """Ops posted whose partner is not yet posted: key (src, dst, step, k)."""
        self.events = 0
        self.messages = 0

    def run(self) -> SimResult:
        """Simulate the whole all-reduce and return its :class:`SimResult`.

        Raises RuntimeError if some rank waits forever (a schedule whose sends and receives
        do not match; :func:`algorithms.schedule.validate` rejects those beforehand)."""
        began = time.perf_counter()
        for rank in range(self.schedule.nranks):
            self.env.process(self._rank(rank))
        # The run allocates millions of short-lived objects and frees them by reference
        # counting; the cyclic collector would only rescan the schedule's millions of Ops,
        # making a large run quadratic.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self.env.run()
        finally:
            if collecting:
                gc.enable()
        self.events += self.fabric.events + self.schedule.nranks
        stuck = [r for r, st in enumerate(self.ranks) if st.pending]
        if stuck:
            raise RuntimeError(f"simulation deadlocked: rank {stuck[0]} waits for a message never sent")
        return SimResult(max(self.finished, default=0.0), tuple(self.finished), self.messages,
                         self.events, time.perf_counter() - began)

    def _rank(self, rank: int):
        """The process of *rank*: post each step's ops, wait until they are complete."""
        env, st, itemsize = self.env, self.ranks[rank], self.itemsize
        overhead = st.overhead
        post, send, reduce = self._post, Kind.SEND, Kind.RECV_REDUCE
        for index, step in enumerate(self.schedule.steps[rank]):
            if not step:
                continue
            now = env.now
            if len(step) == 2 and step[0].kind is not step[1].kind:  # one send, one receive
                sends, ks = 1, (0, 0)
            else:
                sends, ks = _plan(step)
            st.start = st.end = now
            st.pending, st.nsends, st.sends_left, st.recvs_left = len(step), sends, sends, len(step) - sends
            st.reduces = []
            st.wake = env.event()
            issued = 0
            for op, k in zip(step, ks):
                if op.kind is send:
                    issued += 1
                    post(rank, op.peer, index, k, now + issued * overhead, None)
                else:
                    post(op.peer, rank, index, k, now, (op.kind is reduce, (op.stop - op.start) * itemsize))
            yield st.wake
        self.finished[rank] = env.now

    def _post(self, src: int, dst: int, step: int, k: int, ready: float, recv: tuple | None) -> None:
        """Post one side of a message; start it if the other side is already there."""
        key = (src, dst, step, k)
        other = self.waiting.pop(key, None)
        if other is None:
            self.waiting[key] = (ready, recv)
            return
        start = ready if ready > other[0] else other[0]
        reduce, size = recv or other[1]
        self.messages += 1
        self._start(src, dst, reduce, size, start)

    def _start(self, src: int, dst: int, reduce: bool, size: int, start: float) -> None:
        """Start a message at *start* (now or later). If every link of its route is free and
        private to its sender or its receiver, and that rank has no other message of this step
        still to start, nothing can join those links before it arrives, so its arrival is
        known at once and the sharing model is skipped: the common case, and the reason large
        runs are cheap. Otherwise it joins the :class:`~sim.fabric.Fabric` at *start*."""
        sender, receiver = self.ranks[src], self.ranks[dst]
        sender.sends_left -= 1
        receiver.recvs_left -= 1
        links, latency, bandwidth = self.topology.route(src, dst)
        for link in links:
            # Free, and no op still to start can use it: a sender's up link takes only its
            # sends, a receiver's down link only its receives, a half-duplex port both.
            if link.flows or not (
                    (link.sender == src and not sender.sends_left
                     and (link.receiver != src or not sender.recvs_left))
                    or (link.receiver == dst and not receiver.recvs_left
                        and (link.sender != dst or not receiver.sends_left))):
                break
        else:
            self._arrived(src, dst, reduce, size, start + size / bandwidth + latency)
            return
        now = self.env._now
        if start > now:  # not started yet after all: decide again when it does
            sender.sends_left += 1
            receiver.recvs_left += 1
            self.events += 1
            self.env.timeout(start - now).callbacks.append(
                lambda _e: self._start(src, dst, reduce, size, start))
            return
        self.fabric.start(Flow(links, latency, size,
                               lambda arrival: self._arrived(src, dst, reduce, size, arrival)))

    def _arrived(self, src: int, dst: int, reduce: bool, size: int, arrival: float) -> None:
        """The message src -> dst arrives at *arrival* (now or later): it completes the
        sender's op, and the receiver's once reduced."""
        sender, receiver = self.ranks[src], self.ranks[dst]
        if arrival > sender.end:
            sender.end = arrival
        sender.pending -= 1
        if not sender.pending:
            self._step_done(sender)
        if reduce:
            receiver.reduces.append((arrival, size))
        elif arrival > receiver.end:
            receiver.end = arrival
        receiver.pending -= 1
        if not receiver.pending:
            self._step_done(receiver)

    def _step_done(self, st: _Rank) -> None:
        """Every op of *st*'s step has a known completion: run its reductions one after
        another in order of arrival, and wake the rank when the last op is complete."""
        end = st.end
        if st.reduces:
            cpu, gamma = st.start + st.nsends * st.overhead, st.gamma
            for arrival, size in sorted(st.reduces) if len(st.reduces) > 1 else st.reduces:
                cpu = (cpu if cpu > arrival else arrival) + size * gamma
            if cpu > end:
                end = cpu
        wake = st.wake  # triggered for a later time, the way simpy.Timeout schedules itself
        wake._ok, wake._value = True, None
        self.env.schedule(wake, NORMAL, end - self.env._now)
        self.events += 1


def _plan(step) -> tuple[int, list[int]]:
    """The number of sends in *step*, and for each op its k: how many earlier ops of the
    step go the same way with the same peer (the matching rule's index)."""
    counts: dict[tuple[bool, int], int] = {}
    ks = []
    for op in step:
        key = (op.kind is Kind.SEND, op.peer)
        ks.append(counts.get(key, 0))
        counts[key] = ks[-1] + 1
    return sum(n for (is_send, _), n in counts.items() if is_send), ks


def simulate(schedule: Schedule, spec: NetworkSpec, itemsize: int = 4) -> SimResult:
    """Simulate *schedule* on network *spec*; see :class:`Simulation`."""
    return Simulation(schedule, spec, itemsize).run()
