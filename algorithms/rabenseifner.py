"""Rabenseifner's all-reduce: recursive-halving reduce-scatter, recursive-doubling allgather.

Any number of ranks is handled with the fold of Thakur, Rabenseifner & Gropp (2005, §4.4
"reduce-scatter and allgather for non-power-of-two"): with ``p'`` the largest power of two
not above P and ``r = P - p'``, the first ``2r`` ranks pair up (even ``2i`` with odd ``2i+1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from collbench.algorithms.schedule import Kind, Op, RankSteps, Schedule, Step, check_size, chunk_start


def rabenseifner(nranks: int, count: int) -> Schedule:
    """Reduce-scatter by recursive halving, allgather by recursive doubling, for any P.

    How it works (TRG 2005 variant): if P is not a power of two, each pair ``(2i, 2i+1)``
    of the first 2r ranks first exchanges halves (the even rank keeps and reduces the first
    half, the odd one the second), then the odd rank sends its reduced half to the even one,
    which now stands for both and the odd rank waits. The p' remaining ranks (new rank i)
    run the power-of-two core on p' chunks: at distance 1, 2, 4, ... each pair splits its
    current range of chunks in two, the lower new rank keeping the lower half and reducing
    what its partner sends (the halves shrink as the distance doubles, so the largest
    messages go to the nearest partner); the allgather retraces those steps backwards,
    copying. Finally the even ranks of the folded pairs send the whole result to the odd.

    4 ranks (no fold), chunks c0..c3, after each step::

        step          rank 0     rank 1     rank 2     rank 3
        RS d=1        c0,c1 (2)  c2,c3 (2)  c0,c1 (2)  c2,c3 (2)   (sums of 2 ranks)
        RS d=2        c0*        c2*        c1*        c3*
        AG d=2        c0,c1*     c2,c3*     c0,c1*     c2,c3*
        AG d=1        all*       all*       all*       all*

    Cost, P a power of two: 2·log2(P)α + 2(P-1)/P·nβ + (P-1)/P·nγ; otherwise add the fold,
    2α + nβ + n/2·γ, and the unfold, α + nβ (see ``sim.analytic``).
    """
    check_size("rabenseifner", nranks, count)
    pof2 = 1 << (nranks.bit_length() - 1)
    extra = nranks - pof2
    log = pof2.bit_length() - 1
    nsteps = 2 * log + (3 if extra else 0)
    return Schedule("rabenseifner", nranks, count,
                    RankSteps(nranks, nsteps, partial(_rank_steps, nranks, count)))


def _rank_steps(nranks: int, count: int, rank: int) -> Iterator[Step]:
    """The steps of *rank*, in O(log P). In each step with a partner, the lower rank lists
    its send first and the higher its receive first."""
    pof2 = 1 << (nranks.bit_length() - 1)
    extra = nranks - pof2
    log = pof2.bit_length() - 1
    fold = 2 if extra else 0
    steps: list[list[Op]] = [[] for _ in range(fold + 2 * log + (1 if extra else 0))]

    def add(step: int, kind: Kind, peer: int, start: int, stop: int) -> None:
        if start < stop:  # empty ranges are not sent
            steps[step].append(Op(kind, peer, start, stop))

    half = count // 2
    if rank < 2 * extra and rank % 2:  # odd rank of a folded pair: fold, wait, unfold
        even = rank - 1
        add(0, Kind.RECV_REDUCE, even, half, count)  # odd reduces the second half
        add(0, Kind.SEND, even, 0, half)  # even reduces the first half
        add(1, Kind.SEND, even, half, count)  # even gets the reduced second half
        add(fold + 2 * log, Kind.RECV_COPY, even, 0, count)
        yield from map(tuple, steps)
        return
    if rank < 2 * extra:  # even rank of a folded pair: it stands for both in the core
        odd = rank + 1
        add(0, Kind.SEND, odd, half, count)
        add(0, Kind.RECV_REDUCE, odd, 0, half)
        add(1, Kind.RECV_COPY, odd, half, count)
        add(fold + 2 * log, Kind.SEND, odd, 0, count)
    me = rank // 2 if rank < 2 * extra else rank - extra  # new rank in the power-of-two core

    def elements(lo: int, hi: int) -> tuple[int, int]:
        """The element range of core chunks ``lo .. hi-1`` (contiguous)."""
        return chunk_start(count, pof2, lo), chunk_start(count, pof2, hi)

    def pair(step: int, partner: int, mine: tuple[int, int], theirs: tuple[int, int], kind: Kind) -> None:
        """Send chunks *mine* to the core rank *partner* and receive *theirs* from it."""
        peer = 2 * partner if partner < extra else partner + extra
        if me < partner:
            add(step, Kind.SEND, peer, *elements(*mine))
        add(step, kind, peer, *elements(*theirs))
        if me > partner:
            add(step, Kind.SEND, peer, *elements(*mine))

    # Reduce-scatter by recursive halving: at distance d the pair (me, me^d) holds the same
    # chunks; the lower keeps and reduces the lower half, the higher the upper half.
    held, history = (0, pof2), []
    for k in range(log):
        partner = me ^ (1 << k)
        lo, hi = held
        mid = (lo + hi) // 2
        keep, give = ((lo, mid), (mid, hi)) if me < partner else ((mid, hi), (lo, mid))
        pair(fold + k, partner, give, keep, Kind.RECV_REDUCE)
        history.append(held)
        held = keep
    # Allgather by recursive doubling, retracing the halving: the partner holds the sibling half.
    for k in reversed(range(log)):
        partner = me ^ (1 << k)
        lo, hi = before = history[k]
        mid = (lo + hi) // 2
        theirs = (mid, hi) if me < partner else (lo, mid)
        pair(fold + 2 * log - 1 - k, partner, held, theirs, Kind.RECV_COPY)
        held = before
    yield from map(tuple, steps)
