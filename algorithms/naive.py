"""Naive all-reduce: everyone sends to a root, the root reduces and sends the result back."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from collbench.algorithms.schedule import Kind, Op, RankSteps, Schedule, Step, check_size

ROOT = 0


def naive(nranks: int, count: int) -> Schedule:
    """Gather to rank 0 with reduction, then broadcast from rank 0.

    How it works: in step 0 every rank other than the root sends its whole buffer to the
    root, which posts all ``P-1`` receives at once and reduces each arrival into its buffer;
    in step 1 the root sends the result to every other rank, which copies it over its own.

    4 ranks, buffer ``x_r`` on rank r::

        step  rank 0           rank 1..3
        0     x0+x1+x2+x3      x_r (sent to 0)
        1     x0+x1+x2+x3      x0+x1+x2+x3 (copied from 0)

    Cost (flat, root links serialised): 2(P-1)α + 2(P-1)·nβ + (P-1)·nγ.
    """
    check_size("naive", nranks, count)
    return Schedule("naive", nranks, count,
                    RankSteps(nranks, 2 if nranks > 1 else 0, partial(_naive_steps, nranks, count)))


def _naive_steps(nranks: int, count: int, rank: int) -> Iterator[Step]:
    """The two steps of *rank*; the root's hold P-1 ops each, the others' one."""
    if nranks == 1:
        return
    if rank == ROOT:
        others = range(1, nranks) if count else ()
        yield tuple(Op(Kind.RECV_REDUCE, r, 0, count) for r in others)
        yield tuple(Op(Kind.SEND, r, 0, count) for r in others)
    else:
        yield (Op(Kind.SEND, ROOT, 0, count),) if count else ()
        yield (Op(Kind.RECV_COPY, ROOT, 0, count),) if count else ()
