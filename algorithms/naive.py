"""Naive all-reduce: everyone sends to a root, the root reduces and sends the result back."""

from algorithms.schedule import Schedule, ScheduleBuilder

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
    b = ScheduleBuilder("naive", nranks, count)
    for rank in range(1, nranks):
        b.transfer(0, rank, ROOT, 0, count, reduce=True)
        b.transfer(1, ROOT, rank, 0, count, reduce=False)
    return b.build()
