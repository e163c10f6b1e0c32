"""Closed-form α-β-γ models of the schedules in :mod:`algorithms`, with the same assumptions
as :mod:`sim.executor`, so that on a network without contention they agree exactly.

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
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.network import NetworkSpec

MODEL_TOPOLOGIES = ("ideal", "switch", "half-duplex")


@dataclass(frozen=True)
class Params:
    """The four figures of the model, in seconds and seconds per byte."""

    alpha: float
    beta: float
    gamma: float
    overhead: float = 0.0

    @classmethod
    def of(cls, spec: NetworkSpec) -> Params:
        """The parameters of a one-rank-per-node *spec* (its bonded NIC bandwidth)."""
        return cls(spec.latency, 1.0 / (spec.bandwidth * spec.nics_per_node), spec.gamma, spec.overhead)


def naive(p: int, n: float, q: Params, topology: str = "ideal") -> float:
    """See :func:`algorithms.naive.naive`. Gather: every rank's message reaches the root
    together (on a switch, all P-1 share the root's down link), then the root reduces them
    one after another. Broadcast: the root issues P-1 sends, one overhead apart; on a switch
    they share its up link, which is never idle once started, so the last one arrives when
    the total work is done: ``max_k (k·o + (P-k)·nβ)`` after the broadcast began, plus α."""
    _check(topology)
    if p < 2 or n == 0:
        return 0.0
    a, b, g, o = q.alpha, q.beta, q.gamma, q.overhead
    if topology == "ideal":
        return o + a + n * b + (p - 1) * n * g + (p - 1) * o + a + n * b
    gather = o + a + (p - 1) * n * b + (p - 1) * n * g
    broadcast = a + max(o + (p - 1) * n * b, (p - 1) * o + n * b)
    return gather + broadcast


def ring(p: int, n: float, q: Params, topology: str = "ideal") -> float:
    """See :func:`algorithms.ring.ring` (one segment): 2(P-1) steps of n/P bytes, the first
    P-1 reducing. ``2(P-1)(o+α) + 2(P-1)/P·nβ + (P-1)/P·nγ`` (β doubled on half-duplex)."""
    _check(topology)
    if p < 2 or n == 0:
        return 0.0
    m = n / p
    both = 2 if topology == "half-duplex" else 1
    return 2 * (p - 1) * (q.overhead + q.alpha + both * m * q.beta) + (p - 1) * m * q.gamma


def rabenseifner(p: int, n: float, q: Params, topology: str = "ideal") -> float:
    """See :func:`algorithms.rabenseifner.rabenseifner`. With p' the largest power of two
    ≤ P: the core is ``2·log2(p')(o+α) + 2(p'-1)/p'·nβ + (p'-1)/p'·nγ``; if P ≠ p', the fold
    adds an exchange of halves with reduction, ``o + α + n/2·(β+γ)``, and the odd rank's
    reduced half to the even, ``o + α + n/2·β``; the unfold sends the whole result,
    ``o + α + nβ``. Every rank of the core waits for the folded ones (each exchange is a
    rendezvous), so the three phases add up. On ``half-duplex`` with P ≠ p' and o > 0 this
    is an upper bound, by less than o per folded pair: the first core message to a folded
    rank starts one overhead before its reply and has the port to itself meanwhile."""
    _check(topology)
    if p < 2 or n == 0:
        return 0.0
    a, b, g, o = q.alpha, q.beta, q.gamma, q.overhead
    both = 2 if topology == "half-duplex" else 1
    pof2 = 1 << (p.bit_length() - 1)
    log = pof2.bit_length() - 1
    core = 2 * log * (o + a) + both * 2 * (pof2 - 1) / pof2 * n * b + (pof2 - 1) / pof2 * n * g
    if pof2 == p:
        return core
    fold = (o + a + n / 2 * (both * b + g)) + (o + a + n / 2 * b)
    unfold = o + a + n * b
    return fold + core + unfold


MODELS = {"naive": naive, "ring": ring, "rabenseifner": rabenseifner}


def predict(algorithm: str, p: int, nbytes: float, q: Params, topology: str = "ideal") -> float:
    """Predicted seconds of *algorithm* on *p* ranks for *nbytes* per rank."""
    try:
        model = MODELS[algorithm]
    except KeyError:
        raise ValueError(f"no closed form for algorithm {algorithm!r}; known: {', '.join(MODELS)}") from None
    return model(p, nbytes, q, topology)


def coefficients(algorithm: str, p: int, nbytes: float, q: Params | None = None,
                 topology: str = "ideal") -> tuple[float, float, float, float]:
    """The multipliers of (α, β, γ, o) in :func:`predict`: the models are linear in the
    parameters, except naive on a switch, linear on each side of its ``max`` (the side
    chosen by *q*, or the bandwidth-bound side when *q* is None)."""
    basis = [Params(1, 0, 0, 0), Params(0, 1, 0, 0), Params(0, 0, 1, 0), Params(0, 0, 0, 1)]
    if algorithm == "naive" and topology != "ideal" and p >= 2 and nbytes:
        wire = q is None or q.overhead + (p - 1) * nbytes * q.beta >= (p - 1) * q.overhead + nbytes * q.beta
        gather = (1.0, (p - 1) * nbytes, (p - 1) * nbytes, 1.0)
        bcast = (1.0, (p - 1) * nbytes, 0.0, 1.0) if wire else (1.0, nbytes, 0.0, p - 1.0)
        return tuple(x + y for x, y in zip(gather, bcast))
    return tuple(predict(algorithm, p, nbytes, e, topology) for e in basis)


def _check(topology: str) -> None:
    if topology not in MODEL_TOPOLOGIES:
        raise ValueError(f"closed forms exist for the {' and '.join(MODEL_TOPOLOGIES)} networks, "
                         f"not {topology!r}")


__all__ = ["MODELS", "MODEL_TOPOLOGIES", "Params", "coefficients", "naive", "predict",
           "rabenseifner", "ring"]
