"""The simulated executor: one SimPy process per rank runs an algorithm's schedule, the very
:class:`~collbench.algorithms.schedule.Schedule` object the real executor runs, over a
:class:`~collbench.sim.topology.Topology`.

What a rank does in a step, and what it costs:

- It posts all the step's ops at once. Its CPU spends the per-message *overhead* on each
  send in turn, so the i-th send of the step is ready ``i * overhead`` after the step began.
- A message moves when both its send is ready and its receive is posted (a rendezvous, as
  MPI does for large messages): it then drains through the links of its route, sharing them
  with other flows (:mod:`collbench.sim.fabric`), and arrives one route latency after its last byte
  left.
- A ``RECV_REDUCE`` then costs ``gamma`` per byte of the rank's CPU; reductions of one step
  run one at a time, in order of arrival, and not before the step's sends are issued. A
  ``RECV_COPY`` costs nothing more. A send is complete when its message has arrived.
- Overhead and reductions take :attr:`~collbench.sim.topology.Topology.cpu_slowdown` times longer on a
  node whose ranks outnumber its cores. With bound cores (``core_sharing = "bound"``) only
  the overhead is stretched so; a reduction is instead a flow on the rank's core link, which
  it shares with the copies and reductions running there at the time, and with the ranks
  bound there that wait (each takes ``waiting_share`` of a working rank's time).
- The step ends when all its ops are complete; the rank then starts its next step at once.
  No rank waits for any other except through the messages it needs: there is no global
  synchronisation between steps.

Matching follows the schedule's rule: the k-th send from a to b in step s meets the k-th
receive at b from a in step s. Both ranks post in order of (step, k), so this is first come,
first matched on each ordered pair of ranks (a :class:`_Channel`); each post carries its step,
and a send met by a receive of another step (a schedule breaking the rule) stops the run.

Each rank's steps are streamed from the schedule
(:meth:`~collbench.algorithms.schedule.Schedule.stream_fields`) inside its process and dropped once
posted, so the run holds, per rank, its state, one step and its channels: for the ring 22 MB
at P = 1024 where the schedule alone, built whole, took 1 GB (67 million ops at P = 4096).

Cost: one wake-up event per instant at which some steps end, shared by all the ranks
whose step ends then (each rank's process still resumes once per step; a process whose
step's end is unknown when it has posted the step waits on its rank's *parked* event, and
is moved to the instant's event once the end is known). A message whose links nothing else
can use while it is in flight (see :meth:`Simulation._start`) costs no event of its own;
any other costs an entry in the fabric's completion heap per change of its rate, and
shares with all flows starting or ending in the same instant one rate recomputation and one
completion timer. When the
per-message overhead is not zero, a message whose send is ready later than its receive
costs one more event, to start it, unless it can skip the sharing model.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from heapq import heappush
from typing import TYPE_CHECKING

import simpy
from collbench.algorithms.schedule import Kind, Schedule
from collbench.sim.fabric import Fabric, Flow, Link
from collbench.sim.network import NetworkSpec
from collbench.sim.topology import Route, Topology
from simpy.events import NORMAL

if TYPE_CHECKING:
    from collbench.sim.reuse import ReuseTracker


@dataclass(frozen=True)
class SimResult:
    """What one simulated all-reduce took."""

    time: float
    """Simulated seconds from the common start to the last rank's end."""
    rank_times: tuple[float, ...]
    """When each rank finished its last step."""
    messages: int
    events: int
    """SimPy events processed (flow completions, rate recomputations, flow starts, shared
    wake-ups, process starts)."""
    wall: float
    """Wall-clock seconds the simulation took."""


class _Rank:
    """Book-keeping of one rank's current step."""

    __slots__ = ("cpu", "pending", "end", "reduces", "sends_left", "recvs_left", "wake",
                 "parked", "overhead", "gamma", "gamma_miss", "core", "rank")

    def __init__(self, env: simpy.Environment, rank: int, overhead: float = 0.0, gamma: float = 0.0,
                 core: Link | None = None, gamma_miss: float = 0.0) -> None:
        self.rank = rank
        self.overhead = overhead
        """This rank's per-message overhead, stretched by its node's CPU sharing."""
        self.gamma = gamma
        """This rank's seconds per byte reduced, cache misses included; stretched likewise
        under static sharing, while bound cores share it dynamically instead."""
        self.gamma_miss = gamma_miss
        """With the reuse cache (else 0): seconds more per byte reduced that misses, stretched
        as :attr:`gamma` is (the node-wide knee has its misses in :attr:`gamma` already)."""
        self.core = core
        """The core link the rank is bound to (``core_sharing = "bound"``): its reductions
        are flows on it, sharing the core with what else runs there."""
        self.cpu = self.end = 0.0
        """When the CPU is free to reduce (the step's sends issued); when the ops so far end."""
        self.pending = self.sends_left = self.recvs_left = 0
        self.reduces: list[tuple[float, int, int, float]] = []
        """(arrival, bytes, first element, the node's count of bytes touched when the message
        was copied; see :mod:`collbench.sim.reuse`) of the step's reducing receives that have arrived."""
        self.parked = simpy.Event(env)
        """Never triggered: the rank's process waits on it while its step's end is unknown,
        and :meth:`Simulation._step_done` moves the waiting process to the step's instant."""
        self.wake: simpy.Event = self.parked
        """What the process waits on after posting a step: its instant if the step's end is
        already known, else :attr:`parked`."""


class _Channel:
    """The messages from rank *src* to rank *dst*: their route, and the posts of either side
    not yet matched, oldest first (at most one side has any)."""

    __slots__ = ("src", "dst", "sender", "receiver", "links", "latency", "bandwidth", "weights",
                 "private", "simple", "sends", "recvs", "workers")

    def __init__(self, src: int, dst: int, sender: _Rank, receiver: _Rank,
                 route: Route, workers: tuple[int, ...] = ()) -> None:
        self.src, self.dst, self.sender, self.receiver = src, dst, sender, receiver
        self.workers = workers
        """The ranks whose cores copy the messages (see :attr:`~collbench.sim.fabric.Flow.workers`)."""
        self.links, self.latency, self.bandwidth, self.weights = route
        self.private = _privacy(src, dst, self.links)
        """Which of the sender's or receiver's counts of ops still to start must be zero for
        a message to have its links to itself; None if some link is shared anyway."""
        self.simple = self.private == (True, False, True, False)
        """The sender's up link and the receiver's down link (a switch, one rank per node)."""
        self.sends: list[tuple[int, float, float]] = []
        """Sends posted and not matched: (step, ready, how many times a copy's bytes its
        misses make it cost)."""
        self.recvs: list[tuple[int, float, bool, int, int]] = []
        """Receives posted and not matched: (step, ready, reduce, bytes, first element)."""


def _privacy(src: int, dst: int, links: tuple[Link, ...]) -> tuple[bool, bool, bool, bool] | None:
    """The rule of :meth:`Simulation._start` for the route *links* from *src* to *dst*,
    worked out once: ``(sender's sends, sender's receives, receiver's receives, receiver's
    sends)``, each True if that count must be zero. A sender's up link takes only its sends,
    a receiver's down link only its receives, a half-duplex port both. None if some link is
    private to neither rank (then the message always joins the fabric); a link private to
    both, which no topology builds, is refused too."""
    needs = [False, False, False, False]
    for link in links:
        by_sender, by_receiver = link.sender == src, link.receiver == dst
        if by_sender == by_receiver:
            return None
        if by_sender:
            needs[0] = True
            needs[1] |= link.receiver == src
        else:
            needs[2] = True
            needs[3] |= link.sender == dst
    return needs[0], needs[1], needs[2], needs[3]


class Simulation:
    """Run *schedule* with elements of *itemsize* bytes on *spec*."""

    def __init__(self, schedule: Schedule, spec: NetworkSpec, itemsize: int = 4) -> None:
        if itemsize < 1:
            raise ValueError(f"itemsize must be at least 1 byte, got {itemsize}")
        self.schedule = schedule
        self.spec = spec
        self.itemsize = itemsize
        self.topology = Topology(spec, schedule.nranks, schedule.count * itemsize)
        self.env = simpy.Environment()
        self.fabric = Fabric(self.env)
        topology = self.topology
        cores = topology.core or [None] * schedule.nranks
        self.reuse: ReuseTracker | None = None
        """With ``cache_model = "reuse"``: what each rank touched when (:mod:`collbench.sim.reuse`)."""
        if spec.cache_size and spec.cache_model == "reuse":
            from collbench.sim.reuse import ReuseTracker  # numpy: imported only by runs that use it

            self.reuse = ReuseTracker(topology.node_of, schedule.count, itemsize, spec.cache_size)
        reuse_miss = spec.gamma_miss if self.reuse is not None else 0.0
        self.ranks = [_Rank(self.env, rank, spec.overhead * slow,
                            (spec.gamma + miss * spec.gamma_miss) * (1.0 if core else slow), core,
                            reuse_miss * (1.0 if core else slow))
                      for rank, (slow, core, miss)
                      in enumerate(zip(topology.cpu_slowdown, cores, topology.miss))]
        self.instants: dict[float, simpy.Event] = {}
        """The shared wake-up event of each future instant at which some step ends."""
        self.finished = [0.0] * schedule.nranks
        self.channels: dict[tuple[int, int], _Channel] = {}
        """The channels used so far, by (src, dst)."""
        self.events = 0
        self.messages = 0

    def run(self) -> SimResult:
        """Simulate the whole all-reduce and return its :class:`SimResult`.

        Raises RuntimeError if some rank waits forever, or if a send meets a receive of
        another step (a schedule whose sends and receives do not match;
        :func:`collbench.algorithms.schedule.validate` rejects those beforehand)."""
        began = time.perf_counter()
        for rank in range(self.schedule.nranks):
            self.env.process(self._rank(rank))
        # The run allocates millions of short-lived objects and frees them by reference
        # counting; the cyclic collector would only rescan the live objects again and again.
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

    def _channel(self, src: int, dst: int) -> _Channel:
        """The channel from *src* to *dst*, made on first use. Raises RuntimeError if the
        schedule names a rank that does not exist, or a rank as its own peer."""
        channel = self.channels.get((src, dst))
        if channel is None:
            if not (0 <= src < len(self.ranks) and 0 <= dst < len(self.ranks)) or src == dst:
                raise RuntimeError(f"{self.schedule.name}: a message from rank {src} to rank {dst}, "
                                   f"which is not a peer of {self.schedule.nranks} ranks")
            channel = self.channels[(src, dst)] = _Channel(
                src, dst, self.ranks[src], self.ranks[dst], self.topology.route(src, dst),
                self.topology.workers(src, dst))
        return channel

    def _rank(self, rank: int):
        """The process of *rank*: post each step's ops, wait until they are complete.

        This loop runs once per rank and step of the whole all-reduce, millions of times in a
        large run, so it does by hand what would read better as calls: a message is matched
        where its second side is posted, and a message alone on private links (the common
        case, see :meth:`_start`) gets its arrival at once."""
        env, st, itemsize, reuse = self.env, self.ranks[rank], self.itemsize, self.reuse
        overhead = st.overhead
        send, reduce = Kind.SEND, Kind.RECV_REDUCE
        fabric, step_done, start_message = self.fabric, self._step_done, self._start
        outgoing: dict[int, _Channel] = {}  # this rank's channels, by peer
        incoming: dict[int, _Channel] = {}
        out_peer = in_peer = -1
        out_channel = in_channel = None
        index, messages = -1, 0
        for step in self.schedule.stream_fields(rank):
            index += 1
            if not step:
                continue
            now = env._now
            n = len(step)
            if n == 2:
                sends = (step[0][0] is send) + (step[1][0] is send)
            else:
                sends = sum(op[0] is send for op in step)
            st.end = now
            st.cpu = now + sends * overhead
            st.pending, st.sends_left, st.recvs_left = n, sends, n - sends
            st.wake = st.parked
            issued = 0
            for kind, peer, first, stop, _lane in step:
                slow, written = 1.0, 0.0
                if reuse is not None and kind is not reduce:
                    slow = self._copy_touch(rank, peer, first, stop, kind is send)
                if kind is send:
                    if peer != out_peer:  # most algorithms send to the same peer step after step
                        out_peer = peer
                        out_channel = outgoing.get(peer) or outgoing.setdefault(
                            peer, self._channel(rank, peer))
                    channel = out_channel
                    issued += 1
                    ready = now + issued * overhead
                    if not channel.recvs:
                        channel.sends.append((index, ready, slow))
                        continue
                    other, posted, is_reduce, size, target = channel.recvs.pop(0)
                    if other != index:
                        self._mismatch(channel, index, other)
                    start = ready if ready > posted else posted
                else:
                    if peer != in_peer:
                        in_peer = peer
                        in_channel = incoming.get(peer) or incoming.setdefault(
                            peer, self._channel(peer, rank))
                    channel = in_channel
                    is_reduce, size, target = kind is reduce, (stop - first) * itemsize, first
                    if not channel.sends:
                        channel.recvs.append((index, now, is_reduce, size, target))
                        continue
                    other, ready, slow = channel.sends.pop(0)
                    if other != index:
                        self._mismatch(channel, other, index)
                    start = ready if ready > now else now
                messages += 1
                if reuse is not None and is_reduce:  # the scratch it lands in is written now
                    written = reuse.count[reuse.node_of[channel.dst]]
                sender, receiver = channel.sender, channel.receiver
                if not (channel.simple and sender.sends_left == 1 and receiver.recvs_left == 1
                        and not fabric.flows):
                    start_message(channel, is_reduce, size, start, target, written, slow)
                    continue
                # _start's shortcut for an up and a down link, then _arrived, written out.
                sender.sends_left = receiver.recvs_left = 0
                arrival = start + size * slow / channel.bandwidth + channel.latency
                if arrival > sender.end:
                    sender.end = arrival
                sender.pending -= 1
                if not sender.pending:
                    step_done(sender)
                if is_reduce:
                    receiver.reduces.append((arrival, size, target, written))
                elif arrival > receiver.end:
                    receiver.end = arrival
                receiver.pending -= 1
                if not receiver.pending:
                    step_done(receiver)
            yield st.wake
        self.finished[rank] = env._now
        self.messages += messages

    def _mismatch(self, channel: _Channel, sent: int, received: int) -> None:
        raise RuntimeError(f"{self.schedule.name}: rank {channel.src}'s send of step {sent} meets "
                           f"rank {channel.dst}'s receive of step {received}: the schedule's "
                           "sends and receives do not match")

    def _copy_touch(self, rank: int, peer: int, first: int, stop: int, sending: bool) -> float:
        """The reuse model's record of a copy between *rank* and *peer* of *rank*'s elements
        [first, stop): a send reads them (the copy's two sides touch twice its bytes), a
        receive writes them. For a send between ranks of one node, return how many times
        its bytes the copy costs, its misses included."""
        nbytes = 2 * (stop - first) * self.itemsize if sending else 0
        miss = self.reuse.touch(rank, first, stop, nbytes)
        node_of = self.topology.node_of
        if not sending or node_of[rank] != node_of[peer]:
            return 1.0
        return 1.0 + miss * self.spec.beta_miss * self.spec.intra_bandwidth

    def _start(self, channel: _Channel, reduce: bool, size: int, start: float, first: int = 0,
               written: float = 0.0, slow: float = 1.0) -> None:
        """Start a message at *start* (now or later). A copy slowed by misses (*slow* > 1)
        takes *slow* times its *size* of its links; *first* and *written* travel to its
        reduction (see :class:`_Rank`). If every link of its route is free and
        private to its sender or its receiver, and that rank has no other message of this step
        still to start, nothing can join those links before it arrives, so its arrival is
        known at once and the sharing model is skipped: the common case, and the reason large
        runs are cheap. Otherwise it joins the :class:`~collbench.sim.fabric.Fabric` at *start*."""
        sender, receiver = channel.sender, channel.receiver
        sender.sends_left -= 1
        receiver.recvs_left -= 1
        private = channel.private
        if private is not None and not (
                (private[0] and sender.sends_left) or (private[1] and sender.recvs_left)
                or (private[2] and receiver.recvs_left) or (private[3] and receiver.sends_left)):
            for link in channel.links:
                if link.flows:
                    break
            else:
                arrival = start + size * slow / channel.bandwidth + channel.latency
                self._arrived(sender, receiver, reduce, size, arrival, first, written)
                return
        now = self.env._now
        if start > now:  # not started yet after all: decide again when it does
            sender.sends_left += 1
            receiver.recvs_left += 1
            self.events += 1
            self.env.timeout(start - now).callbacks.append(
                lambda _e: self._start(channel, reduce, size, start, first, written, slow))
            return
        self.fabric.start(Flow(channel.links, channel.latency, size * slow,
                               lambda arrival: self._arrived(sender, receiver, reduce, size, arrival,
                                                             first, written),
                               channel.weights, channel.workers))

    def _arrived(self, sender: _Rank, receiver: _Rank, reduce: bool, size: int, arrival: float,
                 first: int = 0, written: float = 0.0) -> None:
        """The message from *sender* to *receiver* arrives at *arrival* (now or later): it
        completes the sender's op, and the receiver's once reduced."""
        if arrival > sender.end:
            sender.end = arrival
        sender.pending -= 1
        if not sender.pending:
            self._step_done(sender)
        if reduce:
            receiver.reduces.append((arrival, size, first, written))
        elif arrival > receiver.end:
            receiver.end = arrival
        receiver.pending -= 1
        if not receiver.pending:
            self._step_done(receiver)

    def _step_done(self, st: _Rank) -> None:
        """Every op of *st*'s step has a known completion: run its reductions one after
        another in order of arrival, and wake the rank when the last op is complete."""
        end = st.end
        reduces = st.reduces
        if reduces:
            if st.core is not None and (st.gamma > 0 or st.gamma_miss > 0):
                queue = sorted(reduces)
                reduces.clear()
                self._reduce_on_core(st, queue, st.cpu)
                return
            cpu = st.cpu
            for arrival, size, first, written in sorted(reduces) if len(reduces) > 1 else reduces:
                cpu = (cpu if cpu > arrival else arrival) + size * self._gamma(st, size, first, written)
            if cpu > end:
                end = cpu
            reduces.clear()
        self._wake_at(st, end)

    def _reduce_on_core(self, st: _Rank, queue: list[tuple[float, int, int, float]], cpu: float) -> None:
        """Run the first reduction of *queue* on *st*'s core once the core is free of the
        rank's earlier work (*cpu*) and its message has arrived, as a flow sharing the core
        with whatever else runs there; then the next, and at the last wake the rank."""
        arrival, size, first, written = queue.pop(0)
        start = cpu if cpu > arrival else arrival

        def done(finished: float) -> None:
            if queue:
                self._reduce_on_core(st, queue, finished)
            else:
                self._wake_at(st, finished if finished > st.end else st.end)

        def begin(_event: simpy.Event | None = None) -> None:
            # a byte reduced uses the core this much
            weight = self._gamma(st, size, first, written) * st.core.capacity
            if weight > 0:
                self.fabric.start(Flow((st.core,), 0.0, size, done, (weight,), (st.rank,)))
            else:  # free: γ = 0 and, with the reuse cache, every byte hit
                done(self.env._now)

        now = self.env._now
        if not size:
            done(start)
        elif start > now:
            self.events += 1
            self.env.timeout(start - now).callbacks.append(begin)
        else:
            begin()

    def _gamma(self, st: _Rank, size: int, first: int, written: float) -> float:
        """Seconds per byte of *st*'s reduction of *size* bytes into its elements from
        *first*, of a message copied when its node's count was *written*: its own γ, or
        with the reuse model, γ plus the misses of its operands as it starts."""
        if self.reuse is None:
            return st.gamma
        miss = self.reuse.reduce(st.rank, first, first + size // self.itemsize, written)
        return st.gamma + miss * st.gamma_miss

    def _wake_at(self, st: _Rank, end: float) -> None:
        """Wake *st*'s process at *end*, the instant its step is complete."""
        # The instant, with simpy.Timeout's now + delay rounding, so equal ends meet.
        env = self.env
        now = env._now
        at = now + (end - now)
        instant = self.instants.get(at)
        if instant is None:
            instant = self.instants[at] = simpy.Event(env)
            self.events += 1
            instant._ok, instant._value = True, None
            instant.callbacks.append(self._instant_begins)
            heappush(env._queue, (at, NORMAL, next(env._eid), instant))  # as Environment.schedule
        waiting = st.parked.callbacks
        if waiting:  # the process already waits: move it to the instant
            instant.callbacks.append(waiting.pop())
        else:  # the process is still posting this step: it will wait on the instant
            st.wake = instant

    def _instant_begins(self, instant: simpy.Event) -> None:
        """*instant* is being processed: later wake-ups for this time need an event of their own."""
        del self.instants[self.env._now]


def simulate(schedule: Schedule, spec: NetworkSpec, itemsize: int = 4) -> SimResult:
    """Simulate *schedule* on network *spec*; see :class:`Simulation`."""
    return Simulation(schedule, spec, itemsize).run()
