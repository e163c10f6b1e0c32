"""Figures over a sweep: time and bus bandwidth against message size (at one rank count), and
time against rank count (at fixed sizes), measured beside simulated and closed-form curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
from collbench.reports.captions import caption, ci_words
from collbench.reports.common import NotApplicable, Options, Plot, band, chosen_ranks, line_style
from collbench.reports.data import ReportData
from collbench.reports.style import (
    WIDTHS_IN,
    figure,
    format_size,
    legend_below,
    legend_handles,
    log_axis,
    plain_number,
    rank_axis,
    size_axis,
    time_axis,
)

DATA_COLUMNS = ["series", "run", "source", "algorithm", "transport", "nranks", "size_bytes",
                "median_us", "ci_low_us", "ci_high_us", "busbw_GBps"]


def _legend(fig, data: ReportData, rows: pd.DataFrame, width: str) -> None:
    variants = list(rows.sort_values("variant").drop_duplicates("variant_name")[["variant_name", "variant"]]
                    .itertuples(index=False, name=None))
    sources = [s for s in data.sources if s in set(rows["source"])]
    algs = [a for a in data.algorithms if a in set(rows["algorithm"])]
    legend_below(fig, legend_handles(algs, sources, variants), width)


def _other_ranks(data: ReportData, nranks: int) -> list[str]:
    others = sorted(set(data.summary["nranks"].astype(int)) - {nranks})
    return [f"The results also hold P = {', '.join(map(str, others))} (see the scaling figure)."] \
        if others else []


def time_vs_size(data: ReportData, opts: Options) -> Plot:
    """Median time against message size, log-log, one line per series, the CI as a band."""
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
            f"shaded bands: {ci_words(rows)} (measured only).")
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
    log_axis(ax, "y", plain_number)
    ax.set_xlabel("Message size")
    ax.set_ylabel("Bus bandwidth (GB/s)")
    ax.set_title(f"All-reduce bus bandwidth, P = {nranks}")
    _legend(fig, data, rows, opts.width)
    what = (f"Bus bandwidth busbw = S/t · 2(P−1)/P (nccl-tests convention, GB = 10⁹ B, t the median "
            f"time) against message size S at P = {nranks} ranks; bands: from the {ci_words(rows)}.")
    return Plot("busbw_vs_size", "Bus bandwidth vs message size", fig,
                caption(data, what, rows, _other_ranks(data, nranks)), rows[DATA_COLUMNS])


def _bandwidth_term(p) -> np.ndarray:
    """(P−1)/P: how the bandwidth term of any all-reduce grows with P at a fixed size per rank."""
    p = np.asarray(p, float)
    return (p - 1) / p


def ideal_and_efficiency(s: pd.DataFrame) -> pd.DataFrame | None:
    """For one series at one size (rows sorted by P): the ideal time from its smallest P₀ ≥ 2,
    t(P₀)·[(P−1)/P]/[(P₀−1)/P₀], and the efficiency ideal/t; None under two such P."""
    s = s[s["nranks"] >= 2]
    if s["nranks"].nunique() < 2:
        return None
    p0, t0 = float(s["nranks"].iloc[0]), float(s["median_us"].iloc[0])
    ideal = t0 * _bandwidth_term(s["nranks"]) / _bandwidth_term(p0)
    return s.assign(ideal_us=ideal, efficiency=ideal / s["median_us"].to_numpy(float))


IDEAL_STYLE = {"linestyle": (0, (1, 1.5)), "linewidth": 0.7, "alpha": 0.55, "marker": None}


def _scaling_sizes(data: ReportData, opts: Options) -> list[int]:
    """The sizes of the scaling figure: *opts.sizes*, else the largest and smallest sizes at
    which some series holds two or more rank counts (bandwidth- and latency-bound ends)."""
    rows = data.summary[(data.summary["size_bytes"] > 0) & (data.summary["nranks"] >= 2)]
    spread = rows.groupby(["series", "size_bytes"])["nranks"].nunique()
    scaled = sorted({int(s) for (_, s), n in spread.items() if n > 1})
    if opts.sizes:
        return [s for s in opts.sizes if s in scaled]
    return sorted({scaled[0], scaled[-1]}) if scaled else []


def scaling(data: ReportData, opts: Options) -> Plot:
    """At fixed sizes per rank: median time against P (top, with each series' ideal) and the
    parallel efficiency against the bandwidth-term ideal (bottom), one column per size. Runs
    that differ only in P (a Slurm sweep) are one series, so each line is one campaign."""
    sizes = _scaling_sizes(data, opts)
    if not sizes:
        wanted = f" at {', '.join(map(format_size, opts.sizes))}" if opts.sizes else ""
        raise NotApplicable(f"scaling needs a series with two or more rank counts P ≥ 2 at one size{wanted}")
    fig, axes = figure(opts.width, 3.6 if opts.width == "single" else 3.4, nrows=2, ncols=len(sizes),
                       squeeze=False, sharex="col", height_ratios=[1.5, 1])
    panel_in = (WIDTHS_IN[opts.width] - 0.5) / len(sizes) - 0.45
    used, table = [], []
    for col, size in enumerate(sizes):
        top, bottom = axes[0, col], axes[1, col]
        rows = data.summary[(data.summary["size_bytes"] == size) & (data.summary["nranks"] >= 2)]
        used.append(rows)
        for _, s in data.series_rows(rows):
            s = s.sort_values("nranks")
            kw = line_style(data, s)
            x, y = s["nranks"].to_numpy(float), s["median_us"].to_numpy(float)
            if s["source"].iloc[0] == "measured":
                err = np.vstack([s["median_us"] - s["ci_low_us"], s["ci_high_us"] - s["median_us"]])
                top.errorbar(x, y, yerr=np.nan_to_num(err.clip(0)), capsize=1.5, elinewidth=0.7,
                             **{**kw, "linewidth": 0.8})
            else:
                top.plot(x, y, **kw)
            ideal = ideal_and_efficiency(s)
            if ideal is None:
                continue
            table.append(ideal)
            top.plot(ideal["nranks"].to_numpy(float), ideal["ideal_us"].to_numpy(float), color=kw["color"],
                     gid=f"ideal:{kw['gid']}", **IDEAL_STYLE)
            bottom.plot(ideal["nranks"].to_numpy(float), ideal["efficiency"].to_numpy(float),
                        **{**kw, "gid": f"efficiency:{kw['gid']}"})
        present = rows["nranks"].astype(int).unique()
        for ax in (top, bottom):
            rank_axis(ax, present, panel_in)
        time_axis(top)
        bottom.axhline(1.0, color="0.5", linewidth=0.7, zorder=0)
        bottom.set_ylim(0, max(1.1, float(np.nanmax([t["efficiency"].max() for t in table] or [1])) * 1.05))
        top.set_title(f"{format_size(size)} per rank")
        top.tick_params(labelbottom=False)
        bottom.set_xlabel("Ranks P")
        if col == 0:
            top.set_ylabel("Median time")
            bottom.set_ylabel("Efficiency")
    rows = pd.concat(used)
    _legend(fig, data, rows, opts.width)
    what = (f"Strong scaling of all-reduce at {', '.join(map(format_size, sizes))} per rank. Top: median "
            f"time against rank count P, measured points with {ci_words(rows, short=True)} error bars "
            f"(solid), simulated "
            f"(dashed) and closed-form model (dotted) curves; runs that differ only in P form one line. "
            f"Faint dotted lines: each series' ideal, the bandwidth term of all-reduce (every algorithm "
            f"moves at least 2(P−1)/P·S bytes per rank), held at the bus bandwidth of the series' "
            f"smallest P₀ ≥ 2: t_ideal(P) = t(P₀)·[(P−1)/P]/[(P₀−1)/P₀]. Bottom: parallel efficiency "
            f"t_ideal/t = busbw(P)/busbw(P₀); 1 is ideal. The ideal bounds the time only where the "
            f"bandwidth term dominates (large sizes); at latency-bound sizes it ignores the latency "
            f"term, so efficiency there may fall far below 1 or even exceed it.")
    data_out = pd.concat(table)[DATA_COLUMNS + ["ideal_us", "efficiency"]] if table else rows[DATA_COLUMNS]
    return Plot("scaling", "Scaling with rank count", fig, caption(data, what, rows), data_out)
