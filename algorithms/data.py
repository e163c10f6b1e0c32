"""Inputs whose exact all-reduce is known whatever the reduction order.

Every value is a small integer (stored in the requested dtype), chosen per operator so that
no partial result leaves the range where float16 represents integers exactly (|x| <= 2048):
sums of values in 0..7 over at most 256 ranks, products of +-1 with at most one factor 2 per
element, minima and maxima of values in -50..50. So the expected result compares with ``==``
for every dtype, including float16.
"""

from __future__ import annotations

import numpy as np
from collbench.algorithms.ops import ReduceOp

MAX_EXACT_RANKS = 256
"""Largest rank count for which the SUM inputs stay exact in float16 (7 * 256 < 2048)."""


def make_input(rank: int, nranks: int, count: int, dtype, op: ReduceOp, seed: int = 0,
               xp=np) -> np.ndarray:
    """Rank *rank*'s input of *count* elements; *seed* varies the pattern between checks.

    *xp* is the array module (numpy or CuPy) the buffer is built with."""
    j = xp.arange(count, dtype=xp.int64) + seed
    if op is ReduceOp.SUM:
        values = (j + 3 * rank) % 8
    elif op is ReduceOp.PROD:
        values = xp.where((j + rank) % 3 == 0, -1, 1)
        values = xp.where(j % nranks == rank, 2 * values, values)
    else:
        values = (7 * j + 13 * rank) % 101 - 50
    return values.astype(dtype)


def expected_output(nranks: int, count: int, dtype, op: ReduceOp, seed: int = 0,
                    xp=np) -> np.ndarray:
    """The exact all-reduce of :func:`make_input` over all ranks (O(count) memory)."""
    reduce = getattr(xp, op.ufunc)
    result = make_input(0, nranks, count, dtype, op, seed, xp)
    for rank in range(1, nranks):
        reduce(result, make_input(rank, nranks, count, dtype, op, seed, xp), out=result)
    return result
