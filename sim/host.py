"""Host models: what a node's CPUs and memory add to the network (``host_model``).

The network solver (:mod:`collbench.sim.fabric`) knows links and flows only. A host model
says what the ranks of one node cost each other beyond the network:

* ``none`` (the default): nothing. Each rank has a CPU of its own: it spends ``overhead``
  per message and ``gamma`` per byte reduced at full speed.
* ``static``: the node's ranks time-share its ``cores``, so overhead and reductions take
  ranks/cores times longer (when ranks outnumber cores); every message between two ranks
  of a node also crosses the node's memory, one link of ``memory_bandwidth``; and copies and
  reductions slow down once the node's buffers outgrow ``cache_size`` (a knee). It has
  closed forms (:mod:`collbench.sim.analytic`).
* ``bound``: rank *i* of a node is bound to core *i* mod ``cores``, and each core is a link
  of the same solver (as SimGrid models CPUs), of ``intra_bandwidth`` (one core's copy
  speed): a message between two ranks of the node is copied out by the sender's core and
  in by the receiver's (twice through one core that holds both), and a reduction is a flow
  on its rank's core at 1/``gamma`` bytes per second when alone. What runs on a core at a
  moment shares it max-min fairly; a rank that waits costs nothing.

A :class:`Host` is built per simulation from the spec and the rank-to-node map; the
topology asks it for the links a message between two ranks of one node crosses, and the
executor for each rank's overhead, reduction speed and core.
"""

from __future__ import annotations

from collections import Counter

from collbench.sim.fabric import Link
from collbench.sim.network import NetworkSpec


class Host:
    """The host model ``none``: ranks cost each other nothing but the network."""

    def __init__(self, spec: NetworkSpec, node_of: list[int], rank_bytes: float) -> None:
        self.spec = spec
        self.node_of = node_of
        self.population = Counter(node_of)
        self.miss = [0.0] * len(node_of)
        """Per rank: the fraction of its node's copies and reductions that miss the cache."""
        self.slowdown = [1.0] * len(node_of)
        """Per rank: how many times longer its per-message overhead takes."""
        self.gamma = [spec.gamma] * len(node_of)
        """Per rank: seconds per byte reduced, when the reduction is not a flow on a core."""
        self.core: list[Link] | None = None
        """Per rank, with bound cores: the link of the core it is bound to."""

    def copy_speed(self, rank: int) -> float:
        """Bytes per second at which *rank* copies over the intra-node fabric."""
        return self.spec.intra_bandwidth

    def node_links(self, src: int, dst: int) -> tuple[tuple[Link, ...], tuple[float, ...] | None] | None:
        """The links (and their weights) that carry a message between ranks *src* and *dst*
        of one node instead of the network's; None: the network's."""
        return None

    def memory(self, node: int) -> Link | None:
        """The link every message between two ranks of *node* also crosses, if any."""
        return None


class StaticHost(Host):
    """The host model ``static``: shared cores stretch CPU work, a shared memory link, a
    cache knee."""

    def __init__(self, spec: NetworkSpec, node_of: list[int], rank_bytes: float) -> None:
        super().__init__(spec, node_of, rank_bytes)
        self.miss = [spec.miss_fraction(self.population[n], rank_bytes) for n in node_of]
        self.slowdown = [_slowdown(self.population[n], spec.cores) for n in node_of]
        self.gamma = [(spec.gamma + miss * spec.gamma_miss) * slow
                      for miss, slow in zip(self.miss, self.slowdown)]
        self._memory: dict[int, Link] = {}
        if spec.memory_bandwidth > 0 and spec.ranks_per_node > 1:
            self._memory = {n: Link(f"node{n}.memory", spec.memory_bandwidth, 0.0) for n in self.population}

    def copy_speed(self, rank: int) -> float:
        """The intra-node bandwidth, slowed by the bytes that miss the cache."""
        return 1.0 / (1.0 / self.spec.intra_bandwidth + self.miss[rank] * self.spec.beta_miss)

    def memory(self, node: int) -> Link | None:
        return self._memory.get(node)


class BoundCores(StaticHost):
    """The host model ``bound``: cores are links; copies and reductions are flows on them."""

    def __init__(self, spec: NetworkSpec, node_of: list[int], rank_bytes: float) -> None:
        super().__init__(spec, node_of, rank_bytes)
        half = spec.intra_latency / 2
        links: dict[tuple[int, int], Link] = {}
        seen: Counter = Counter()
        self.core = []
        for rank, node in enumerate(node_of):
            core = seen[node] % (spec.cores or self.population[node])
            seen[node] += 1
            if (node, core) not in links:
                links[(node, core)] = Link(f"node{node}.core{core}", self.copy_speed(rank), half)
            self.core.append(links[(node, core)])
        load = Counter(map(id, self.core))
        self.slowdown = [float(load[id(link)]) for link in self.core]
        self.gamma = [spec.gamma + miss * spec.gamma_miss for miss in self.miss]

    def node_links(self, src: int, dst: int) -> tuple[tuple[Link, ...], tuple[float, ...] | None]:
        """The sender's core copies out, the receiver's in: one core holding both uses 2."""
        a, b = self.core[src], self.core[dst]
        return ((a, a), (2.0, 2.0)) if a is b else ((a, b), None)


HOSTS = {"none": Host, "static": StaticHost, "bound": BoundCores}


def host_model(spec: NetworkSpec, node_of: list[int], rank_bytes: float = 0.0) -> Host:
    """The :class:`Host` of *spec*'s ``host_model`` for ranks on nodes *node_of*, each holding
    *rank_bytes* (for the cache knee)."""
    return HOSTS[spec.host_model](spec, node_of, rank_bytes)


def _slowdown(ranks: int, cores: int) -> float:
    """How many times longer CPU work takes when *ranks* share *cores* (0: one each)."""
    return ranks / cores if 0 < cores < ranks else 1.0
