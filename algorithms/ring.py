"""Ring all-reduce: a reduce-scatter then an allgather around the ring ``r -> r+1``."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from collbench.algorithms.schedule import Kind, OpFields, RankSteps, Schedule, check_size, chunk_bounds


def ring(nranks: int, count: int, segments: int = 1) -> Schedule:
    """Reduce-scatter and allgather around a ring, optionally pipelined in *segments*.

    How it works: the buffer is cut into P chunks. In reduce-scatter step s (0..P-2) rank r
    sends chunk ``(r-s) mod P`` to ``r+1`` and reduces chunk ``(r-s-1) mod P`` arriving from
    ``r-1``; after P-1 steps rank r holds the full reduction of chunk ``(r+1) mod P``. The
    allgather then passes the finished chunks around for another P-1 steps, copying; at
    step s it too sends chunk ``(r-s) mod P`` (the one it finished or received last).

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
    check_size("ring", nranks, count)
    nsteps = segments + 2 * (nranks - 1) - 1 if nranks > 1 else 0
    chunks = chunk_bounds(count, nranks)
    if segments == 1 and count >= nranks and nranks > 1:  # the common case, written out
        return Schedule("ring", nranks, count, RankSteps(nranks, nsteps, partial(_whole_chunks, chunks)))
    # pieces[c][lane]: the element range of segment *lane* of chunk c, None when empty.
    pieces = [[(start + a, start + b) if b > a else None for a, b in chunk_bounds(stop - start, segments)]
              for start, stop in chunks]
    return Schedule("ring", nranks, count,
                    RankSteps(nranks, nsteps, partial(_ring_steps, nranks, segments, pieces)))


def _whole_chunks(chunks: list[tuple[int, int]], rank: int) -> Iterator[tuple[OpFields, ...]]:
    """The steps of *rank* with one lane and no empty chunk (count >= P), as
    :func:`_ring_steps` makes them. Ranks share *chunks*: a copy per rank would be P² memory,
    8 MB at P = 1024, read out of cache."""
    nranks = len(chunks)
    send, reduce, copy = Kind.SEND, Kind.RECV_REDUCE, Kind.RECV_COPY
    nxt, prev, last = (rank + 1) % nranks, (rank - 1) % nranks, nranks - 1
    out = rank  # the chunk sent at step s, r - s; the one received is r - s - 1
    for s in range(2 * last):
        into = out - 1 if out else last
        a, b = chunks[out]
        x, y = chunks[into]
        recv = (reduce if s < last else copy, prev, x, y, 0)
        yield (recv, (send, nxt, a, b, 0)) if rank else ((send, nxt, a, b, 0), recv)
        out = into


def _ring_steps(nranks: int, segments: int, pieces: list[list[tuple[int, int] | None]],
                rank: int) -> Iterator[tuple[OpFields, ...]]:
    """The steps of *rank*, each op as a plain tuple of :class:`Op`'s fields (the simulator
    reads millions of them; see :class:`~collbench.algorithms.schedule.RankSteps`). A step lists its
    lanes in order; in each lane rank 0 lists its send first and every other rank its
    receive first (the order in which the schedule was once built for all ranks together,
    kept so that simulated times stay bit-identical)."""
    if nranks == 1:
        return
    send, reduce, copy = Kind.SEND, Kind.RECV_REDUCE, Kind.RECV_COPY
    nxt, prev, span, last = (rank + 1) % nranks, (rank - 1) % nranks, 2 * (nranks - 1), nranks - 1
    for t in range(segments + span - 1):
        ops: list[OpFields] = []
        for lane in range(max(0, t - span + 1), min(segments, t + 1)):
            s = t - lane  # the lane's logical step; it sends chunk r-s and receives chunk r-s-1
            out_piece, into_piece = pieces[(rank - s) % nranks][lane], pieces[(rank - s - 1) % nranks][lane]
            recv = None
            if into_piece is not None:
                recv = (reduce if s < last else copy, prev, into_piece[0], into_piece[1], lane)
                if rank:
                    ops.append(recv)
            if out_piece is not None:
                ops.append((send, nxt, out_piece[0], out_piece[1], lane))
            if recv is not None and not rank:
                ops.append(recv)
        yield tuple(ops)

