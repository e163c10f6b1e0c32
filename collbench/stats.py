"""Statistics of one point, shared by the live table, the results store and the reports, so
that they can never disagree."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95


def busbw_factor(nranks: int) -> float:
    """nccl-tests' all-reduce bus-bandwidth factor 2(P-1)/P: the share of the data every
    link must carry in an optimal algorithm, so busbw compares with link bandwidth."""
    return 2.0 * (nranks - 1) / nranks if nranks > 1 else 0.0


def median_ci(samples: np.ndarray, level: float = CONFIDENCE) -> tuple[float, float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    With B ~ Binomial(n, 1/2) the interval ``[x_(j), x_(n-1-j)]`` (0-based order statistics)
    covers the median with probability ``1 - 2·P(B <= j)``. Returns the narrowest symmetric
    interval reaching *level*, or ``(min, max)`` with its lower level when n is too small.
    Returns ``(low, high, achieved_level)``.
    """
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0.0
    j = _ci_index(n, level)
    if j is None:
        return float(x[0]), float(x[-1]), _coverage(0, n)
    return float(x[j]), float(x[n - 1 - j]), _coverage(j, n)


def _coverage(j: int, n: int) -> float:
    """P(x_(j) <= median <= x_(n-1-j)) for n samples of a continuous distribution: one minus
    twice the Binomial(n, 1/2) probability of at most j samples below the median. Exact integer
    arithmetic (no scipy: importing it costs minutes inside the emulated RDMA guest)."""
    below = sum(math.comb(n, k) for k in range(j + 1))
    return 1.0 - 2.0 * below / 2**n


def _ci_index(n: int, level: float) -> int | None:
    """Largest 0-based j whose interval ``[x_(j), x_(n-1-j)]`` still reaches *level*."""
    best = None
    for j in range((n + 1) // 2):
        if _coverage(j, n) < level:
            break
        best = j
    return best


@dataclass(frozen=True)
class Summary:
    """Statistics over the timed samples of one point, in microseconds and GB/s."""

    iters: int
    min_us: float
    median_us: float
    mean_us: float
    p95_us: float
    max_us: float
    cv: float
    ci_low_us: float
    ci_high_us: float
    ci_level: float
    algbw_GBps: float
    busbw_GBps: float
    time_us: float
    """The point's reported time, from which algbw and busbw come (the median unless the
    caller passes another, e.g. the aggregate timing's mean)."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarise(times_us, size_bytes: int, nranks: int, time_us: float | None = None) -> Summary:
    """Summarise the timed samples *times_us* (each one iteration's time, the ranks' times
    already combined) of one point.

    algbw is bytes / *time_us* (default: the median sample) and busbw = algbw · 2(P-1)/P,
    nccl-tests' definitions."""
    t = np.asarray(times_us, dtype=float)
    if t.size == 0:
        raise ValueError("no timed samples to summarise")
    median = float(np.median(t))
    low, high, level = median_ci(t)
    mean = float(t.mean())
    reported = median if time_us is None else float(time_us)
    algbw = size_bytes / (reported * 1e-6) / 1e9 if reported > 0 else 0.0
    return Summary(
        iters=int(t.size),
        min_us=float(t.min()),
        median_us=median,
        mean_us=mean,
        p95_us=float(np.percentile(t, 95)),
        max_us=float(t.max()),
        cv=float(t.std(ddof=1) / mean) if t.size > 1 and mean > 0 else 0.0,
        ci_low_us=low,
        ci_high_us=high,
        ci_level=level,
        algbw_GBps=algbw,
        busbw_GBps=algbw * busbw_factor(nranks),
        time_us=reported,
    )
