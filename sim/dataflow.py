"""The simulated dataflow executor: each rank runs its ops by the policy the real one runs
(:mod:`collbench.algorithms.dataflow`, waits from :mod:`collbench.algorithms.dependencies`), over
the same :class:`~collbench.sim.topology.Topology` and :class:`~collbench.sim.fabric.Fabric` as the
step executor (:mod:`collbench.sim.executor`), with its costs:

- The rank's CPU is one server: posting a send costs it the per-message *overhead* (the send
  is ready when that is done), reducing a landed segment ``gamma`` per byte once the
  segment may be applied; sends waiting to be posted go first, then reductions in order of
  arrival, each run whole. Posting a receive costs nothing.
- A message moves when its send is ready and its receive posted (a rendezvous), and the
  message before it between the same two ranks has left: one connection carries a pair's
  messages in order (a queue pair, a shared-memory queue; NCCL's FIFO). It then drains
  through the links of its route, sharing them with other pairs' flows, and lands one
  route latency after its last byte left; the send is then done, a copying receive too,
  and a reducing one is queued on its rank's CPU once its waits are done. (The step
  executor lets a step's messages to one peer share the link instead; under a dataflow
  that would hold every segment back until the slowest lands, which pipelining avoids.)

Matching follows the schedule's rule, by message: the k-th send from a to b in step s meets
the k-th receive at b from a in step s, whenever each is posted (sends are posted out of
order, as tags allow on a real transport).

Host models: ``none`` and ``static`` (overhead and γ stretched by the node's sharing, the
memory link through the topology); ``bound`` cores are not modelled here and are refused.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import simpy
from collbench.algorithms.dataflow import REDUCE, SEND, WINDOW, DataflowPlan, DataflowState
from collbench.algorithms.dependencies import message_keys
from collbench.algorithms.schedule import Schedule
from collbench.sim.executor import SimResult
from collbench.sim.fabric import Fabric, Flow, Mark
from collbench.sim.network import NetworkSpec
from collbench.sim.topology import Topology

from collbench.errors import CollbenchError

Tracer = Callable[[int, float, str, int], None]
"""``tracer(rank, time, event, op)``: called for every op event (see :mod:`collbench.trace`)."""


class _Rank:
    """One rank's plan, run state and CPU."""

    def __init__(self, rank: int, schedule: Schedule, window: int, overhead: float, gamma: float) -> None:
        self.rank = rank
        steps = schedule.steps[rank]
        self.plan = plan = DataflowPlan(steps, window)
        self.state = DataflowState(plan)
        self.ops, self.kinds = plan.ops, plan.kinds
        self.keys = message_keys(steps, rank)
        """Per op, the message it sends or receives (the schedule's matching rule)."""
        self.end = 0.0
        self.overhead, self.gamma = overhead, gamma
        self.posts: deque[int] = deque()
        """Sends waiting for the CPU to post them: served before :attr:`reductions`, as the
        real executor posts what a completion frees before it reduces on."""
        self.reductions: deque[int] = deque()
        """Landed segments free to apply, waiting for the CPU, in order of arrival."""
        self.busy = False


class _Channel:
    """The messages from one rank to another: posts not matched yet (at most one side has
    any), and matched messages waiting for the one in flight to leave."""

    __slots__ = ("sends", "recvs", "waiting", "busy")

    def __init__(self) -> None:
        self.sends: dict = {}
        self.recvs: dict = {}
        self.waiting: deque[tuple[_Rank, int, _Rank, int]] = deque()
        self.busy = False


class DataflowSimulation:
    """Run *schedule* as a dataflow with elements of *itemsize* bytes on *spec*."""

    def __init__(self, schedule: Schedule, spec: NetworkSpec, itemsize: int = 4, window: int = WINDOW,
                 tracer: Tracer | None = None) -> None:
        if itemsize < 1:
            raise ValueError(f"itemsize must be at least 1 byte, got {itemsize}")
        if window < 1:
            raise CollbenchError(f"the dataflow window must be at least 1, got {window}")
        self.schedule, self.spec, self.itemsize = schedule, spec, itemsize
        self.topology = Topology(spec, schedule.nranks, schedule.count * itemsize)
        host = self.topology.host
        if host.core is not None:
            raise CollbenchError("the dataflow simulation models host_model none or static, not bound "
                                 "cores; use --execution step or another host model")
        self.env = simpy.Environment()
        self.fabric = Fabric(self.env)
        self.ranks = [_Rank(r, schedule, window, spec.overhead * host.slowdown[r], host.gamma[r])
                      for r in range(schedule.nranks)]
        self.channels: dict[tuple[int, int], _Channel] = {}
        self.tracer = tracer
        self.events = 0
        self.messages = 0

    def run(self) -> SimResult:
        """Simulate the whole all-reduce. Raises RuntimeError if some op never completes or
        a send meets a receive of another step."""
        began = time.perf_counter()
        for st in self.ranks:
            self._post(st)
        self.env.run()
        stuck = [st.rank for st in self.ranks if not st.state.complete_all]
        if stuck:
            raise RuntimeError(f"dataflow simulation deadlocked: rank {stuck[0]} has ops that never complete")
        self.events += self.fabric.events
        finished = tuple(st.end for st in self.ranks)
        return SimResult(max(finished, default=0.0), finished, self.messages, self.events,
                         time.perf_counter() - began)

    def _trace(self, st: _Rank, event: str, i: int) -> None:
        if self.tracer is not None:
            self.tracer(st.rank, self.env.now, event, i)

    def _post(self, st: _Rank) -> None:
        """Post what the policy allows now: receives are offered to their channel, sends
        queued on the CPU."""
        for i in st.state.to_post():
            self._trace(st, "post", i)
            if st.kinds[i] == SEND:
                self._cpu(st, SEND, i)
            else:
                self._offer(st.ops[i].peer, st.rank, None, (st, i))

    def _cpu(self, st: _Rank, what: int, i: int) -> None:
        (st.posts if what == SEND else st.reductions).append(i)
        if not st.busy:
            self._next_work(st)

    def _next_work(self, st: _Rank) -> None:
        """Start the CPU's next piece of work, if any, and schedule its end."""
        if st.posts:
            what, i = SEND, st.posts.popleft()
        elif st.reductions:
            what, i = REDUCE, st.reductions.popleft()
        else:
            st.busy = False
            return
        st.busy = True
        if what == REDUCE:
            self._trace(st, "reduce start", i)
            cost = st.ops[i].length * self.itemsize * st.gamma
        else:
            cost = st.overhead
        if cost > 0:
            self.events += 1
            Mark(self.env, cost, lambda _e: self._work_done(st, what, i))
        else:
            self._work_done(st, what, i)

    def _work_done(self, st: _Rank, what: int, i: int) -> None:
        if what == REDUCE:
            self._trace(st, "reduce end", i)
            self._finish(st, i)
        else:
            self._offer(st.rank, st.ops[i].peer, (st, i), None)
        self._next_work(st)

    def _offer(self, src: int, dst: int, send: tuple | None, recv: tuple | None) -> None:
        """A send ready or a receive posted on the channel *src* -> *dst*: match it with the
        oldest waiting post of the other side, or wait."""
        channel = self.channels.get((src, dst))
        if channel is None:
            channel = self.channels[(src, dst)] = _Channel()
        if send is not None:
            key = send[0].keys[send[1]]
            if key not in channel.recvs:
                channel.sends[key] = send
                return
            sender, i = send
            receiver, j = channel.recvs.pop(key)
        else:
            key = recv[0].keys[recv[1]]
            if key not in channel.sends:
                channel.recvs[key] = recv
                return
            receiver, j = recv
            sender, i = channel.sends.pop(key)
        self.messages += 1
        channel.waiting.append((sender, i, receiver, j))
        if not channel.busy:
            self._transmit(channel, src, dst)

    def _transmit(self, channel: _Channel, src: int, dst: int) -> None:
        """Start the channel's next matched message now; the one after it starts when its
        last byte has left."""
        if not channel.waiting:
            channel.busy = False
            return
        channel.busy = True
        sender, i, receiver, j = channel.waiting.popleft()
        links, latency, _, weights = self.topology.route(src, dst)

        def arrives(arrival: float) -> None:
            self._at(arrival - latency, lambda: self._transmit(channel, src, dst))
            self._at(arrival, lambda: self._landed(sender, i, receiver, j))

        self.fabric.start(Flow(links, latency, sender.ops[i].length * self.itemsize, arrives, weights))

    def _at(self, when: float, action: Callable[[], None]) -> None:
        now = self.env.now
        if when > now:
            self.events += 1
            Mark(self.env, when - now, lambda _e: action())
        else:
            action()

    def _landed(self, sender: _Rank, i: int, receiver: _Rank, j: int) -> None:
        self._trace(sender, "send done", i)
        self._trace(receiver, "land", j)
        self._finish(sender, i)
        if receiver.kinds[j] != REDUCE:
            self._finish(receiver, j)
        elif receiver.state.landed(j):
            self._cpu(receiver, REDUCE, j)

    def _finish(self, st: _Rank, i: int) -> None:
        """Op *i* of *st* is complete: reduce what that frees and post what it allows."""
        st.end = self.env.now
        for j in st.state.complete(i):
            self._cpu(st, REDUCE, j)
        self._post(st)


def simulate_dataflow(schedule: Schedule, spec: NetworkSpec, itemsize: int = 4, window: int = WINDOW,
                      tracer: Tracer | None = None) -> SimResult:
    """Simulate *schedule* run as a dataflow on network *spec*; see :class:`DataflowSimulation`."""
    return DataflowSimulation(schedule, spec, itemsize, window, tracer).run()


def traced(schedule: Schedule, spec: NetworkSpec, itemsize: int = 4, window: int = WINDOW,
           offset_us: float = 0.0, name: str = "") -> tuple[SimResult, list[dict]]:
    """Simulate as :func:`simulate_dataflow` and return the Chrome trace events of every rank
    too (:func:`collbench.trace.chrome_events`), in simulated time shifted by *offset_us*."""
    from collbench.trace import chrome_events

    records: dict[int, list[tuple[float, str, int]]] = {}

    def record(rank: int, t: float, event: str, op: int) -> None:
        records.setdefault(rank, []).append((t, event, op))

    result = (simulation := DataflowSimulation(schedule, spec, itemsize, window, record)).run()
    events = []
    for st in simulation.ranks:
        events += chrome_events(st.rank, st.plan.ops, st.plan.steps, records.get(st.rank, ()),
                                offset_us, name)
    return result, events
