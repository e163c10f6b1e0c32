"""Figures that set predictions against measurements: predicted vs measured with the error of
every point, and the map of which algorithm wins at each (size, ranks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from collbench.reports.captions import caption
from collbench.reports.common import NotApplicable, Options, Plot, chosen_ranks
from collbench.reports.data import PREDICTED, ReportData
from collbench.reports.style import (
    SOURCE_HATCHES,
    SOURCE_LINESTYLES,
    algorithm_style,
    figure,
    format_size,
    legend_below,
    size_axis,
    time_axis,
)
from collbench.reports.systems import linked_pairs, unlinked
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

MATCH = ["algorithm", "nranks", "size_bytes"]
"""Predictions are matched to measurements by algorithm, ranks and bytes: a simulator models
bytes on links, whatever dtype or transport label it gives its rows."""


def matched(data: ReportData) -> pd.DataFrame:
    """Every (measured, predicted) pair of rows at the same point, with the relative error;
    a prediction is paired only with the measured runs it is linked to
    (:func:`collbench.reports.systems.linked_pairs`)."""
    s = data.summary[data.summary["size_bytes"] > 0]
    links = pd.DataFrame(sorted(linked_pairs(data)), columns=["run_meas", "run_pred"])
    measured = s[s["source"] == "measured"]
    predicted = s[s["source"].isin(PREDICTED)]
    pairs = measured.merge(predicted, on=MATCH, suffixes=("_meas", "_pred")) \
        .merge(links, on=["run_meas", "run_pred"])
    pairs["error_pct"] = (pairs["median_us_pred"] / pairs["median_us_meas"] - 1.0) * 100.0
    return pairs


def predicted_vs_measured(data: ReportData, opts: Options) -> Plot:
    """Top: predicted against measured median time, all points, with y = x. Bottom: the
    relative error of each prediction against message size at the chosen P."""
    pairs = matched(data)
    if pairs.empty:
        if not data.summary["source"].isin(PREDICTED).any():
            raise NotApplicable("no simulated or model results were given; pass a folder written by "
                                "`collbench sim` beside the measured ones")
        if not (data.summary["source"] == "measured").any():
            raise NotApplicable("no measured results were given to compare the predictions with")
        reasons = "; ".join(f"“{run}”: {why}" for run, why in unlinked(data).items())
        raise NotApplicable("no prediction is linked to a measured run given at a measured (algorithm, "
                            "ranks, size), and a prediction is set only against the measurements it "
                            f"was calibrated from or their system{' (' + reasons + ')' if reasons else ''}; "
                            "make one with `collbench sim calibrate` then `collbench sim predict "
                            "--calibration F` without --network")
    nranks = chosen_ranks(data, opts)
    if not (pairs["nranks"] == nranks).any():  # the panel below would be empty
        nranks = int(pairs.groupby("nranks").size().idxmax())
    fig, (top, bottom) = figure(opts.width, 4.4 if opts.width == "single" else 4.0, nrows=2,
                                height_ratios=[1.25, 1])
    algs = data.algorithms
    keys = ["algorithm", "source_pred", "series_meas", "series_pred"]
    for (alg, src, meas, pred), p in pairs.groupby(keys):
        style = algorithm_style(alg, algs)
        fill = "full" if src == "simulated" else "none"
        top.plot(p["median_us_meas"], p["median_us_pred"], linestyle="", marker=style.marker,
                 color=style.colour, fillstyle=fill, markersize=3, gid=f"{pred} vs {meas}")
        at = p[p["nranks"] == nranks].sort_values("size_bytes")
        bottom.plot(at["size_bytes"], at["error_pct"], color=style.colour, marker=style.marker,
                    fillstyle=fill, markersize=3, linestyle=SOURCE_LINESTYLES.get(src, "-."),
                    gid=f"{pred} vs {meas}")
    lo = min(pairs["median_us_meas"].min(), pairs["median_us_pred"].min()) / 1.5
    hi = max(pairs["median_us_meas"].max(), pairs["median_us_pred"].max()) * 1.5
    top.plot([lo, hi], [lo, hi], color="0.5", linewidth=0.7, zorder=0)
    top.set_xlim(lo, hi)
    top.set_ylim(lo, hi)
    time_axis(top, "x")
    time_axis(top)
    top.set_xlabel("Measured median time")
    top.set_ylabel("Predicted")
    top.set_title("Predicted vs measured (all points; grey: y = x)")
    at = pairs[pairs["nranks"] == nranks]
    if not at.empty:
        size_axis(bottom, at["size_bytes"].min(), at["size_bytes"].max(),
                  6 if opts.width == "single" else 10)
    bottom.axhline(0, color="0.5", linewidth=0.7, zorder=0)
    bottom.set_xlabel("Message size")
    bottom.set_ylabel("Error (%)")
    bottom.set_title(f"Prediction error at P = {nranks}")
    sources = [s for s in data.sources if s in set(pairs["source_pred"])]
    handles = [Line2D([], [], color=algorithm_style(a, algs).colour, marker=algorithm_style(a, algs).marker,
                      linestyle="", label=a) for a in algs if a in set(pairs["algorithm"])]
    handles += [Line2D([], [], color="0.35", marker="o", fillstyle="full" if s == "simulated" else "none",
                       linestyle=SOURCE_LINESTYLES.get(s, "-."), label=s) for s in sources]
    legend_below(fig, handles, opts.width)
    what = ("Predicted against measured median all-reduce time (top, every point with both; filled "
            "markers simulated, open markers closed-form model) and the relative error "
            f"100·(predicted/measured − 1) against message size at P = {nranks} (bottom).")
    what += (" Each prediction is set only against the measured runs its run.json links it to: those it "
             "was calibrated from, or runs on the same hosts and processor.")
    left = unlinked(data)
    notes = [f"Not compared: {'; '.join(f'“{run}”, {why}' for run, why in left.items())}."] if left else []
    rows = data.summary[data.summary["run"].isin(set(pairs["run_meas"]) | set(pairs["run_pred"]))]
    table = pairs[["algorithm", "nranks", "size_bytes", "run_meas", "run_pred", "series_meas", "series_pred",
                   "median_us_meas",
                   "median_us_pred", "error_pct"]]
    return Plot("predicted_vs_measured", "Predicted vs measured", fig, caption(data, what, rows, notes),
                table)


def panel_title(data: ReportData, campaign: str, runs) -> str:
    """"measured: demo" or "simulated: network ib-edr" for a winner-map panel."""
    name, source, _ = campaign.split("|", 2)
    if source in PREDICTED:
        network = data.runs[runs[0]].get("network")
        net = network.get("name") if isinstance(network, dict) else network
        return f"{source}: network {net}" if net else f"{source}: {name}"
    return f"{source or 'measured'}: {name}"


def winners(data: ReportData) -> pd.DataFrame:
    """The fastest algorithm at each (nranks, size) of each campaign (one system or network:
    the runs of one measured sweep, or one prediction), with the campaign's ``panel`` title.
    Measured and predicted cells are never ranked together."""
    s = data.summary[data.summary["size_bytes"] > 0]
    idx = s.groupby(["campaign", "nranks", "size_bytes"])["median_us"].idxmin()
    win = s.loc[idx, ["campaign", "run", "nranks", "size_bytes", "algorithm", "source", "series",
                      "median_us"]].reset_index(drop=True)
    titles = {c: panel_title(data, c, list(dict.fromkeys(g["run"]))) for c, g in win.groupby("campaign")}
    return win.assign(panel=win["campaign"].map(titles))


def _panel_order(data: ReportData, win: pd.DataFrame) -> list[str]:
    """Campaigns measured first, then predicted, each in the order their runs were given."""
    order = {run: i for i, run in enumerate(data.runs)}
    first = win.groupby("campaign").agg(source=("source", "first"), run=("run", "first"))
    rank = {c: (r["source"] != "measured", order[r["run"]]) for c, r in first.iterrows()}
    return sorted(rank, key=rank.get)


def winner_map(data: ReportData, opts: Options) -> Plot:
    """One grid per system over (size, ranks), coloured by the fastest algorithm; measured
    panels solid, predicted panels hatched; a panel title names the system or network."""
    if len(data.algorithms) < 2:
        raise NotApplicable("only one algorithm in the results, so nothing can win")
    win = winners(data)
    campaigns = _panel_order(data, win)
    heights = [0.75 + 0.2 * win[win["campaign"] == c]["nranks"].nunique() for c in campaigns]
    fig, axes = figure(opts.width, sum(heights) + 0.55, nrows=len(campaigns), squeeze=False,
                       height_ratios=heights)
    algs = data.algorithms
    for ax, campaign in zip(axes.flat, campaigns, strict=True):
        cells = win[win["campaign"] == campaign]
        sizes = sorted(cells["size_bytes"].astype(int).unique())
        ranks = sorted(cells["nranks"].astype(int).unique())
        for _, w in cells.iterrows():
            x, y = sizes.index(int(w["size_bytes"])), ranks.index(int(w["nranks"]))
            style = algorithm_style(w["algorithm"], algs)
            measured = w["source"] == "measured"
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=style.colour,
                                   alpha=1.0 if measured else 0.3, edgecolor="white", linewidth=0.6,
                                   gid=f"{w['algorithm']}|{w['source']}|{w['panel']}"))
            if not measured:
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="none", edgecolor=style.colour,
                                       hatch=SOURCE_HATCHES.get(w["source"], "xx"), linewidth=0))
        step = max(1, int(np.ceil(len(sizes) / (6 if opts.width == "single" else 12))))
        ax.set_xticks(range(0, len(sizes), step), [format_size(v) for v in sizes[::step]])
        ax.set_yticks(range(len(ranks)), [str(r) for r in ranks])
        ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_ylim(-0.5, len(ranks) - 0.5)
        ax.grid(False)
        ax.set_ylabel("Ranks P")
        ax.set_title(cells["panel"].iloc[0])
    axes.flat[-1].set_xlabel("Message size")
    won = [a for a in algs if a in set(win["algorithm"])]
    handles = [[Patch(facecolor=algorithm_style(a, algs).colour, label=a) for a in won]]
    predicted = [s for s in data.sources if s in set(win["source"]) and s != "measured"]
    if predicted:
        handles.append([Patch(facecolor="0.85", edgecolor="0.35", hatch=SOURCE_HATCHES.get(s, "xx"), label=s)
                        for s in predicted])
    legend_below(fig, handles, opts.width)
    notes = []
    overlapping = win.groupby("campaign")["run"].nunique()
    if (overlapping > 1).any() and data.summary.groupby(["campaign", "nranks", "size_bytes", "algorithm"])[
            "run"].nunique().gt(1).any():
        notes.append("Where several runs of one panel hold a point, its cell shows the fastest over them.")
    what = ("The fastest algorithm (lowest median time) at each message size and rank count, one panel "
            "per measured system or predicted network (its title): solid cells measured, pale hatched "
            "cells simulated (////) or closed-form model (....). Panels are ranked separately; no cell "
            "sets a prediction against a measurement.")
    rows = data.summary[data.summary["series"].isin(set(win["series"]))]
    return Plot("winner_map", "Which algorithm wins", fig, caption(data, what, rows, notes), win)
