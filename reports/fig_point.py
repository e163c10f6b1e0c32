"""Figures at one point (one size, one rank count): the seed study's bar chart with speed-ups,
and the per-iteration distribution with the first iteration marked on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
from collbench.reports.captions import caption, ci_words
from collbench.reports.common import (
    NotApplicable,
    Options,
    Plot,
    baseline_of,
    chosen_ranks,
    speedup_text,
    speedups,
)
from collbench.reports.data import ReportData
from collbench.reports.style import (
    SOURCE_HATCHES,
    WIDTHS_IN,
    algorithm_style,
    category_ticks,
    figure,
    format_size,
    format_time_us,
    legend_below,
    rc,
)
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter


def _tick(series: str) -> str:
    return series.replace(" · ", "\n")


def _relative_label(value: float, _pos=None) -> str:
    """Tick label of a time relative to the median: "median", "+10%", "−5%"."""
    if abs(value - 1) < 1e-9:
        return "median"
    return f"{(value - 1) * 100:+.0f}%".replace("-", "\u2212")


def _stem(kind: str, nranks: int, size: int) -> str:
    return f"{kind}_P{nranks}_{format_size(size).replace(' ', '')}"


def _clusters(data: ReportData, rows: pd.DataFrame) -> list[list[tuple[str, pd.DataFrame]]]:
    """Series grouped by what is not the source, so that measured and predicted bars of one
    implementation stand side by side under one label."""
    clusters: dict[tuple, list] = {}
    for name, s in data.series_rows(rows):
        clusters.setdefault((s["algorithm"].iloc[0], s["variant_name"].iloc[0]), []).append((name, s))
    return list(clusters.values())


def bars(data: ReportData, opts: Options, size: int) -> Plot:
    """Bars of median time per series at *size* and the chosen P, CI error bars, and the
    speed-up against the baseline printed over each bar. Bars of one implementation from
    different sources (measured, simulated, model) stand together, hatched by source."""
    nranks = chosen_ranks(data, opts)
    rows = data.summary[(data.summary["nranks"] == nranks) & (data.summary["size_bytes"] == size)]
    if rows.empty:
        raise NotApplicable(f"no results at {format_size(size)}, P = {nranks}")
    baseline = baseline_of(data, opts)
    ratio = speedups(rows, baseline)
    height = 2.8 if opts.width == "single" else 3.0
    fig, ax = figure(opts.width, height)
    clusters = _clusters(data, rows)
    width = 0.8 / max(map(len, clusters))
    fontsize = rc(opts.width)["font.size"] - 1
    # Two-line labels ("82%" over "faster") need about 7 characters; turn them upright when
    # that is wider than a bar (the axes span about the figure width less 0.8 in).
    bar_in = width * (WIDTHS_IN[opts.width] - 0.8) / len(clusters)
    vertical = 7 * 0.55 * fontsize / 72 > 0.95 * bar_in
    ticks, labels, limits = [], [], []
    for k, cluster in enumerate(clusters):
        for j, (name, s) in enumerate(cluster):
            x = k + (j - (len(cluster) - 1) / 2) * width
            row = s.iloc[0]
            style = algorithm_style(row["algorithm"], data.algorithms)
            measured = row["source"] == "measured"
            low, high = row["median_us"] - row["ci_low_us"], row["ci_high_us"] - row["median_us"]
            err = np.nan_to_num(np.array([[max(low, 0)], [max(high, 0)]])) if measured else None
            ax.bar(x, row["median_us"], width=width * 0.92, color=style.colour if measured else "white",
                   edgecolor=style.colour, hatch=SOURCE_HATCHES.get(row["source"], "xx"), linewidth=1.0,
                   yerr=err, capsize=2, error_kw={"elinewidth": 0.8, "ecolor": "0.2"}, label=name, gid=name)
            top = row["median_us"] + (err[1, 0] if err is not None else 0.0)
            r = ratio[s.index[0]]
            text = "baseline" if row["algorithm"] == baseline and abs(r - 1) < 1e-12 else speedup_text(r)
            ax.annotate(text if vertical else text.replace(" ", "\n", 1), (x, top), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=fontsize,
                        rotation=90 if vertical else 0, linespacing=0.9)
            # Room above the bar for its text: a share of the axes' height (about height − 1.1 in).
            text_in = (len(text) * 0.55 if vertical else 2.2) * fontsize / 72 + 0.04
            limits.append(top / max(1 - text_in / (height - 1.1), 0.3))
        ticks.append(k)
        alg, variant = cluster[0][1]["algorithm"].iloc[0], cluster[0][1]["variant_name"].iloc[0]
        labels.append(f"{alg}\n{variant.replace(' · ', chr(10))}" if variant else alg)
    category_ticks(ax, ticks, labels, opts.width)
    ax.set_xlim(-0.6, len(clusters) - 0.4)
    ax.set_ylim(0, max(limits))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_time_us(v) if v else "0"))
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("Median time")
    ax.set_title(f"{format_size(size)}, P = {nranks}: speed vs {baseline}")
    sources = [src for src in data.sources if src in set(rows["source"])]
    if len(sources) > 1:
        legend_below(fig, [Patch(facecolor="0.45" if src == "measured" else "white", edgecolor="0.3",
                                 hatch=SOURCE_HATCHES.get(src, "xx"), label=src) for src in sources],
                     opts.width)
    table = rows.assign(speedup_vs_baseline=ratio, baseline=baseline)[
        ["series", "run", "source", "algorithm", "nranks", "size_bytes", "median_us", "ci_low_us",
         "ci_high_us", "speedup_vs_baseline", "baseline"]]
    what = (f"Median time per implementation at {format_size(size)} and P = {nranks}, with the "
            f"{ci_words(rows)} as error bars; over each bar its speed relative to {baseline} at the same "
            f"point (t_{baseline}/t: “82% faster” means 1.82× the speed). Hatched bars are predictions "
            f"(//// simulated, .... closed-form model), compared with the {baseline} of their own run.")
    return Plot(_stem("bars", nranks, size), f"Implementations at {format_size(size)}, P = {nranks}",
                fig, caption(data, what, rows), table)


RUN_UP = 0.28
"""Offset right of each category where its warm-up iterations and first call are drawn."""


def distribution(data: ReportData, opts: Options, size: int) -> Plot:
    """Per-iteration times at *size* and the chosen P relative to each series' median: a box
    of the timed iterations, warm-up iterations as grey dots, the first iteration as a star
    (pinned to the top edge with its value written when it is far off the scale)."""
    nranks = chosen_ranks(data, opts)
    at = (data.samples["nranks"] == nranks) & (data.samples["size_bytes"] == size) \
        if not data.samples.empty else pd.Series(dtype=bool)
    samples = data.samples[at] if not data.samples.empty else data.samples
    if samples.empty:
        raise NotApplicable(f"no per-iteration samples at {format_size(size)}, P = {nranks} "
                            "(predictions store none)")
    medians = data.summary.set_index(["run", "series", "nranks", "size_bytes"])["median_us"]
    fig, ax = figure(opts.width, 2.8 if opts.width == "single" else 3.0)
    names, rel_rows, firsts = [], [], []
    for i, (name, s) in enumerate(data.series_rows(samples)):
        run = s["run"].iloc[0]
        median = float(medians.loc[(run, name, nranks, size)])
        rel = s.assign(relative=s["time_us"] / median, position=i)
        rel_rows.append(rel)
        colour = algorithm_style(s["algorithm"].iloc[0], data.algorithms).colour
        timed = rel[rel["phase"] == "timed"]["relative"].to_numpy()
        box = ax.boxplot([timed], positions=[i - 0.1], widths=0.4, patch_artist=True, showfliers=True,
                         flierprops={"marker": ".", "markersize": 2, "markeredgecolor": colour},
                         medianprops={"color": "black", "linewidth": 1.0})
        box["boxes"][0].set(facecolor=colour, alpha=0.35, edgecolor=colour, gid=name)
        warm = rel[rel["phase"] == "warmup"]["relative"].to_numpy()
        jitter = np.linspace(-0.06, 0.06, len(warm)) if len(warm) > 1 else np.zeros(len(warm))
        ax.plot(i + RUN_UP + jitter, warm, linestyle="", marker=".", markersize=3, color="0.45",
                gid=f"warmup:{name}")
        first = rel[rel["phase"] == "first"]["relative"].to_numpy()
        firsts += [(i, f) for f in first]
        names.append(f"{_tick(name.removesuffix(' · measured'))}\n{format_time_us(median)}")
    rel = pd.concat(rel_rows)
    body = rel[rel["phase"] != "first"]["relative"]
    top = max(1.0 + 1.6 * (body.max() - 1.0), 1.02) if len(body) else 1.5
    bottom = max(min(1.0 - 1.3 * (1.0 - body.min()), 0.98), 0.0) if len(body) else 0.5
    for i, f in firsts:
        shown = min(f, top)
        ax.plot([i + RUN_UP], [shown], linestyle="", marker="*", markersize=7, color="black",
                markeredgecolor="white", markeredgewidth=0.4, clip_on=False, gid="first")
        if f > top:
            ax.annotate(f"{f:.1f}×", (i + RUN_UP, top), xytext=(0, -3), textcoords="offset points",
                        ha="center", va="top", fontsize="small", linespacing=0.9)
    ax.set_ylim(bottom, top)
    ax.axhline(1.0, color="0.6", linewidth=0.6, zorder=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_relative_label))
    category_ticks(ax, [i - 0.1 for i in range(len(names))], names, opts.width)
    ax.set_xlim(-0.5, len(names) - 0.45)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("Time relative to median")
    ax.set_title(f"Per-iteration times, {format_size(size)}, P = {nranks}")
    legend_below(fig, [
        Patch(facecolor="0.7", edgecolor="0.4", label="timed iterations"),
        Line2D([], [], linestyle="", marker=".", color="0.45", label="warm-up"),
        Line2D([], [], linestyle="", marker="*", markersize=7, color="black",
               label="first iteration"),
    ], opts.width)
    what = (f"Per-iteration all-reduce time (maximum over ranks) at {format_size(size)} and P = {nranks}, "
            f"relative to each implementation's median (printed under its name): boxes show the timed "
            f"iterations (quartiles, whiskers at 1.5 IQR), grey dots the warm-up iterations, the star the "
            f"very first call, pinned to the top edge with its ratio to the median written when it is "
            f"off the scale.")
    point = data.summary[(data.summary["nranks"] == nranks) & (data.summary["size_bytes"] == size)]
    point = point[point["series"].isin(rel["series"].unique())]
    return Plot(_stem("distribution", nranks, size), f"Iteration distribution at {format_size(size)}, "
                f"P = {nranks}", fig, caption(data, what, point),
                rel[["series", "run", "algorithm", "phase", "iter", "time_us", "relative"]])
