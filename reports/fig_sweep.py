"""Figures over a sweep: time and bus bandwidth against message size (at one rank count), and
time against rank count (at fixed sizes), measured beside simulated and closed-form curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
from collbench.reports.captions import caption
from collbench.reports.common import (
    NotApplicable,
    Options,
    Plot,
    band,
    chosen_ranks,
    chosen_sizes,
    line_style,
)
from collbench.reports.data import ReportData
from collbench.reports.style import figure, format_size, legend_below, legend_handles, size_axis, time_axis
from matplotlib.ticker import FixedLocator, NullLocator

DATA_COLUMNS = ["series", "run", "source", "algorithm", "transport", "nranks", "size_bytes",
                "median_us", "ci_low_us", "ci_high_us", "busbw_GBps"]


def _legend(fig, data: ReportData, rows: pd.DataFrame, width: str) -> None:
    variants = list(dict.fromkeys(rows.sort_values("variant")["variant_name"]))
    sources = [s for s in data.sources if s in set(rows["source"])]
    algs = [a for a in data.algorithms if a in set(rows["algorithm"])]
    legend_below(fig, legend_handles(algs, sources, variants), width)


def _other_ranks(data: ReportData, nranks: int) -> list[str]:
    others = sorted(set(data.summary["nranks"].astype(int)) - {nranks})
    return [f"The results also hold P = {', '.join(map(str, others))} (see the scaling figure)."] \
        if others else []


def time_vs_size(data: ReportData, opts: Options) -> Plot:
    """Median time against message size, log-log, one line per series, 95% CI as a band."""
    nranks = chosen_ranks(data, opts)
    rows = data.summary[(data.summary["nranks"] == nranks) & (data.summary["size_bytes"] > 0)]
    if rows.empty:
        raise NotApplicable(f"no non-zero message sizes at P = {nranks}")
    fig, ax = figure(opts.width)
    for _, s in data.series_rows(rows):
        s = s.sort_values("size_bytes")
        kw = line_style(data, s)
        ax.plot(s["size_bytes"].to_numpy(float), s["median_us"].to_numpy(float), **kw)
        band(ax, s["size_bytes"], s["ci_low_us"], s["ci_high_us"], kw["color"])
    size_axis(ax, rows["size_bytes"].min(), rows["size_bytes"].max(), 6 if opts.width == "single" else 10)
    time_axis(ax)
    ax.set_xlabel("Message size")
    ax.set_ylabel("Median time per all-reduce")
    ax.set_title(f"All-reduce time, P = {nranks}")
    _legend(fig, data, rows, opts.width)
    what = (f"Median time of one all-reduce against message size at P = {nranks} ranks, log-log; "
            f"shaded bands: 95% confidence interval of the median (measured only).")
    return Plot("time_vs_size", "Time vs message size", fig,
                caption(data, what, rows, _other_ranks(data, nranks)), rows[DATA_COLUMNS])


def busbw_vs_size(data: ReportData, opts: Options) -> Plot:
    """Bus bandwidth (nccl-tests' busbw = algbw·2(P-1)/P) against message size."""
    nranks = chosen_ranks(data, opts)
    rows = data.summary[(data.summary["nranks"] == nranks) & (data.summary["size_bytes"] > 0)]
    if rows.empty or nranks < 2:
        raise NotApplicable(f"bus bandwidth needs P ≥ 2 and non-zero sizes (have P = {nranks})")
    fig, ax = figure(opts.width)
    for _, s in data.series_rows(rows):
        s = s.sort_values("size_bytes")
        kw = line_style(data, s)
        ax.plot(s["size_bytes"].to_numpy(float), s["busbw_GBps"].to_numpy(float), **kw)
        # busbw is inversely proportional to time, so the CI of the median maps across.
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = s["busbw_GBps"] * s["median_us"]
            band(ax, s["size_bytes"], scale / s["ci_high_us"], scale / s["ci_low_us"], kw["color"])
    size_axis(ax, rows["size_bytes"].min(), rows["size_bytes"].max(), 6 if opts.width == "single" else 10)
    ax.set_yscale("log")
    ax.set_xlabel("Message size")
    ax.set_ylabel("Bus bandwidth (GB/s)")
    ax.set_title(f"All-reduce bus bandwidth, P = {nranks}")
    _legend(fig, data, rows, opts.width)
    what = (f"Bus bandwidth busbw = S/t · 2(P−1)/P (nccl-tests convention, GB = 10⁹ B, t the median "
            f"time) against message size S at P = {nranks} ranks; bands: from the 95% CI of the median.")
    return Plot("busbw_vs_size", "Bus bandwidth vs message size", fig,
                caption(data, what, rows, _other_ranks(data, nranks)), rows[DATA_COLUMNS])


def scaling(data: ReportData, opts: Options) -> Plot:
    """Median time against rank count at fixed sizes: measured points with CI error bars,
    simulated and closed-form curves, one panel per size."""
    ranks = sorted(data.summary["nranks"].astype(int).unique())
    if len(ranks) < 2:
        raise NotApplicable(f"scaling needs results at two or more rank counts (have P = {ranks[0]})")
    nranks = chosen_ranks(data, opts)
    sizes = chosen_sizes(data, opts, nranks)
    if not opts.sizes:  # show the latency-bound end beside the bandwidth-bound one
        spread = data.summary[data.summary["size_bytes"] > 0].groupby("size_bytes")["nranks"].nunique()
        smallest = int(spread[spread > 1].index.min()) if (spread > 1).any() else sizes[0]
        sizes = sorted({smallest, *sizes})
    double = opts.width == "double"
    shape = (1, len(sizes)) if double else (len(sizes), 1)
    height = 3.0 if double else 1.3 + 1.6 * len(sizes)
    fig, axes = figure(opts.width, height, nrows=shape[0], ncols=shape[1], squeeze=False)
    used = []
    for ax, size in zip(axes.flat, sizes, strict=True):
        rows = data.summary[data.summary["size_bytes"] == size]
        used.append(rows)
        for _, s in data.series_rows(rows):
            s = s.sort_values("nranks")
            kw = line_style(data, s)
            if s["source"].iloc[0] == "measured":
                err = np.vstack([s["median_us"] - s["ci_low_us"], s["ci_high_us"] - s["median_us"]])
                ax.errorbar(s["nranks"].to_numpy(float), s["median_us"].to_numpy(float),
                            yerr=np.nan_to_num(err.clip(0)), capsize=1.5, elinewidth=0.7,
                            **{**kw, "linewidth": 0.8})
            else:
                ax.plot(s["nranks"].to_numpy(float), s["median_us"].to_numpy(float), **kw)
        ax.set_xscale("log", base=2)
        present = sorted(rows["nranks"].astype(int).unique())
        ax.xaxis.set_major_locator(FixedLocator(present))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_minor_locator(NullLocator())
        time_axis(ax)
        ax.set_title(f"{format_size(size)} per rank")
        ax.set_xlabel("Ranks P")
        ax.set_ylabel("Median time")
    rows = pd.concat(used)
    _legend(fig, data, rows, opts.width)
    what = (f"Median all-reduce time against rank count P at "
            f"{', '.join(map(format_size, sizes))}: measured points with 95% CI error bars (solid), "
            f"simulated (dashed) and closed-form model (dotted) curves.")
    return Plot("scaling", "Scaling with rank count", fig, caption(data, what, rows), rows[DATA_COLUMNS])
