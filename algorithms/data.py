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

import math

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


def period(nranks: int, dtype, op: ReduceOp) -> int:
    """How many elements the inputs and the result take before they repeat: the patterns
    below depend on the element index j through j mod m (SUM, AVG), j mod 3 and j mod P (PROD),
    or j mod 101 (MIN, MAX). So one period is computed and copied along the buffer, and a
    buffer of any size costs its own bytes and no more (an int64 index array would cost twice
    the message, and every temporary as much again)."""
    if op in (ReduceOp.SUM, ReduceOp.AVG):
        return _sum_modulus(dtype, nranks)
    if op is ReduceOp.PROD:
        return 3 * nranks // math.gcd(3, nranks)
    return 101


def _values(j, rank: int, nranks: int, dtype, op: ReduceOp, xp):
    """Rank *rank*'s input at element indices *j* (already shifted by the seed), as int64."""
    if op in (ReduceOp.SUM, ReduceOp.AVG):
        return (j + 3 * rank) % _sum_modulus(dtype, nranks)
    if op is ReduceOp.PROD:
        values = xp.where((j + rank) % 3 == 0, -1, 1)
        return xp.where(j % nranks == rank, 2 * values, values)
    return (7 * j + 13 * rank) % 101 - 50


def input_period(rank: int, nranks: int, dtype, op: ReduceOp, seed: int = 0, xp=np):
    """The first :func:`period` elements of rank *rank*'s input."""
    j = xp.arange(period(nranks, dtype, op), dtype=xp.int64) + seed
    return _values(j, rank, nranks, dtype, op, xp).astype(numpy_dtype(dtype))


def expected_period(nranks: int, dtype, op: ReduceOp, seed: int = 0, xp=np):
    """The first :func:`period` elements of the exact all-reduce of every rank's input."""
    reduce = getattr(xp, op.ufunc)
    result = input_period(0, nranks, dtype, op, seed, xp)
    for rank in range(1, nranks):
        reduce(result, input_period(rank, nranks, dtype, op, seed, xp), out=result)
    op.finish(result, nranks, xp)
    return result


def fill_periodic(out, pattern):
    """Fill *out* with *pattern* repeated (``out[k] = pattern[k % len(pattern)]``) by doubling
    copies within *out*: no temporary, on numpy and CuPy alike. Returns *out*."""
    filled = min(len(pattern), len(out))
    out[:filled] = pattern[:filled]
    while filled < len(out):
        step = min(filled, len(out) - filled)
        out[filled:filled + step] = out[:step]
        filled += step
    return out


COMPARE_CHUNK = 1 << 16
"""Elements compared at a time by :func:`count_mismatches` (at least one period)."""


def count_mismatches(buf, pattern, differs=None, xp=np) -> int:
    """How many elements of *buf* differ from *pattern* repeated, compared a chunk at a time
    so the check costs a chunk's memory, not the buffer's. *differs(a, b)* is the elementwise
    test (default ``a != b``); *xp* is the buffers' array module."""
    chunk = max(1, COMPARE_CHUNK // len(pattern)) * len(pattern)
    reference = fill_periodic(xp.empty(min(chunk, len(buf)), dtype=pattern.dtype), pattern)
    wrong = 0
    for start in range(0, len(buf), chunk):
        part = buf[start:start + chunk]
        found = part != reference[:len(part)] if differs is None else differs(part, reference[:len(part)])
        wrong += int(found.sum())
    return wrong


def make_input(rank: int, nranks: int, count: int, dtype, op: ReduceOp, seed: int = 0,
               xp=np) -> np.ndarray:
    """Rank *rank*'s input of *count* elements; *seed* varies the pattern between checks.

    *xp* is the array module (numpy or CuPy) the buffer is built with. It allocates the
    buffer and one period (:func:`period`), nothing of the buffer's size besides."""
    out = xp.empty(count, dtype=numpy_dtype(dtype))
    return fill_periodic(out, input_period(rank, nranks, dtype, op, seed, xp))


def expected_output(nranks: int, count: int, dtype, op: ReduceOp, seed: int = 0,
                    xp=np) -> np.ndarray:
    """The exact all-reduce of :func:`make_input` over all ranks (one buffer of *count*)."""
    out = xp.empty(count, dtype=numpy_dtype(dtype))
    return fill_periodic(out, expected_period(nranks, dtype, op, seed, xp))
