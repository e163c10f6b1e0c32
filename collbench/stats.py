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
    interval reaching *level*, or ``(min, max)`` with its lower level when n is too small (fewer
    than 6 samples at 95%). Returns ``(low, high, achieved_level)``.
    """
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0.0
    j, achieved = ci_order(n, level)
    return float(x[j]), float(x[n - 1 - j]), achieved


def ci_order(n: int, level: float = CONFIDENCE) -> tuple[int, float]:
    """``(j, achieved)``: the largest 0-based j whose interval ``[x_(j), x_(n-1-j)]`` of n samples
    covers the median with probability at least *level*, and that probability; ``(0, coverage
    of min..max)`` when even min..max falls short. Depends on n alone, so a sweep's level is
    known before it measures."""
    cdf = _binomial_half_cdf(n)
    coverage = 1.0 - 2.0 * cdf[: (n + 1) // 2]
    reaching = np.flatnonzero(coverage >= level)
    j = int(reaching[-1]) if reaching.size else 0
    return j, float(coverage[j])


def _binomial_half_cdf(n: int) -> np.ndarray:
    """P(B <= k) for k = 0..n, B ~ Binomial(n, 1/2), in log space: 2**-n underflows from
    n = 1075 and ``2**n`` overflows a float from n = 1024. Terms are ``exp(log C(n, k) - n·log 2)``
    with ``log C(n, k)`` a running sum of ``log((n-i)/(i+1))``; the far tails underflow to 0,
    which is what they are at double precision. numpy only (scipy's import costs minutes inside
    the emulated RDMA guest)."""
    i = np.arange(n, dtype=float)
    log_comb = np.concatenate(([0.0], np.cumsum(np.log(n - i) - np.log(i + 1))))
    return np.minimum(np.cumsum(np.exp(log_comb - n * math.log(2.0))), 1.0)


def level_percent(level: float) -> str:
    """*level* as a percentage rounded down to a tenth, never overstating it: 0.958 -> "95.8%",
    0.75 -> "75%"."""
    tenths = math.floor(level * 1000 + 1e-9) / 10
    return f"{tenths:g}%"


def levels_text(levels) -> str:
    """The confidence level of intervals whose levels are *levels* (NaN: no interval, e.g. a
    prediction), for headers and captions: "95.8%", "75%–95.8%" when they differ (runs of
    different -n), or "" when none is known."""
    known = np.asarray(levels, dtype=float)
    known = known[np.isfinite(known)]
    if not known.size:
        return ""
    low, high = level_percent(known.min()), level_percent(known.max())
    return low if low == high else f"{low}–{high}"


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
    reported_us: float
    """The point's reported time, from which algbw and busbw come (the median unless the
    caller passes another, e.g. the aggregate timing's mean)."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarise(times_us, size_bytes: int, nranks: int, reported_us: float | None = None) -> Summary:
    """Summarise the timed samples *times_us* (each one iteration's time, the ranks' times
    already combined) of one point.

    algbw is bytes / *reported_us* (default: the median sample) and busbw = algbw · 2(P-1)/P,
    nccl-tests' definitions."""
    t = np.asarray(times_us, dtype=float)
    if t.size == 0:
        raise ValueError("no timed samples to summarise")
    median = float(np.median(t))
    low, high, level = median_ci(t)
    mean = float(t.mean())
    reported = median if reported_us is None else float(reported_us)
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
        reported_us=reported,
    )
