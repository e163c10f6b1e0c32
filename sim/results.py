"""Predictions as results: rows in the measured results' schema, so reports can put measured
and predicted side by side.

A predicted point has one time, so every statistic (min, median, mean, p95, max, the
confidence interval) is that time; ``iters`` is 0, ``first_us`` and ``ci_level`` are NaN and
``n_wrong`` is -1 (nothing was checked). ``source`` is ``simulated`` (the SimPy executor) or
``model`` (a closed form); ``transport`` is the network's name.
"""

from __future__ import annotations

import math

from collbench.stats import busbw_factor


def summary_row(*, source: str, network: str, algorithm: str, nranks: int, size_bytes: int,
                dtype: str, itemsize: int, seconds: float, ranks_per_node: int, op: str = "sum",
                in_place: bool = False) -> dict:
    """One summary row, with every column of :data:`collbench.schema.SUMMARY_COLUMNS`."""
    us = seconds * 1e6
    algbw = size_bytes / seconds / 1e9 if seconds > 0 else math.nan
    return {
        "source": source, "transport": network, "algorithm": algorithm, "nranks": nranks,
        "size_bytes": size_bytes, "dtype": dtype, "op": op, "in_place": in_place,
        "count": size_bytes // itemsize, "ranks_per_node": ranks_per_node, "iters": 0,
        "first_us": math.nan, "min_us": us, "median_us": us, "mean_us": us, "p95_us": us,
        "max_us": us, "cv": 0.0, "ci_low_us": us, "ci_high_us": us, "ci_level": math.nan,
        "algbw_GBps": algbw, "busbw_GBps": algbw * busbw_factor(nranks), "n_wrong": -1,
    }
