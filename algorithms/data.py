"""Inputs whose exact all-reduce is known whatever the reduction order.

Every value is a small integer (stored in the requested dtype), chosen per operator so that
no partial result leaves the range where the dtype represents integers exactly (float16
|x| <= 2048, bfloat16 |x| <= 256): sums of values in 0..m-1 with m = 8, or fewer where
P·7 would pass that range (bfloat16 beyond 36 ranks), products of +-1 with at most one
factor 2 per element, minima and maxima of values in -50..50. Integer types wrap (numpy's
and C's modular arithmetic), which is still exact and order-independent for sums and
products. So the expected result compares with ``==`` for every dtype. AVG uses the SUM
inputs; its result is the exact sum divided once by P (:meth:`ReduceOp.finish`), which every
executor computes the same way, so it compares with ``==`` too.
"""

from __future__ import annotations

import numpy as np
from collbench.algorithms.ops import ReduceOp, numpy_dtype

MAX_EXACT_RANKS = 256
"""Largest rank count for which the SUM inputs stay exact in float16 and bfloat16."""

_EXACT_INTEGERS = {"float16": 2048, "bfloat16": 256}
"""Largest integer up to which every integer is representable, for the narrow floats."""


def _sum_modulus(dtype, nranks: int) -> int:
    """How many distinct values (0..m-1) a SUM input takes: 8, or fewer for narrow floats."""
    limit = _EXACT_INTEGERS.get(numpy_dtype(dtype).name)
    return 8 if limit is None else max(2, min(8, limit // max(nranks, 1) + 1))


def make_input(rank: int, nranks: int, count: int, dtype, op: ReduceOp, seed: int = 0,
               xp=np) -> np.ndarray:
    """Rank *rank*'s input of *count* elements; *seed* varies the pattern between checks.

    *xp* is the array module (numpy or CuPy) the buffer is built with."""
    j = xp.arange(count, dtype=xp.int64) + seed
    if op in (ReduceOp.SUM, ReduceOp.AVG):
        values = (j + 3 * rank) % _sum_modulus(dtype, nranks)
    elif op is ReduceOp.PROD:
        values = xp.where((j + rank) % 3 == 0, -1, 1)
        values = xp.where(j % nranks == rank, 2 * values, values)
    else:
        values = (7 * j + 13 * rank) % 101 - 50
    return values.astype(numpy_dtype(dtype))


def expected_output(nranks: int, count: int, dtype, op: ReduceOp, seed: int = 0,
                    xp=np) -> np.ndarray:
    """The exact all-reduce of :func:`make_input` over all ranks (O(count) memory)."""
    reduce = getattr(xp, op.ufunc)
    result = make_input(0, nranks, count, dtype, op, seed, xp)
    for rank in range(1, nranks):
        reduce(result, make_input(rank, nranks, count, dtype, op, seed, xp), out=result)
    op.finish(result, nranks, xp)
    return result
