"""Rabenseifner's all-reduce: recursive-halving reduce-scatter, recursive-doubling allgather.

Any number of ranks is handled with the fold of Thakur, Rabenseifner & Gropp (2005, §4.4
"reduce-scatter and allgather for non-power-of-two"): with ``p'`` the largest power of two
not above P and ``r = P - p'``, the first ``2r`` ranks pair up (even ``2i`` with odd ``2i+1``).
"""

from algorithms.schedule import Schedule, ScheduleBuilder, chunk_bounds


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
    b = ScheduleBuilder("rabenseifner", nranks, count)
    pof2 = 1 << (nranks.bit_length() - 1)
    extra = nranks - pof2
    fold = _fold(b, extra, count)
    core = [2 * i for i in range(extra)] + list(range(2 * extra, nranks))  # new rank -> rank
    _halving_doubling(b, core, count, first_step=fold)
    log = pof2.bit_length() - 1
    for i in range(extra):
        b.transfer(fold + 2 * log, 2 * i, 2 * i + 1, 0, count, reduce=False)
    return b.build()


def _fold(b: ScheduleBuilder, extra: int, count: int) -> int:
    """Fold the first 2*extra ranks pairwise onto the even ones; return the steps used."""
    half = count // 2
    for i in range(extra):
        even, odd = 2 * i, 2 * i + 1
        b.transfer(0, even, odd, half, count, reduce=True)  # odd reduces the second half
        b.transfer(0, odd, even, 0, half, reduce=True)  # even reduces the first half
        b.transfer(1, odd, even, half, count, reduce=False)  # even gets the reduced second half
    return 2 if extra else 0


def _halving_doubling(b: ScheduleBuilder, core: list[int], count: int, first_step: int) -> None:
    """Recursive halving then doubling among the ranks in *core* (a power-of-two list)."""
    chunks = chunk_bounds(count, len(core))
    held = [(0, len(core))] * len(core)  # chunk-index range each new rank is responsible for
    history = []
    step, distance = first_step, 1
    while distance < len(core):
        history.append(list(held))
        for new in range(len(core)):
            partner = new ^ distance
            lo, hi = held[new]
            mid = (lo + hi) // 2
            give = (mid, hi) if new < partner else (lo, mid)
            b.transfer(step, core[new], core[partner], *_elements(chunks, give), reduce=True)
        held = [_keep(held[new], new, new ^ distance) for new in range(len(core))]
        step, distance = step + 1, distance * 2
    for before in reversed(history):
        distance //= 2
        for new in range(len(core)):
            b.transfer(step, core[new], core[new ^ distance], *_elements(chunks, held[new]),
                       reduce=False)
        held = before
        step += 1


def _keep(span: tuple[int, int], new: int, partner: int) -> tuple[int, int]:
    lo, hi = span
    mid = (lo + hi) // 2
    return (lo, mid) if new < partner else (mid, hi)


def _elements(chunks: list[tuple[int, int]], span: tuple[int, int]) -> tuple[int, int]:
    """The element range covered by the chunk-index range *span* (contiguous)."""
    lo, hi = span
    return chunks[lo][0], chunks[hi - 1][1]
