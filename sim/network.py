"""Network descriptions: what a user writes in a preset or on the command line.

A :class:`NetworkSpec` is plain data (a TOML table maps onto it field for field); a
:class:`~collbench.sim.topology.Topology` built from it for a given number of ranks holds the actual
links. Figures are in SI base units: bytes per second, seconds, seconds per byte.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from numbers import Real

TOPOLOGIES = ("ideal", "switch", "half-duplex", "fat-tree", "torus", "pcie-rails")
PLACEMENTS = ("block", "cyclic")
HOST_MODELS = ("none", "static", "bound")
HOST_FIGURES = ("memory_bandwidth", "cores", "cache_size", "beta_miss", "gamma_miss")


class SpecError(ValueError):
    """A network description names an impossible figure; the message says which."""


@dataclass(frozen=True)
class NetworkSpec:
    """A network and the nodes on it, for any number of ranks."""

    name: str = "custom"
    topology: str = "switch"
    """``ideal`` (every ordered pair of ranks has its own link: no contention at all),
    ``switch`` (each node one up and one down link to a single non-blocking switch),
    ``half-duplex`` (a switch whose nodes have one port carrying both directions: the
    model of ranks on one shared-memory host, each copying through its own core; with an
    intra-node fabric, each rank's port on it carries both directions too),
    ``fat-tree`` (two levels: leaf switches of *hosts_per_leaf* nodes, joined by a core
    whose capacity is the leaves' host capacity divided by *oversubscription*) or ``torus``
    (nodes on a ring or torus of *torus_dims*, dimension-order routing) or ``pcie-rails``
    (nodes whose ranks sit on GPUs behind PCIe switches, one NIC per switch, each NIC on
    its own rail: a non-blocking switch joining that NIC of every node; see
    :class:`~collbench.sim.topology.PcieRails`)."""
    bandwidth: float = 12.5e9
    """Bytes per second of one NIC, in each direction."""
    latency: float = 1e-6
    """Seconds from a send to its first byte's arrival between two nodes on one switch (the
    α of the closed forms); on a torus, per hop."""
    nics_per_node: int = 1
    """NICs of a node; the node's ranks share them as one bonded link of this many NICs
    (on ``pcie-rails``: the rails, each NIC behind its own PCIe switch)."""
    pcie_bandwidth: float = 0.0
    """``pcie-rails``: bytes per second, each direction, of a GPU's PCIe link to its switch
    and of a switch's link to the CPU's root complex (which carries traffic between
    switches); e.g. PCIe 3.0 x16, 15.75 GB/s."""
    ranks_per_node: int = 1
    intra_bandwidth: float = 0.0
    """Bytes per second per rank, each direction, of the intra-node fabric (NVLink-like); 0
    means ranks of one node talk through the NIC like any others."""
    intra_latency: float = 0.0
    hosts_per_leaf: int = 16
    oversubscription: float = 1.0
    switch_latency: float = 0.0
    """Extra seconds per additional switch crossed (leaf to core to leaf)."""
    torus_dims: tuple[int, ...] = ()
    """Torus shape; empty means a ring of all the nodes."""
    placement: str | tuple[int, ...] = "block"
    """``block`` (ranks 0..k-1 on node 0, ...), ``cyclic`` (consecutive ranks on different
    nodes; on a fat tree, on different leaves) or an explicit node per rank."""
    gamma: float = 0.0
    """Seconds per byte to reduce an incoming message into the buffer."""
    overhead: float = 0.0
    """Seconds of a sender's CPU per message, before the message leaves (LogP's o)."""
    host_model: str = "none"
    """What a node's CPUs and memory add to the network (:mod:`collbench.sim.host`): ``none``
    (each rank a CPU of its own, nothing shared but links), ``static`` (cores time-shared by
    ranks/cores, a memory link, a cache knee; closed forms) or ``bound`` (ranks bound to
    cores, each core a link of the flow solver; needs *intra_bandwidth*)."""
    memory_bandwidth: float = 0.0
    """Host model: bytes per second of one node's memory system, shared by every message
    between two ranks of that node (one link all of them cross, counted in message bytes, so
    about half a STREAM copy figure for single-copy transports); 0 means not modelled.
    Reductions do not use it."""
    cores: int = 0
    """Host model: CPU cores of one node; 0 means one per rank."""
    cache_size: float = 0.0
    """Host model: bytes of a node's all-reduce buffers its caches hold; 0 means no cache is
    modelled. When the node's ranks hold more (its ranks times the bytes per rank), the
    fraction ``φ = 1 - cache_size / that`` of every byte copied or reduced on the node
    misses the cache and costs *beta_miss* and *gamma_miss* more."""
    beta_miss: float = 0.0
    """Host model: seconds per byte added to a copy between two ranks of a node for bytes
    that miss the cache (see *cache_size*)."""
    gamma_miss: float = 0.0
    """Host model: seconds per byte added to a reduction for bytes that miss the cache."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", "int") and (isinstance(value, bool) or not isinstance(value, Real)):
                raise SpecError(f"{f.name} must be a number, not {value!r}")
            if f.type == "str" and not isinstance(value, str):
                raise SpecError(f"{f.name} must be a string, not {value!r}")
        if self.topology not in TOPOLOGIES:
            raise SpecError(f"unknown topology {self.topology!r}; choose one of {', '.join(TOPOLOGIES)}")
        for name in ("bandwidth",):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise SpecError(f"{name} must be a positive number, got {getattr(self, name)}")
        for name in ("latency", "intra_bandwidth", "intra_latency", "switch_latency", "gamma", "overhead",
                     "memory_bandwidth", "cache_size", "beta_miss", "gamma_miss", "pcie_bandwidth"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise SpecError(f"{name} must be a non-negative number, got {value}")
        for name in ("nics_per_node", "ranks_per_node", "hosts_per_leaf"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise SpecError(f"{name} must be a whole number of at least 1, got {getattr(self, name)}")
        if int(self.cores) != self.cores or self.cores < 0:
            raise SpecError(f"cores must be a whole number of at least 0 (0: one per rank), got {self.cores}")
        if not self.oversubscription >= 1:
            raise SpecError(f"oversubscription must be at least 1, got {self.oversubscription}")
        if any(int(d) != d or d < 1 for d in self.torus_dims):
            raise SpecError(f"torus_dims must be positive whole numbers, got {self.torus_dims}")
        if self.topology == "pcie-rails" and not self.pcie_bandwidth > 0:
            raise SpecError("the pcie-rails topology needs pcie_bandwidth, a GPU's PCIe link speed")
        if self.pcie_bandwidth and self.topology != "pcie-rails":
            raise SpecError(f"pcie_bandwidth is a figure of the pcie-rails topology, not {self.topology}")
        if self.host_model not in HOST_MODELS:
            raise SpecError(f"unknown host_model {self.host_model!r}; choose none, static or bound")
        if self.host_model == "none":
            used = [name for name in HOST_FIGURES if getattr(self, name)]
            if used:
                raise SpecError(f"{used[0]} is a figure of the host model, which is off: set host_model "
                                "(--host-model) to static or bound")
        if self.host_model == "bound" and not self.intra_bandwidth > 0:
            raise SpecError("host_model = 'bound' needs intra_bandwidth, one core's copy speed")
        if isinstance(self.placement, str) and self.placement not in PLACEMENTS:
            raise SpecError(f"unknown placement {self.placement!r}; choose block, cyclic or a list of nodes")

    def miss_fraction(self, ranks: int, rank_bytes: float) -> float:
        """φ: the fraction of the bytes a node copies or reduces that miss its cache, when
        *ranks* ranks hold *rank_bytes* each (see *cache_size*)."""
        held = ranks * rank_bytes
        if not self.cache_size or held <= self.cache_size:
            return 0.0
        return 1.0 - self.cache_size / held

    def with_overrides(self, **changes) -> NetworkSpec:
        """A copy with the non-None *changes* applied (command-line overrides)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict:
        """The description as plain data, for ``run.json`` and calibration files."""
        data = asdict(self)
        data["torus_dims"] = list(self.torus_dims)
        if not isinstance(self.placement, str):
            data["placement"] = list(self.placement)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NetworkSpec:
        """Build from a TOML/JSON table; raises SpecError naming an unknown key."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown network keys {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(known))}")
        data = dict(data)
        if "torus_dims" in data:
            data["torus_dims"] = tuple(data["torus_dims"])
        if isinstance(data.get("placement"), list):
            data["placement"] = tuple(data["placement"])
        try:
            return cls(**data)
        except TypeError as e:
            raise SpecError(f"bad network description: {e}") from None
