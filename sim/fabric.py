"""Links and the flows that share them: a flow-level (fluid) model of a network.

A *link* is one direction of a cable: it has a capacity in bytes per second and a
propagation latency. A *flow* is one message in flight: it drains its bytes through every
link of its route at a common rate, then arrives one route latency later. Links are full
duplex simply because each direction is its own :class:`Link`.

Concurrent flows share links by *max-min fairness* (progressive filling): the most
contended link splits its capacity equally among its flows, those flows are frozen at that
rate, and the rest of the network is filled the same way. Rates are recomputed whenever a
flow starts or ends, once per instant of simulated time and only for the flows connected to
what changed. Each new rate gives the flow a finish time in a heap the fabric keeps (plain
tuples; an entry whose rate has since changed is skipped), and SimPy holds one timer, for the
earliest: a flow joining k others costs k heap entries but no SimPy event, and flows ending
at one instant end in one event.

Flows that share exactly one link and nothing else (each of their other links carries only
them, and is no tighter than the equal share) get ``capacity / k`` each from max-min; the
fabric keeps them as a *processor-sharing group* (:class:`_Group`) in virtual time, so a
flow joining or leaving costs O(log k) instead of a new rate for each of the k: naive's
root, whose P-1 messages join its link one overhead apart, costs O(P log P), not O(P²). A
flow that touches a group's links any other way turns it back into plain flows.
This is the classic flow-level model (as in SimGrid's LV08 without its corrections): it
ignores packets, so it misses slow start, head-of-line blocking and the latency a queue
adds, and it shares instantly and perfectly fairly, which real congestion control only
approaches. See ``docs/simulator.md`` for what that error looks like.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heapify, heappop, heappush
from itertools import count

import simpy
from simpy.events import NORMAL

_serials = count()
"""Serial numbers of links, flows and groups, in creation order (see :attr:`Flow.serial`)."""

REFLOW_PRIORITY = NORMAL + 1
"""Rates are recomputed after every other event of the same instant (SimPy's URGENT is 0 and
NORMAL 1), so a burst of flows starting together costs one recomputation."""


class Mark(simpy.Event):
    """An event already triggered that SimPy processes *delay* seconds from now with
    *priority*: :class:`simpy.Timeout` with a priority, made the way SimPy's own event types
    are (a subclass that triggers itself and calls :meth:`simpy.Environment.schedule`)."""

    def __init__(self, env: simpy.Environment, delay: float, callback: Callable[[simpy.Event], None],
                 priority: int = NORMAL) -> None:
        super().__init__(env)
        self._ok, self._value = True, None
        self.callbacks.append(callback)
        env.schedule(self, priority, delay)


class Link:
    """One direction of a cable with *capacity* bytes per second and *latency* seconds."""

    __slots__ = ("name", "capacity", "latency", "flows", "group", "serial")

    def __init__(self, name: str, capacity: float, latency: float) -> None:
        if not capacity > 0:
            raise ValueError(f"link {name}: capacity must be positive, got {capacity}")
        if not latency >= 0:
            raise ValueError(f"link {name}: latency must be non-negative, got {latency}")
        self.name = name
        self.serial = next(_serials)
        """Creation order: ties between links are broken by it, so that runs repeat exactly."""
        self.capacity = capacity
        self.latency = latency
        self.flows: set[Flow] = set()
        """The flows draining through this link now (those the :class:`Fabric` tracks)."""
        self.group: _Group | None = None
        """The :class:`_Group` whose flows this link carries (its shared link or a member's
        own), if any."""

    def __repr__(self) -> str:
        return f"Link({self.name!r}, {self.capacity:g} B/s, {self.latency:g} s)"


class Flow:
    """A message of *size* bytes crossing *links*; *on_arrival* is called with its arrival
    time as soon as that time is certain (when its last byte leaves the route's bottleneck)."""

    __slots__ = ("links", "latency", "remaining", "rate", "updated", "version", "on_arrival", "weights",
                 "group", "cap", "serial")

    def __init__(self, links: tuple[Link, ...], latency: float, size: float,
                 on_arrival: Callable[[float], None], weights: tuple[float, ...] | None = None) -> None:
        self.links = links
        self.serial = next(_serials)
        """Creation order: flows ending at one instant end in this order, whatever the order
        of the sets they sit in, so that runs repeat exactly."""
        self.weights = weights
        """Per link of *links*, how much of its capacity one unit of this flow's rate uses;
        None means 1 on every link (a resource a byte uses twice, or at another speed than
        the wire's, has another weight)."""
        self.latency = latency
        self.remaining = float(size)
        self.rate = 0.0
        self.updated = 0.0
        self.version = 0
        self.on_arrival = on_arrival
        self.group: _Group | None = None
        """The :class:`_Group` that drains this flow, if any (then :attr:`remaining` and
        :attr:`rate` are the group's to keep)."""
        self.cap = 0.0
        """In a group: the capacity of its tightest link other than the group's."""


class _Group:
    """Flows that share one link *link* and nothing else (each of its other links carries it
    alone, and none of them is tighter than the equal share), so max-min gives each
    ``capacity / k``: processor sharing. Each member is kept as its finish in *virtual
    time*, the bytes one member has been served since the group began, so a flow joining
    or leaving costs O(log k) instead of a new rate for every member."""

    __slots__ = ("link", "served", "updated", "members", "heap", "version", "cap", "serial")

    def __init__(self, link: Link, now: float) -> None:
        self.link = link
        self.serial = next(_serials)
        self.served = 0.0
        """Bytes each member has drained since the group began, as of :attr:`updated`."""
        self.updated = now
        self.members = 0
        self.heap: list[tuple[float, int, Flow]] = []
        """(virtual finish, serial, member): a member ends when :attr:`served` reaches it."""
        self.version = 0
        """Bumped at every change, so the fabric's completion entries of the group go stale."""
        self.cap = float("inf")
        """The smallest :attr:`Flow.cap` a member has had: the group holds while the equal
        share does not exceed it."""

    def rate(self) -> float:
        """Each member's rate."""
        return self.link.capacity / self.members

    def advance(self, now: float) -> None:
        """Count the bytes each member drained since :attr:`updated`."""
        if self.members:
            self.served += self.rate() * (now - self.updated)
        self.updated = now


class Fabric:
    """The set of flows in flight over a network, in SimPy environment *env*."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.dirty: list[Link] = []
        self.fresh: list[Flow] = []
        self._reflow_pending = False
        self.flows = 0
        """Flows in flight; while there are none, every link is free."""
        self.events = 0
        """Events this fabric scheduled (completion timers and rate recomputations)."""
        self._completions: list[tuple[float, int, int, Flow]] = []
        """(finish, serial, version, flow) for every rate a flow was given; an entry whose
        version is no longer its flow's is stale and skipped. One heap of plain tuples
        instead of a SimPy event per rate change: a flow joining k others on a link changes
        k rates, so P flows on one link would otherwise put P² events on SimPy's heap."""
        self._timer_at = float("inf")
        """When the one pending completion timer fires (inf: none)."""
        self._timer: simpy.Event | None = None
        self._loose: list[Flow] = []
        """Members of groups dissolved since the last recomputation: they need rates again."""

    def start(self, flow: Flow) -> None:
        """Put *flow* on its links now; its rate is set at the end of this instant."""
        flow.updated = self.env.now
        self.flows += 1
        for link in flow.links:
            link.flows.add(flow)
        self.fresh.append(flow)
        self._request_reflow()

    def _request_reflow(self) -> None:
        if not self._reflow_pending:
            self._reflow_pending = True
            Mark(self.env, 0.0, self._reflow, REFLOW_PRIORITY)
            self.events += 1

    def _reflow(self, _event: simpy.Event) -> None:
        self._reflow_pending = False
        seen: set[Flow] = set()
        for flow in self.fresh:
            if flow in seen or flow.group is not None:
                continue
            if flow.links and all(len(link.flows) == 1 for link in flow.links):
                seen.add(flow)  # alone on its route: the common, cheap case
                self._set_rate(flow, alone_rate(flow.links, flow.weights))
            elif self._join_group(flow):
                seen.add(flow)
        seen.difference_update(self._loose)
        starts = [f for f in self.fresh if f not in seen and f.group is None]
        starts.extend(f for f in self._loose if f.group is None)
        self._loose = []
        starts.extend(f for link in self.dirty for f in link.flows if f not in seen and f.group is None)
        self.fresh, self.dirty = [], []
        for flow in starts:
            if flow not in seen:
                flows, links = _component(flow)
                seen.update(flows)
                for f, rate in _max_min(flows, links).items():
                    self._set_rate(f, rate)

    def _join_group(self, flow: Flow) -> bool:
        """Put *flow* into the group of the one link it shares, forming the group from the
        flows there if they qualify; True if it is in one. A group that *flow* touches but
        cannot join is dissolved into plain flows (whose link is then recomputed)."""
        shared = [link for link in flow.links if len(link.flows) > 1]
        link = shared[0] if len(shared) == 1 else None
        group = link.group if link is not None else None
        ok = link is not None and flow.weights is None and (group is None or group.link is link)
        if ok and group is None:
            others = [f for f in link.flows if f is not flow]
            ok = all(f.group is None and f.weights is None
                     and all(len(m.flows) == 1 for m in f.links if m is not link) for f in others)
            if ok and _cap(flow, link) * (len(others) + 1) >= link.capacity and all(
                    _cap(f, link) * (len(others) + 1) >= link.capacity for f in others):
                group = _Group(link, self.env.now)
                link.group = group
                for other in others:
                    self._enter(group, other, max(0.0, other.remaining - other.rate
                                                  * (self.env.now - other.updated)))
            else:
                ok = False
        if ok and min(group.cap, _cap(flow, link)) * (group.members + 1) >= link.capacity:
            group.advance(self.env.now)
            self._enter(group, flow, flow.remaining)
            self._schedule_group(group)
            return True
        for touched in {m.group for m in flow.links if m.group is not None}:
            self._dissolve(touched)
        return False

    def _enter(self, group: _Group, flow: Flow, remaining: float) -> None:
        """Make *flow*, with *remaining* bytes left, a member of *group* (already advanced to now)."""
        flow.version += 1  # its own completion entry, if any, is stale
        flow.group = group
        flow.cap = _cap(flow, group.link)
        group.cap = min(group.cap, flow.cap)
        group.members += 1
        for link in flow.links:
            link.group = group
        heappush(group.heap, (group.served + remaining, flow.serial, flow))

    def _schedule_group(self, group: _Group) -> None:
        """Put *group*'s next member end into the completion heap."""
        group.version += 1
        if not group.members:
            group.link.group = None
            return
        first = group.heap[0][0]
        finish = group.updated + (first - group.served) / group.rate()
        heappush(self._completions, (finish, group.serial, group.version, group))
        if finish < self._timer_at:
            self._set_timer(finish)

    def _group_due(self, group: _Group) -> None:
        """The group's first members have drained: finish every member that ends now."""
        served = group.heap[0][0]
        group.served, group.updated = served, self.env.now
        ended = []
        while group.heap and group.heap[0][0] <= served:
            ended.append(heappop(group.heap)[2])
        group.members -= len(ended)
        for flow in ended:
            flow.group = None
            for link in flow.links:
                if link is not group.link:
                    link.group = None
        if group.members and group.rate() > group.cap:
            self._dissolve(group)
            self._request_reflow()
        else:
            self._schedule_group(group)
        for flow in ended:
            flow.version += 1
            self.flows -= 1
            for link in flow.links:
                link.flows.discard(flow)
            flow.on_arrival(self.env.now + flow.latency)

    def _dissolve(self, group: _Group) -> None:
        """Turn *group*'s members back into plain flows, their link to be recomputed."""
        now = self.env.now
        group.advance(now)
        for finish, _, flow in group.heap:
            self._loose.append(flow)
            flow.group = None
            flow.remaining, flow.rate, flow.updated = max(0.0, finish - group.served), 0.0, now
            for link in flow.links:
                link.group = None
        group.heap, group.members = [], 0
        group.version += 1
        group.link.group = None
        self.dirty.append(group.link)

    def _set_rate(self, flow: Flow, rate: float) -> None:
        now = self.env.now
        flow.remaining = max(0.0, flow.remaining - flow.rate * (now - flow.updated))
        flow.updated = now
        if rate == flow.rate and flow.version:
            return
        flow.rate = rate
        flow.version += 1
        finish = now + flow.remaining / rate
        heap = self._completions
        heappush(heap, (finish, flow.serial, flow.version, flow))
        if len(heap) > 4 * self.flows + 64:  # mostly stale: keep the current entries only
            heap[:] = [entry for entry in heap if entry[2] == entry[3].version]
            heapify(heap)
        if finish < self._timer_at:
            self._set_timer(finish)

    def _set_timer(self, at: float) -> None:
        """Fire :meth:`_complete` at *at* (SimPy's ``now + (at - now)``, which may differ from
        *at* by rounding); a timer set before for later then fires for nothing."""
        self._timer_at = at
        self._timer = Mark(self.env, at - self.env.now, self._complete)
        self.events += 1

    def _complete(self, timer: simpy.Event) -> None:
        """Finish every flow whose current rate ends it by now, then set the timer for the next."""
        if timer is not self._timer:
            return  # superseded by an earlier timer
        heap, due = self._completions, max(self.env.now, self._timer_at)
        self._timer_at, self._timer = float("inf"), None
        while heap and (heap[0][2] != heap[0][3].version or heap[0][0] <= due):
            _, _, version, flow = heappop(heap)
            if version != flow.version:
                continue
            if isinstance(flow, _Group):
                self._group_due(flow)
            else:
                self._finish(flow)
        if heap:
            self._set_timer(heap[0][0])

    def _finish(self, flow: Flow) -> None:
        flow.version += 1  # no entry of it is current any more
        self.flows -= 1
        for link in flow.links:
            link.flows.discard(flow)
            if link.flows:
                self.dirty.append(link)
        if self.dirty:
            self._request_reflow()
        flow.on_arrival(self.env.now + flow.latency)


def _cap(flow: Flow, shared: Link) -> float:
    """The capacity of *flow*'s tightest link other than *shared*."""
    return min((link.capacity for link in flow.links if link is not shared), default=float("inf"))


def _component(seed: Flow) -> tuple[set[Flow], set[Link]]:
    """The flows and links connected to *seed* through shared links."""
    flows, links, todo = {seed}, set(), [seed]
    while todo:
        for link in todo.pop().links:
            if link not in links:
                links.add(link)
                for other in link.flows:
                    if other not in flows:
                        flows.add(other)
                        todo.append(other)
    return flows, links


def alone_rate(links: tuple[Link, ...], weights: tuple[float, ...] | None) -> float:
    """The rate of a flow over *links*, using each by *weights* (None: 1 each), with them to
    itself: the capacity per unit of use of its tightest link."""
    if weights is None:
        return min(link.capacity for link in links)
    return min(link.capacity / w for link, w in zip(links, weights))


def _max_min(flows: set[Flow], links: set[Link]) -> dict[Flow, float]:
    """Max-min fair rates by progressive filling: repeatedly saturate the link whose equal
    share is smallest and freeze its flows at that share."""
    if any(flow.weights is not None for flow in flows):
        return _weighted_max_min(flows, links)
    capacity = {link: link.capacity for link in links}
    unfrozen = {link: set(link.flows) for link in links}
    rates: dict[Flow, float] = {}
    while len(rates) < len(flows):
        share, _, bottleneck = min((capacity[link] / len(fs), link.serial, link)
                                   for link, fs in unfrozen.items() if fs)
        for flow in list(unfrozen[bottleneck]):
            rates[flow] = share
            for link in flow.links:
                unfrozen[link].discard(flow)
                capacity[link] = max(0.0, capacity[link] - share)
    return rates


def _weighted_max_min(flows: set[Flow], links: set[Link]) -> dict[Flow, float]:
    """:func:`_max_min` for flows that use links unequally (:attr:`Flow.weights`): every
    unfrozen flow's rate rises together, a link is saturated when the weighted sum of its
    flows' rates reaches its capacity, and its flows are frozen there. (With every weight 1
    this is :func:`_max_min`, which the common unweighted case keeps for speed: naive at
    P = 512 on ib-fdr takes 1.4x longer through this one.)"""
    capacity = {link: link.capacity for link in links}
    load = dict.fromkeys(links, 0.0)
    uses = {}
    for flow in flows:
        uses[flow] = tuple(zip(flow.links, flow.weights or (1.0,) * len(flow.links)))
        for link, w in uses[flow]:
            load[link] += w
    unfrozen = {link: set(link.flows) for link in links}
    rates: dict[Flow, float] = {}
    while len(rates) < len(flows):
        share, _, bottleneck = min((capacity[link] / load[link], link.serial, link)
                                   for link, fs in unfrozen.items() if fs and load[link] > 0)
        for flow in list(unfrozen[bottleneck]):
            rates[flow] = share
            for link, w in uses[flow]:
                unfrozen[link].discard(flow)
                load[link] -= w
                capacity[link] = max(0.0, capacity[link] - share * w)
    return rates
