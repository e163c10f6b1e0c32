"""Topologies: the links of a :class:`~collbench.sim.network.NetworkSpec` for *nranks* ranks, and the
route of every message.

Every route is a tuple of :class:`~collbench.sim.fabric.Link` plus its latency. Ranks live on nodes
(:meth:`Topology.node_of`); ranks of one node talk over the intra-node fabric when the spec
has one, and otherwise through the node's NICs like ranks of different nodes. A node's NICs
are one bonded link of ``nics_per_node`` times the NIC bandwidth, up and down: this assumes
the node's traffic spreads evenly over its NICs (true for one rank per NIC, optimistic for
one rank striping over two rails).

What a node's CPUs and memory add (a memory link, cores as links) is the host model's
(:mod:`collbench.sim.host`): for a message between two ranks of one node the topology asks
it for the links to use.
"""

from __future__ import annotations

import math
from collections import Counter

from collbench.sim.fabric import Link, alone_rate
from collbench.sim.host import host_model
from collbench.sim.network import NetworkSpec, SpecError

Route = tuple[tuple[Link, ...], float, float, tuple[float, ...] | None]
"""The links of a route, its latency, its bandwidth when alone (the smallest capacity per
unit of use), and how much of each link a byte uses (None: one each; see
:attr:`~collbench.sim.fabric.Flow.weights`)."""


class Topology:
    """The links of *spec* for *nranks* ranks; routes are built once per pair and cached."""

    def __init__(self, spec: NetworkSpec, nranks: int, rank_bytes: float = 0.0) -> None:
        if nranks < 1:
            raise SpecError(f"the number of ranks must be at least 1, got {nranks}")
        self.spec = spec
        self.nranks = nranks
        self.nodes = math.ceil(nranks / spec.ranks_per_node)
        self.node_of = self._placement()
        self._routes: dict[tuple[int, int], Route] = {}
        node_bw = spec.bandwidth * spec.nics_per_node
        half = spec.latency / 2
        self.up = [Link(f"node{n}.up", node_bw, half) for n in range(self.nodes)]
        self.down = [Link(f"node{n}.down", node_bw, half) for n in range(self.nodes)]
        if spec.topology == "half-duplex":  # one port per node, both directions
            self.down = self.up
        population = Counter(self.node_of)
        self.host = host_model(spec, self.node_of, rank_bytes)
        self.intra_up = self.intra_down = None
        if spec.intra_bandwidth > 0 and spec.ranks_per_node > 1 and self.host.core is None:
            ih = spec.intra_latency / 2
            speed = self.host.copy_speed
            self.intra_up = [Link(f"rank{r}.intra_up", speed(r), ih) for r in range(nranks)]
            self.intra_down = self.intra_up if spec.topology == "half-duplex" else [
                Link(f"rank{r}.intra_down", speed(r), ih) for r in range(nranks)]
        self.sender_of: dict[Link, int] = {}
        """Links only one rank's sends can use (a node's up link when it holds one rank)."""
        self.receiver_of: dict[Link, int] = {}
        """Links only one rank's receives can use (a node's down link when it holds one rank).
        A message on links private to its sender or receiver can skip the sharing model
        (see :meth:`collbench.sim.executor.Simulation._start`)."""
        for rank, node in enumerate(self.node_of):
            if population[node] == 1:
                self.sender_of[self.up[node]] = self.receiver_of[self.down[node]] = rank
        if self.intra_up is not None:
            for rank in range(nranks):
                self.sender_of[self.intra_up[rank]] = self.receiver_of[self.intra_down[rank]] = rank
        if spec.topology == "fat-tree":
            leaves = math.ceil(self.nodes / spec.hosts_per_leaf)
            core_bw = spec.hosts_per_leaf * node_bw / spec.oversubscription
            hop = spec.switch_latency
            self.leaf_up = [Link(f"leaf{i}.up", core_bw, hop) for i in range(leaves)]
            self.leaf_down = [Link(f"leaf{i}.down", core_bw, hop) for i in range(leaves)]
        self.rails = PcieRails(spec, self.node_of) if spec.topology == "pcie-rails" else None
        if self.rails is not None:
            self.sender_of.update(self.rails.sender_of)
            self.receiver_of.update(self.rails.receiver_of)
        if spec.topology == "torus":
            self.dims = spec.torus_dims or (self.nodes,)
            if math.prod(self.dims) < self.nodes:
                raise SpecError(f"a torus of {'x'.join(map(str, self.dims))} holds fewer than the "
                                f"{self.nodes} nodes needed")
            self._torus: dict[tuple[int, int], Link] = {}

    def _placement(self) -> list[int]:
        spec, p = self.spec, self.nranks
        if not isinstance(spec.placement, str):
            nodes = list(spec.placement)
            if len(nodes) < p or any(not 0 <= n < self.nodes for n in nodes[:p]):
                raise SpecError(f"placement must give a node in 0..{self.nodes - 1} for each of {p} ranks")
            counts = [nodes[:p].count(n) for n in range(self.nodes)]
            if max(counts) > spec.ranks_per_node:
                raise SpecError(f"placement puts more than {spec.ranks_per_node} ranks on one node")
            return nodes[:p]
        if spec.placement == "block":
            return [r // spec.ranks_per_node for r in range(p)]
        order = list(range(self.nodes))
        if spec.topology == "fat-tree":  # consecutive nodes on different leaves
            order.sort(key=lambda n: (n % spec.hosts_per_leaf, n // spec.hosts_per_leaf))
        return [order[r % self.nodes] for r in range(p)]

    def route(self, src: int, dst: int) -> Route:
        """The :data:`Route` from rank *src* to rank *dst*."""
        key = (src, dst)
        route = self._routes.get(key)
        if route is None:
            links, weights = self._links(src, dst)
            latency = sum(link.latency for link in links)
            links, weights = _merged(links, weights)
            route = self._routes[key] = (links, latency, alone_rate(links, weights), weights)
        return route

    def _links(self, src: int, dst: int) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
        """The links from *src* to *dst* in order (a link crossed twice appears twice), and
        their weights (None: 1 each)."""
        a, b = self.node_of[src], self.node_of[dst]
        if a != b:
            return self._fabric_links(src, dst, a, b), None
        on_host = self.host.node_links(src, dst)
        if on_host is not None:
            links, weights = on_host
        elif self.intra_up is not None:
            links, weights = (self.intra_up[src], self.intra_down[dst]), None
        else:
            links, weights = self._fabric_links(src, dst, a, a), None
        memory = self.host.memory(a)
        if memory is not None:
            links = (*links, memory)
            weights = None if weights is None else (*weights, 1.0)
        return links, weights

    def _fabric_links(self, src: int, dst: int, a: int, b: int) -> tuple[Link, ...]:
        spec = self.spec
        if spec.topology == "ideal":
            link = Link(f"rank{src}->rank{dst}", spec.bandwidth * spec.nics_per_node, spec.latency)
            self.sender_of[link] = src
            return (link,)
        if self.rails is not None:
            return self.rails.links(src, dst, a, b)
        if spec.topology in ("switch", "half-duplex") or a == b:
            return (self.up[a], self.down[b])
        if spec.topology == "fat-tree":
            la, lb = a // spec.hosts_per_leaf, b // spec.hosts_per_leaf
            if la == lb:
                return (self.up[a], self.down[b])
            return (self.up[a], self.leaf_up[la], self.leaf_down[lb], self.down[b])
        return tuple(self._torus_link(u, v) for u, v in self._torus_hops(a, b))

    def _torus_hops(self, a: int, b: int) -> list[tuple[int, int]]:
        """Dimension-order route from node *a* to node *b*, the short way round (ties: up)."""
        coords = _coords(a, self.dims)
        target = _coords(b, self.dims)
        hops = []
        for d, size in enumerate(self.dims):
            forward = (target[d] - coords[d]) % size
            step = 1 if forward <= size - forward else -1
            while coords[d] != target[d]:
                here = _index(coords, self.dims)
                coords[d] = (coords[d] + step) % size
                hops.append((here, _index(coords, self.dims)))
        return hops

    def _torus_link(self, u: int, v: int) -> Link:
        link = self._torus.get((u, v))
        if link is None:
            capacity = self.spec.bandwidth * self.spec.nics_per_node
            link = self._torus[(u, v)] = Link(f"node{u}->node{v}", capacity, self.spec.latency)
        return link


class PcieRails:
    """The ``pcie-rails`` topology, as DGX-like nodes are built: each node has
    ``nics_per_node`` PCIe switches, each with one NIC, and NIC *r* of every node is on rail
    *r*, a non-blocking switch of its own. A node's ranks sit on its GPUs, one each, spread
    in blocks over the switches (rank *i* of a node behind switch ``i·R // ranks_per_node``),
    each GPU on a PCIe link of ``pcie_bandwidth`` to its switch; a switch reaches the others
    through the CPU's root complex, over one more PCIe link each way.

    A message between nodes leaves on the rail of the sender's switch (rails are not
    striped: a node's one rank uses one NIC) and arrives on the same rail, crossing to the
    receiver's switch through the root complex if the receiver sits behind another. Between
    ranks of one node (without an ``intra_bandwidth`` fabric) it goes GPU, switch, (root
    complex, switch,) GPU. Latencies: ``latency`` from NIC to NIC, ``intra_latency`` from
    GPU to GPU over PCIe (split over the two GPU links), so a message between nodes pays
    both."""

    def __init__(self, spec: NetworkSpec, node_of: list[int]) -> None:
        rails, gpus = spec.nics_per_node, spec.ranks_per_node
        seen: Counter = Counter()
        self.switch_of = []
        """Per rank: the switch (and rail) of its GPU on its node."""
        for node in node_of:
            self.switch_of.append(seen[node] * rails // gpus)
            seen[node] += 1
        half, pcie = spec.intra_latency / 2, spec.pcie_bandwidth
        self.gpu_up = [Link(f"rank{r}.pcie_up", pcie, half) for r in range(len(node_of))]
        self.gpu_down = [Link(f"rank{r}.pcie_down", pcie, half) for r in range(len(node_of))]
        places = [(n, s) for n in sorted(set(node_of)) for s in range(rails)]
        self.nic_up = {(n, s): Link(f"node{n}.rail{s}.up", spec.bandwidth, spec.latency / 2)
                       for n, s in places}
        self.nic_down = {(n, s): Link(f"node{n}.rail{s}.down", spec.bandwidth, spec.latency / 2)
                         for n, s in places}
        self.root_up = {(n, s): Link(f"node{n}.switch{s}.root_up", pcie, 0.0) for n, s in places}
        self.root_down = {(n, s): Link(f"node{n}.switch{s}.root_down", pcie, 0.0) for n, s in places}
        self.sender_of = {link: r for r, link in enumerate(self.gpu_up)}
        self.receiver_of = {link: r for r, link in enumerate(self.gpu_down)}
        behind, population = Counter(zip(node_of, self.switch_of)), Counter(node_of)
        for rank, place in enumerate(zip(node_of, self.switch_of)):
            if behind[place] == 1:  # the only rank behind its switch sends alone on its rail
                self.sender_of[self.nic_up[place]] = rank
            if population[place[0]] == 1:  # the only rank of its node receives alone
                self.receiver_of[self.nic_down[place]] = rank

    def links(self, src: int, dst: int, a: int, b: int) -> tuple[Link, ...]:
        """The links from *src* on node *a* to *dst* on node *b*."""
        sa, sb = self.switch_of[src], self.switch_of[dst]
        hop = (self.root_up[(b, sa)], self.root_down[(b, sb)]) if sa != sb else ()
        if a == b:
            return (self.gpu_up[src], *hop, self.gpu_down[dst])
        return (self.gpu_up[src], self.nic_up[(a, sa)], self.nic_down[(b, sa)], *hop, self.gpu_down[dst])


def idle_settings(spec: NetworkSpec, ranks: list[int]) -> list[str]:
    """Sentences naming the settings of *spec* that change nothing for runs of *ranks*
    ranks: a fat tree whose nodes all fit under one leaf is one switch, tree figures on
    another topology, rails no rank uses."""
    notes = []
    nodes = math.ceil(max(ranks) / spec.ranks_per_node)
    if spec.topology == "fat-tree" and nodes <= spec.hosts_per_leaf:
        notes.append(f"the fat tree's {spec.hosts_per_leaf} hosts per leaf hold all {nodes} nodes of these "
                     "runs under one leaf: it is a single switch here, and its oversubscription changes "
                     "nothing")
    defaults = NetworkSpec()
    if spec.topology != "fat-tree":
        tree = [name for name in ("oversubscription", "hosts_per_leaf", "switch_latency")
                if getattr(spec, name) != getattr(defaults, name)]
        if tree:
            notes.append(f"{', '.join(tree)} describe{'s' if len(tree) == 1 else ''} a fat tree and change "
                         f"nothing on the {spec.topology} topology")
    if spec.torus_dims and spec.topology != "torus":
        notes.append(f"torus_dims changes nothing on the {spec.topology} topology")
    if spec.topology == "pcie-rails" and spec.ranks_per_node < spec.nics_per_node:
        notes.append(f"{spec.ranks_per_node} rank(s) per node use {spec.ranks_per_node} of its "
                     f"{spec.nics_per_node} rails: a rank sends on the rail of its GPU's switch only")
    return notes


def _merged(links: tuple[Link, ...], weights: tuple[float, ...] | None
            ) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
    """*links* with each link once, at the weight of its first crossing: out and back
    through one half-duplex port is one flow on it (a port carries a message once whichever
    way it goes); a core that copies a message out and in has its weight 2 already."""
    unique = tuple(dict.fromkeys(links))
    if len(unique) == len(links):
        return links, weights
    if weights is None:
        return unique, None
    first = {}
    for link, w in zip(links, weights):
        first.setdefault(link, w)
    return unique, tuple(first[link] for link in unique)


def _coords(index: int, dims: tuple[int, ...]) -> list[int]:
    coords = []
    for size in dims:
        index, c = divmod(index, size)
        coords.append(c)
    return coords


def _index(coords: list[int], dims: tuple[int, ...]) -> int:
    index, scale = 0, 1
    for c, size in zip(coords, dims):
        index += c * scale
        scale *= size
    return index
