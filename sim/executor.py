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
- The host model (:mod:`collbench.sim.host`) sets each rank's overhead and reduction speed;
  with bound cores a reduction is instead a flow on the rank's core link, which it shares
  with the copies and reductions running there at the time.
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

import simpy
from collbench.algorithms.schedule import Kind, Schedule
from collbench.sim.fabric import Fabric, Flow, Link, Mark
from collbench.sim.network import NetworkSpec
from collbench.sim.topology import Route, Topology


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
                 "parked", "overhead", "gamma", "core", "rank")

    def __init__(self, env: simpy.Environment, rank: int, overhead: float = 0.0, gamma: float = 0.0,
                 core: Link | None = None) -> None:
        self.rank = rank
        self.overhead = overhead
        """This rank's per-message overhead, as its host model stretches it."""
        self.gamma = gamma
        """This rank's seconds per byte reduced, as its host model sets it."""
        self.core = core
        """The core link the rank is bound to (host model ``bound``): its reductions are flows
        on it, sharing the core with what else runs there."""
        self.cpu = self.end = 0.0
        """When the CPU is free to reduce (the step's sends issued); when the ops so far end."""
        self.pending = self.sends_left = self.recvs_left = 0
        self.reduces: list[tuple[float, int]] = []
        """(arrival, bytes) of the step's reducing receives that have arrived."""
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
                 "private", "simple", "sends", "recvs")

    def __init__(self, src: int, dst: int, sender: _Rank, receiver: _Rank, route: Route,
                 topology: Topology) -> None:
        self.src, self.dst, self.sender, self.receiver = src, dst, sender, receiver
        self.links, self.latency, self.bandwidth, self.weights = route
        self.private = _privacy(src, dst, self.links, topology.sender_of, topology.receiver_of)
        """Which of the sender's or receiver's counts of ops still to start must be zero for
        a message to have its links to itself; None if some link is shared anyway."""
        self.simple = self.private == (True, False, True, False)
        """The sender's up link and the receiver's down link (a switch, one rank per node)."""
        self.sends: list[tuple[int, float]] = []
        """Sends posted and not matched: (step, ready)."""
        self.recvs: list[tuple[int, float, bool, int]] = []
        """Receives posted and not matched: (step, ready, reduce, bytes)."""


def _privacy(src: int, dst: int, links: tuple[Link, ...], sender_of: dict[Link, int],
             receiver_of: dict[Link, int]) -> tuple[bool, bool, bool, bool] | None:
    """The rule of :meth:`Simulation._start` for the route *links* from *src* to *dst*,
    worked out once: ``(sender's sends, sender's receives, receiver's receives, receiver's
    sends)``, each True if that count must be zero. A sender's up link takes only its sends,
    a receiver's down link only its receives, a half-duplex port both. None if some link is
    private to neither rank (then the message always joins the fabric); a link private to
    both, which no topology builds, is refused too."""
    needs = [False, False, False, False]
    for link in links:
        by_sender, by_receiver = sender_of.get(link) == src, receiver_of.get(link) == dst
        if by_sender == by_receiver:
            return None
        if by_sender:
            needs[0] = True
            needs[1] |= receiver_of.get(link) == src
        else:
            needs[2] = True
            needs[3] |= sender_of.get(link) == dst
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
        host = self.topology.host
        cores = host.core or [None] * schedule.nranks
        self.ranks = [_Rank(self.env, rank, spec.overhead * slow, gamma, core)
                      for rank, (slow, gamma, core) in enumerate(zip(host.slowdown, host.gamma, cores))]
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
                src, dst, self.ranks[src], self.ranks[dst], self.topology.route(src, dst), self.topology)
        return channel

    def _rank(self, rank: int):
        """The process of *rank*: post each step's ops, wait until they are complete.

        This loop runs once per rank and step of the whole all-reduce, millions of times in a
        large run, so it does by hand what would read better as calls: a message is matched
        where its second side is posted, and a message alone on private links (the common
        case, see :meth:`_start`) gets its arrival at once."""
        env, st, itemsize = self.env, self.ranks[rank], self.itemsize
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
            now = env.now
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
                if kind is send:
                    if peer != out_peer:  # most algorithms send to the same peer step after step
                        out_peer = peer
                        out_channel = outgoing.get(peer) or outgoing.setdefault(
                            peer, self._channel(rank, peer))
                    channel = out_channel
                    issued += 1
                    ready = now + issued * overhead
                    if not channel.recvs:
                        channel.sends.append((index, ready))
                        continue
                    other, posted, is_reduce, size = channel.recvs.pop(0)
                    if other != index:
                        self._mismatch(channel, index, other)
                    start = ready if ready > posted else posted
                else:
                    if peer != in_peer:
                        in_peer = peer
                        in_channel = incoming.get(peer) or incoming.setdefault(
                            peer, self._channel(peer, rank))
                    channel = in_channel
                    is_reduce, size = kind is reduce, (stop - first) * itemsize
                    if not channel.sends:
                        channel.recvs.append((index, now, is_reduce, size))
                        continue
                    other, ready = channel.sends.pop(0)
                    if other != index:
                        self._mismatch(channel, other, index)
                    start = ready if ready > now else now
                messages += 1
                sender, receiver = channel.sender, channel.receiver
                if not (channel.simple and sender.sends_left == 1 and receiver.recvs_left == 1
                        and not fabric.flows):
                    start_message(channel, is_reduce, size, start)
                    continue
                # _start's shortcut for an up and a down link, then _arrived, written out.
                sender.sends_left = receiver.recvs_left = 0
                arrival = start + size / channel.bandwidth + channel.latency
                if arrival > sender.end:
                    sender.end = arrival
                sender.pending -= 1
                if not sender.pending:
                    step_done(sender)
                if is_reduce:
                    receiver.reduces.append((arrival, size))
                elif arrival > receiver.end:
                    receiver.end = arrival
                receiver.pending -= 1
                if not receiver.pending:
                    step_done(receiver)
            yield st.wake
        self.finished[rank] = env.now
        self.messages += messages

    def _mismatch(self, channel: _Channel, sent: int, received: int) -> None:
        raise RuntimeError(f"{self.schedule.name}: rank {channel.src}'s send of step {sent} meets "
                           f"rank {channel.dst}'s receive of step {received}: the schedule's "
                           "sends and receives do not match")

    def _start(self, channel: _Channel, reduce: bool, size: int, start: float) -> None:
        """Start a message at *start* (now or later). If every link of its route is free and
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
                arrival = start + size / channel.bandwidth + channel.latency
                self._arrived(sender, receiver, reduce, size, arrival)
                return
        now = self.env.now
        if start > now:  # not started yet after all: decide again when it does
            sender.sends_left += 1
            receiver.recvs_left += 1
            self.events += 1
            Mark(self.env, start - now, lambda _e: self._start(channel, reduce, size, start))
            return
        self.fabric.start(Flow(channel.links, channel.latency, size,
                               lambda arrival: self._arrived(sender, receiver, reduce, size, arrival),
                               channel.weights))

    def _arrived(self, sender: _Rank, receiver: _Rank, reduce: bool, size: int, arrival: float) -> None:
        """The message from *sender* to *receiver* arrives at *arrival* (now or later): it
        completes the sender's op, and the receiver's once reduced."""
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
        reduces = st.reduces
        if reduces:
            if st.core is not None and st.gamma > 0:
                queue = sorted(reduces)
                reduces.clear()
                self._reduce_on_core(st, queue, st.cpu)
                return
            cpu, gamma = st.cpu, st.gamma
            for arrival, size in sorted(reduces) if len(reduces) > 1 else reduces:
                cpu = (cpu if cpu > arrival else arrival) + size * gamma
            if cpu > end:
                end = cpu
            reduces.clear()
        self._wake_at(st, end)

    def _reduce_on_core(self, st: _Rank, queue: list[tuple[float, int]], cpu: float) -> None:
        """Run the first reduction of *queue* on *st*'s core once the core is free of the
        rank's earlier work (*cpu*) and its message has arrived, as a flow sharing the core
        with whatever else runs there; then the next, and at the last wake the rank."""
        arrival, size = queue.pop(0)
        start = cpu if cpu > arrival else arrival

        def done(finished: float) -> None:
            if queue:
                self._reduce_on_core(st, queue, finished)
            else:
                self._wake_at(st, finished if finished > st.end else st.end)

        def begin(_event: simpy.Event | None = None) -> None:
            # a byte reduced uses the core this much
            self.fabric.start(Flow((st.core,), 0.0, size, done, (st.gamma * st.core.capacity,)))

        now = self.env.now
        if not size:
            done(start)
        elif start > now:
            self.events += 1
            Mark(self.env, start - now, begin)
        else:
            begin()

    def _wake_at(self, st: _Rank, end: float) -> None:
        """Wake *st*'s process at *end*, the instant its step is complete."""
        # The instant, as SimPy will compute it (now + delay), so equal ends meet.
        env = self.env
        now = env.now
        at = now + (end - now)
        instant = self.instants.get(at)
        if instant is None:
            instant = self.instants[at] = Mark(env, end - now, self._instant_begins)
            self.events += 1
        waiting = st.parked.callbacks
        if waiting:  # the process already waits: move it to the instant
            instant.callbacks.append(waiting.pop())
        else:  # the process is still posting this step: it will wait on the instant
            st.wake = instant

    def _instant_begins(self, instant: simpy.Event) -> None:
        """*instant* is being processed: later wake-ups for this time need an event of their own."""
        del self.instants[self.env.now]


def simulate(schedule: Schedule, spec: NetworkSpec, itemsize: int = 4) -> SimResult:
    """Simulate *schedule* on network *spec*; see :class:`Simulation`."""
    return Simulation(schedule, spec, itemsize).run()
