"""Topologies: the links of a :class:`~collbench.sim.network.NetworkSpec` for *nranks* ranks, and the
route of every message.

Every route is a tuple of :class:`~collbench.sim.fabric.Link` plus its latency. Ranks live on nodes
(:meth:`Topology.node_of`); ranks of one node talk over the intra-node fabric when the spec
has one, and otherwise through the node's NICs like ranks of different nodes. A node's NICs
are one bonded link of ``nics_per_node`` times the NIC bandwidth, up and down: this assumes
the node's traffic spreads evenly over its NICs (true for one rank per NIC, optimistic for
one rank striping over two rails).

Two node resources model a shared-memory host. ``memory_bandwidth`` adds one link per node
that every message between two of its ranks crosses, whatever else it crosses, so all of a
node's intra-node traffic shares it. ``cores`` fewer than a node's ranks slow that node's
CPU work by ranks/cores (:attr:`Topology.cpu_slowdown`), which the executor applies to
overhead and reductions. Copies are not stretched statically: when they compete for the
cores, only the ones running at the time do, which the shared memory link models (a
fitted ``memory_bandwidth`` includes it).

With ``core_sharing = "bound"`` the cores are links instead (:attr:`Topology.core`): rank
*i* of a node is bound to core *i* mod ``cores``, a message between two ranks of a node is
copied by both ranks' cores (it crosses both core links; twice the same one when both ranks
share a core), and the executor runs reductions on the core link too. Only the work running
at a moment shares a core, so a rank that waits leaves its core to the others, but for
``waiting_share`` (the time a polling rank still takes; see :class:`~collbench.sim.fabric.Link`).
"""

from __future__ import annotations

import math
from collections import Counter

from collbench.sim.fabric import Link, alone_rate
from collbench.sim.network import NetworkSpec, SpecError

Route = tuple[tuple[Link, ...], float, float, tuple[float, ...] | None]
"""The links of a route, its latency, its bandwidth when alone (the smallest capacity per
unit of use, before any core's idle ranks take their share), and how much of each link a
byte uses (None: one each; see :attr:`~collbench.sim.fabric.Flow.weights`)."""


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
        self.miss = [spec.miss_fraction(population[n], rank_bytes) for n in self.node_of]
        """Per rank: the fraction φ of its node's copies and reductions that miss the cache
        when each rank holds *rank_bytes* (0 without a cache model)."""
        self.cpu_slowdown = [_slowdown(population[n], spec.cores) for n in self.node_of]
        """Per rank: how many times longer its CPU work takes (its node's ranks over cores, at
        least 1; with bound cores, its overhead only, by the ranks bound to its core)."""
        self.core: list[Link] | None = None
        """Per rank, with ``core_sharing = "bound"``: the link of the core it is bound to."""
        if spec.core_sharing == "bound":
            self.core = self._bind_cores(population)
            load = Counter(map(id, self.core))
            self.cpu_slowdown = [float(load[id(link)]) for link in self.core]
        self.intra_up = self.intra_down = None
        if spec.intra_bandwidth > 0 and spec.ranks_per_node > 1 and self.core is None:  # bound: the cores
            ih = spec.intra_latency / 2
            self.intra_up = [Link(f"rank{r}.intra_up", self._copy_speed(r), ih) for r in range(nranks)]
            self.intra_down = self.intra_up if spec.topology == "half-duplex" else [
                Link(f"rank{r}.intra_down", self._copy_speed(r), ih) for r in range(nranks)]
        self.memory = None
        if spec.memory_bandwidth > 0 and spec.ranks_per_node > 1:
            self.memory = [Link(f"node{n}.memory", spec.memory_bandwidth, 0.0) for n in range(self.nodes)]
        # A node with a single rank has private links: only that rank's messages use them,
        # which lets the executor skip the sharing model (see Simulation._start).
        for rank, node in enumerate(self.node_of):
            if population[node] == 1:
                self.up[node].sender = self.down[node].receiver = rank
        if self.intra_up is not None:
            for rank in range(nranks):
                self.intra_up[rank].sender = self.intra_down[rank].receiver = rank
        if spec.topology == "fat-tree":
            leaves = math.ceil(self.nodes / spec.hosts_per_leaf)
            core_bw = spec.hosts_per_leaf * node_bw / spec.oversubscription
            hop = spec.switch_latency
            self.leaf_up = [Link(f"leaf{i}.up", core_bw, hop) for i in range(leaves)]
            self.leaf_down = [Link(f"leaf{i}.down", core_bw, hop) for i in range(leaves)]
        if spec.topology == "torus":
            self.dims = spec.torus_dims or (self.nodes,)
            if math.prod(self.dims) < self.nodes:
                raise SpecError(f"a torus of {'x'.join(map(str, self.dims))} holds fewer than the "
                                f"{self.nodes} nodes needed")
            self._torus: dict[tuple[int, int], Link] = {}

    def _bind_cores(self, population: Counter) -> list[Link]:
        """The core link each rank is bound to: its index among its node's ranks, mod the
        node's cores (one core per rank when ``cores`` is 0). Each core is one link."""
        spec, half = self.spec, self.spec.intra_latency / 2
        links: dict[tuple[int, int], Link] = {}
        seen: Counter = Counter()
        bound = []
        for node in self.node_of:
            core = seen[node] % (spec.cores or population[node])
            seen[node] += 1
            if (node, core) not in links:
                links[(node, core)] = Link(f"node{node}.core{core}", self._copy_speed(len(bound)), half)
                links[(node, core)].spin = spec.waiting_share
            link = links[(node, core)]
            link.bound |= {len(bound)}
            bound.append(link)
        return bound

    def _copy_speed(self, rank: int) -> float:
        """Bytes per second *rank*'s core copies: the intra-node bandwidth, slowed by the
        bytes that miss the cache."""
        return 1.0 / (1.0 / self.spec.intra_bandwidth + self.miss[rank] * self.spec.beta_miss)

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
            path = self._links(src, dst)
            links = tuple(dict.fromkeys(path))  # out and back through one half-duplex port: one flow on it
            weights = None
            if self.core is not None and len(links) < len(path) and path[0] is path[1]:
                weights = (2.0, *(1.0,) * (len(links) - 1))  # one core copies in and out
            latency = sum(link.latency for link in path)
            if self.core is not None and max(self.cpu_slowdown[src], self.cpu_slowdown[dst]) > 1:
                latency += self.spec.context_switch  # a time-shared core switches to the rank
            # Its links' raw capacity: what idle ranks take from a core is the fabric's to price.
            route = self._routes[key] = (links, latency, alone_rate(links, weights, now=False), weights)
        return route

    def workers(self, src: int, dst: int) -> tuple[int, ...]:
        """The ranks whose cores work at a message from *src* to *dst* (see
        :attr:`~collbench.sim.fabric.Link.spin`): with bound cores on one node, both (the sender's
        core copies it in, the receiver's out); else none."""
        if self.core is None or self.node_of[src] != self.node_of[dst]:
            return ()
        return (src, dst)

    def _links(self, src: int, dst: int) -> tuple[Link, ...]:
        a, b = self.node_of[src], self.node_of[dst]
        if a == b and self.memory is not None:
            return (*self._node_links(src, dst, a), self.memory[a])
        return self._node_links(src, dst, a) if a == b else self._fabric_links(src, dst, a, b)

    def _node_links(self, src: int, dst: int, node: int) -> tuple[Link, ...]:
        """Links between two ranks of *node*, not counting its memory."""
        if self.core is not None:
            return (self.core[src], self.core[dst])
        if self.intra_up is not None:
            return (self.intra_up[src], self.intra_down[dst])
        return self._fabric_links(src, dst, node, node)

    def _fabric_links(self, src: int, dst: int, a: int, b: int) -> tuple[Link, ...]:
        spec = self.spec
        if spec.topology == "ideal":
            link = Link(f"rank{src}->rank{dst}", spec.bandwidth * spec.nics_per_node, spec.latency)
            link.sender = src
            return (link,)
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


def _slowdown(ranks: int, cores: int) -> float:
    """How many times longer CPU work takes when *ranks* share *cores* (0: one each)."""
    return ranks / cores if 0 < cores < ranks else 1.0


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
