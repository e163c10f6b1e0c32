"""Closed-form α-β-γ models of the schedules in :mod:`algorithms`, with the same assumptions
as :mod:`collbench.sim.executor`, so that on a network without contention they agree exactly.

Notation (Thakur, Rabenseifner & Gropp 2005, plus LogP's overhead): *n* bytes per rank,
*P* ranks, α the latency of a message, β seconds per byte on the wire, γ seconds per byte
to reduce, *o* the sender's CPU overhead per message. A step in which every rank sends
*m* bytes to one peer and reduces *m* bytes from another costs ``o + α + mβ + mγ``.

Each model is exact when the element count splits evenly: ring needs P to divide the
count; Rabenseifner needs the largest power of two p' ≤ P to divide it, and the count to be
even when P is not a power of two. Otherwise the chunks differ by one element and these
formulas use the average chunk, an error below one element's time per step.

Three networks have closed forms: ``ideal`` (every ordered pair of ranks its own link),
``switch`` (one link up and one down per rank) and ``half-duplex`` (one port per rank for
both directions, the shape of ranks copying through one shared-memory host). Naive differs
between ``ideal`` and the others, whose root's links the P-1 messages share. Ring and
Rabenseifner exchange in both directions at once, so on ``half-duplex`` each such step
moves its bytes at half speed (β doubles) while one-way steps keep β.

**One shared-memory host.** With ``memory`` μ > 0 or ``cores`` C > 0 in :class:`Params`,
all P ranks are taken to live on one host (a :class:`~collbench.sim.network.NetworkSpec` with
``ranks_per_node ≥ P``, the per-rank port its ``intra_bandwidth``, ``memory_bandwidth``
1/μ): every message also crosses the host's memory link, and when P > C the ranks share the
cores, so o and γ grow by s = P/C. A step in which k messages move at once, each rank's
port carrying j of them, then moves each byte in ``max(j·β, k·μ)`` (the port or the memory
is the bottleneck; copies that compete for too few cores show up in a fitted μ). These
forms are exact for every P for ring and naive, and for Rabenseifner at P a power of two or
P = 3; for other P its fold overlaps core steps of the unfolded ranks on the memory link,
which the phases-add form ignores.
"""

from __future__ import annotations

from dataclasses import dataclass

from collbench.sim.network import NetworkSpec

MODEL_TOPOLOGIES = ("ideal", "switch", "half-duplex")


@dataclass(frozen=True)
class Params:
    """The four figures of the model, in seconds and seconds per byte."""

    alpha: float
    beta: float
    gamma: float
    overhead: float = 0.0
    memory: float = 0.0
    """μ: seconds per message byte through the host's shared memory; 0 = not modelled."""
    cores: int = 0
    """Cores of the host that all P ranks share; 0 = at least one per rank."""

    @classmethod
    def of(cls, spec: NetworkSpec) -> Params:
        """The parameters of a one-rank-per-node *spec* (its bonded NIC bandwidth)."""
        return cls(spec.latency, 1.0 / (spec.bandwidth * spec.nics_per_node), spec.gamma, spec.overhead)

    @classmethod
    def of_host(cls, spec: NetworkSpec) -> Params:
        """The parameters of ranks all on one node of *spec*, talking over its intra-node
        fabric (``intra_bandwidth`` > 0) and memory."""
        memory = 1.0 / spec.memory_bandwidth if spec.memory_bandwidth > 0 else 0.0
        return cls(spec.intra_latency, 1.0 / spec.intra_bandwidth, spec.gamma, spec.overhead, memory,
                   spec.cores)

    def slowdown(self, p: int) -> float:
        """s: how many times longer CPU work takes with *p* ranks on the host's cores."""
        return p / self.cores if 0 < self.cores < p else 1.0


def _wire(q: Params, ports: int, flows: int, rho: float | None) -> float:
    """Seconds per byte of each of *flows* concurrent messages on the host, each rank's
    port carrying *ports* of them: the slower of the port and the memory. *rho*, if given,
    picks the side as if μ/β were *rho* (the calibration's linearisation)."""
    port, memory = ports * q.beta, flows * q.memory
    if rho is None:
        return port if port >= memory else memory
    return memory if rho > ports / flows else port


def naive(p: int, n: float, q: Params, topology: str = "ideal", rho: float | None = None) -> float:
    """See :func:`collbench.algorithms.naive.naive`. Gather: every rank's message reaches the root
    together (on a switch, all P-1 share the root's down link), then the root reduces them
    one after another. Broadcast: the root issues P-1 sends, one overhead apart; on a switch
    they share its up link, which is never idle once started, so the last one arrives when
    the total work is done: ``max_k (k·o + (P-k)·nβ)`` after the broadcast began, plus α."""
    _check(topology, q)
    if p < 2 or n == 0:
        return 0.0
    s = q.slowdown(p)
    a, g, o = q.alpha, q.gamma * s, q.overhead * s
    if topology == "ideal":
        b = q.beta
        return o + a + n * b + (p - 1) * n * g + (p - 1) * o + a + n * b
    gather = o + a + n * _wire(q, p - 1, p - 1, rho) + (p - 1) * n * g
    b = _wire(q, 1, 1, rho)  # the root's port and the memory carry the same flows
    broadcast = a + max(o + (p - 1) * n * b, (p - 1) * o + n * b)
    return gather + broadcast


def ring(p: int, n: float, q: Params, topology: str = "ideal", rho: float | None = None,
         segments: int = 1) -> float:
    """See :func:`collbench.algorithms.ring.ring`. One segment: 2(P-1) steps of n/P bytes, the first
    P-1 reducing. ``2(P-1)(o+α) + 2(P-1)/P·nβ + (P-1)/P·nγ`` (β doubled on half-duplex).
    More segments: see :func:`ring_segments`."""
    _check(topology, q)
    if p < 2 or n == 0:
        return 0.0
    if segments != 1:
        return ring_segments(p, n, q, topology, segments)
    m = n / p
    s = q.slowdown(p)
    both = 2 if topology == "half-duplex" else 1
    step = q.overhead * s + q.alpha + m * _wire(q, both, p, rho)
    return 2 * (p - 1) * step + (p - 1) * m * q.gamma * s


def ring_segments(p: int, n: float, q: Params, topology: str = "ideal", segments: int = 2) -> float:
    """The pipelined ring, S = *segments*: segment k runs the ring's 2(P-1) logical steps at
    steps k..k+2(P-1)-1, so step t carries a_t segments (those with 0 ≤ t-k < 2(P-1)), r_t of
    them reducing (0 ≤ t-k < P-1), each of m = n/(PS) bytes to the next rank.

    All ranks start a step together (the ring is symmetric), and a step's a_t messages on
    one link share it. With w = j·mβ the time one message would take alone (j = 2 on
    half-duplex, where a port also carries the a_t arriving ones) and g = mγ:

    * o = 0: they all arrive after a_t·w + α, and the reductions follow, so a step takes
      ``α + a_t·w + r_t·g`` and the whole ``(S+2P-3)α + 2(P-1)/P·n·jβ + (P-1)/P·nγ``:
      pipelining gains nothing on a link the segments share.
    * w ≤ o: each message is alone on the link (the next send is issued only o later); the
      i-th arrives at ``i·o + w + α``, and the reductions, from ``a_t·o`` on, one after
      another in order of arrival, end at
      ``max(a·o + r·g, (a-r+1)·o + w + α + r·g, a·o + w + α + g)`` (the reducing segments
      are the last r of the step's sends).
    * otherwise (0 < o < w) the last message arrives at ``o + a_t·w + α`` (the link is busy
      from the first send on), but when each of the others does depends on the processor
      sharing of the staggered flows; this form lets them all arrive with the last, an
      upper bound by less than r_t·g per step (exact when γ = 0).

    Time is the sum over the S+2P-3 steps. On the one-host model the P messages of each
    send index (one per rank) move together, so w = m·max(j·β, P·μ), and o and γ grow
    by s."""
    _check(topology, q)
    if segments < 1:
        raise ValueError(f"segments must be at least 1, got {segments}")
    if p < 2 or n == 0:
        return 0.0
    s = q.slowdown(p)
    both = 2 if topology == "half-duplex" else 1
    m = n / (p * segments)
    o, g = q.overhead * s, m * q.gamma * s
    w = m * _wire(q, both, p, None)
    total = 0.0
    steps = 2 * (p - 1)
    for t in range(segments + steps - 1):
        a = min(t, segments - 1) - max(0, t - steps + 1) + 1
        r = max(0, min(t, segments - 1) - max(0, t - p + 2) + 1)
        if o == 0 or w > o:
            total += o + a * w + q.alpha + r * g
        elif r:
            total += max(a * o + r * g, (a - r + 1) * o + w + q.alpha + r * g, a * o + w + q.alpha + g)
        else:
            total += a * o + w + q.alpha
    return total


def ring_dataflow_bound(p: int, n: float, q: Params, segments: int = 1) -> float:
    """The pipelined ring's bound under dataflow execution (:mod:`collbench.algorithms.dataflow`),
    one rank per node on a full-duplex switch: no schedule of the ring's ops beats it. With
    m = n/(PS) bytes a segment, w = mβ, g = mγ, o the overhead and α the latency, it is the
    largest of

    * the wire: a rank's link carries its 2(P-1)S segments, ``o + 2(P-1)S·w + α``;
    * the reduction: a rank reduces (P-1)S segments, not before one has landed, and the last
      segment reduced still crosses P-1 links: ``α + w + (P-1)S·g + (P-1)(o + α + w)``;
    * the processor: it also posts 2(P-1)S sends, and the last message still lands after
      its work: ``2(P-1)S·o + (P-1)S·g + α + w``;
    * the fill: one segment's own chain, ``2(P-1)(o + α + w) + (P-1)g``.

    Step execution adds the wire and reduction instead (:func:`ring_segments`); dataflow
    approaches the larger of the two as S grows, the fill staying small."""
    if segments < 1:
        raise ValueError(f"segments must be at least 1, got {segments}")
    if p < 2 or n == 0:
        return 0.0
    m = n / (p * segments)
    o, a, w, g = q.overhead, q.alpha, m * q.beta, m * q.gamma
    wire = o + 2 * (p - 1) * segments * w + a
    reduction = a + w + (p - 1) * segments * g + (p - 1) * (o + a + w)
    processor = 2 * (p - 1) * segments * o + (p - 1) * segments * g + a + w
    fill = 2 * (p - 1) * (o + a + w) + (p - 1) * g
    return max(wire, reduction, processor, fill)


def rabenseifner(p: int, n: float, q: Params, topology: str = "ideal", rho: float | None = None) -> float:
    """See :func:`collbench.algorithms.rabenseifner.rabenseifner`. With p' the largest power of two
    ≤ P: the core is ``2·log2(p')(o+α) + 2(p'-1)/p'·nβ + (p'-1)/p'·nγ``; if P ≠ p', the fold
    adds an exchange of halves with reduction, ``o + α + n/2·(β+γ)``, and the odd rank's
    reduced half to the even, ``o + α + n/2·β``; the unfold sends the whole result,
    ``o + α + nβ``. Every rank of the core waits for the folded ones (each exchange is a
    rendezvous), so the three phases add up. On ``half-duplex`` with P ≠ p' and o > 0 this
    is an upper bound, by less than o per folded pair: the first core message to a folded
    rank starts one overhead before its reply and has the port to itself meanwhile."""
    _check(topology, q)
    if p < 2 or n == 0:
        return 0.0
    s = q.slowdown(p)
    a, g, o = q.alpha, q.gamma * s, q.overhead * s
    both = 2 if topology == "half-duplex" else 1
    pof2 = 1 << (p.bit_length() - 1)
    log = pof2.bit_length() - 1
    share = (pof2 - 1) / pof2 * n
    core = 2 * log * (o + a) + 2 * share * _wire(q, both, pof2, rho) + share * g
    if pof2 == p:
        return core
    pairs = p - pof2
    fold = (o + a + n / 2 * (_wire(q, both, 2 * pairs, rho) + g)
            + o + a + n / 2 * _wire(q, 1, pairs, rho))
    unfold = o + a + n * _wire(q, 1, pairs, rho)
    return fold + core + unfold


MODELS = {"naive": naive, "ring": ring, "rabenseifner": rabenseifner}


def predict(algorithm: str, p: int, nbytes: float, q: Params, topology: str = "ideal",
            segments: int = 1) -> float:
    """Predicted seconds of *algorithm* on *p* ranks for *nbytes* per rank (*segments*:
    the ring's pipelining; the other algorithms have none)."""
    try:
        model = MODELS[algorithm]
    except KeyError:
        raise ValueError(f"no closed form for algorithm {algorithm!r}; known: {', '.join(MODELS)}") from None
    if segments != 1:
        if algorithm != "ring":
            raise ValueError(f"{algorithm} has no segments; only ring is pipelined")
        return ring_segments(p, nbytes, q, topology, segments)
    return model(p, nbytes, q, topology)


def coefficients(algorithm: str, p: int, nbytes: float, q: Params | None = None,
                 topology: str = "ideal", rho: float | None = None,
                 cores: int | None = None) -> tuple[float, ...]:
    """The multipliers of (α, β, γ, o, μ) in :func:`predict`, for a host of *q*'s cores.

    The models are linear in the five figures once the side of each ``max`` is chosen:
    the port-or-memory sides as if μ/β were *rho* (port side when None), and naive's
    broadcast side (wire- or overhead-bound) by *q* (the wire side when *q* is None). *cores*
    defaults to *q*'s."""
    if cores is None:
        cores = q.cores if q is not None else 0
    basis = [Params(1, 0, 0, 0, 0, cores), Params(0, 1, 0, 0, 0, cores), Params(0, 0, 1, 0, 0, cores),
             Params(0, 0, 0, 1, 0, cores), Params(0, 0, 0, 0, 1, cores)]
    rho = 0.0 if rho is None else rho
    if algorithm == "naive" and topology != "ideal" and p >= 2 and nbytes:
        s = basis[0].slowdown(p)
        memory = rho > 1  # the side of max(β, μ), in both phases
        wire = (0.0, 0.0, 0.0, 0.0, 1.0) if memory else (0.0, 1.0, 0.0, 0.0, 0.0)
        if q is None:
            wire_bound = True
        else:
            b = _wire(q, 1, 1, rho)
            wire_bound = q.overhead * s + (p - 1) * nbytes * b >= (p - 1) * q.overhead * s + nbytes * b
        gather = tuple((p - 1) * nbytes * x for x in wire)
        gather = (1.0, gather[1], (p - 1) * nbytes * s, s, gather[4])
        k, ko = ((p - 1) * nbytes, s) if wire_bound else (nbytes, (p - 1) * s)
        bcast = (1.0, k * wire[1], 0.0, ko, k * wire[4])
        return tuple(x + y for x, y in zip(gather, bcast))
    if topology == "ideal":  # no host model: μ never appears
        return (*(MODELS[algorithm](p, nbytes, e, topology, rho) for e in basis[:4]), 0.0)
    return tuple(MODELS[algorithm](p, nbytes, e, topology, rho) for e in basis)


def thresholds(p: int) -> set[float]:
    """Every μ/β at which some ``max(j·β, k·μ)`` of the *p*-rank models changes side."""
    return {j / k for j in (1, 2, p - 1) for k in range(1, p + 1)}


def _check(topology: str, q: Params) -> None:
    if topology not in MODEL_TOPOLOGIES:
        raise ValueError(f"closed forms exist for the {' and '.join(MODEL_TOPOLOGIES)} networks, "
                         f"not {topology!r}")
    if topology == "ideal" and (q.memory or q.cores):
        raise ValueError("the one-host model (memory, cores) has closed forms on the switch and "
                         "half-duplex networks, not ideal")


__all__ = ["MODELS", "MODEL_TOPOLOGIES", "Params", "coefficients", "naive", "predict",
           "rabenseifner", "ring", "ring_segments", "thresholds"]
