"""Ring all-reduce: a reduce-scatter then an allgather around the ring ``r -> r+1``."""

from algorithms.schedule import Schedule, ScheduleBuilder, chunk_bounds


def ring(nranks: int, count: int, segments: int = 1) -> Schedule:
    """Reduce-scatter and allgather around a ring, optionally pipelined in *segments*.

    How it works: the buffer is cut into P chunks. In reduce-scatter step s (0..P-2) rank r
    sends chunk ``(r-s) mod P`` to ``r+1`` and reduces chunk ``(r-s-1) mod P`` arriving from
    ``r-1``; after P-1 steps rank r holds the full reduction of chunk ``(r+1) mod P``. The
    allgather then passes the finished chunks around for another P-1 steps, copying.

    With ``segments = S > 1`` each chunk is cut into S segments (lanes) and the 2(P-1)
    logical steps of segment k run at steps ``k .. k+2(P-1)-1``: a software pipeline in
    which segment k is sent while segment k-1 is reduced (the seed study's overlap).

    4 ranks, chunk c owned as reduced after each step (``*`` = fully reduced)::

        step      rank 0   rank 1   rank 2   rank 3
        RS 0      c3+c0    c0+c1    c1+c2    c2+c3     (partial sums of 2)
        RS 2      c1*      c2*      c3*      c0*
        AG 2      all*     all*     all*     all*

    Cost: 2(P-1)α + 2(P-1)/P·nβ + (P-1)/P·nγ.
    """
    if segments < 1:
        raise ValueError(f"ring: segments must be at least 1, got {segments}")
    b = ScheduleBuilder("ring", nranks, count)
    chunks = chunk_bounds(count, nranks)
    for lane in range(segments if nranks > 1 else 0):
        for s in range(2 * (nranks - 1)):
            reduce = s < nranks - 1
            for rank in range(nranks):
                # Reduce-scatter sends chunk r-s; the allgather sends the chunk finished s-(P-1) steps ago.
                chunk = (rank - s) % nranks if reduce else (rank + 1 - (s - nranks + 1)) % nranks
                start, stop = chunk_bounds_segment(chunks[chunk], segments, lane)
                b.transfer(lane + s, rank, (rank + 1) % nranks, start, stop, reduce, lane)
    return b.build()


def chunk_bounds_segment(chunk: tuple[int, int], segments: int, lane: int) -> tuple[int, int]:
    """The element range of segment *lane* of *chunk* (balanced like :func:`chunk_bounds`)."""
    start, stop = chunk_bounds(chunk[1] - chunk[0], segments)[lane]
    return chunk[0] + start, chunk[0] + stop
