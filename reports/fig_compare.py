"""Figures that set predictions against measurements: predicted vs measured with the error of
every point, and the map of which algorithm wins at each (size, ranks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from collbench.reports.captions import caption
from collbench.reports.common import NotApplicable, Options, Plot, chosen_ranks
from collbench.reports.data import PREDICTED, ReportData
from collbench.reports.style import (
    SOURCE_LINESTYLES,
    algorithm_style,
    figure,
    format_size,
    legend_below,
    size_axis,
    time_axis,
)
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

MATCH = ["algorithm", "nranks", "size_bytes"]
"""Predictions are matched to measurements by algorithm, ranks and bytes: a simulator models
bytes on links, whatever dtype or transport label it gives its rows."""


def models_the_measured_system(provenance: dict) -> bool:
    """False for a prediction made for another system: fitted to measurements, then run on a
    different network (``sim predict --calibration F --network ib-edr``). Comparing it with
    the measurements it was fitted on would report the network change as model error."""
    calibration, network = provenance.get("calibration"), provenance.get("network") or {}
    return not calibration or network.get("name") == "calibrated"


def matched(data: ReportData) -> pd.DataFrame:
    """Every (measured, predicted) pair of rows at the same point, with the relative error;
    only predictions that model the measured system take part."""
    s = data.summary[data.summary["size_bytes"] > 0]
    comparable = {run for run, prov in data.runs.items() if models_the_measured_system(prov)}
    measured = s[s["source"] == "measured"]
    predicted = s[s["source"].isin(PREDICTED) & s["run"].isin(comparable)]
    pairs = measured.merge(predicted, on=MATCH, suffixes=("_meas", "_pred"))
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
        raise NotApplicable("no prediction models the measured system at a measured (algorithm, "
                            "ranks, size); predictions calibrated here and moved to another network "
                            "are not compared (use `collbench sim predict --calibration F` without "
                            "--network)")
    nranks = chosen_ranks(data, opts)
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
    rows = data.summary[data.summary["series"].isin(set(pairs["series_meas"]) | set(pairs["series_pred"]))]
    table = pairs[["algorithm", "nranks", "size_bytes", "series_meas", "series_pred", "median_us_meas",
                   "median_us_pred", "error_pct"]]
    return Plot("predicted_vs_measured", "Predicted vs measured", fig, caption(data, what, rows), table)


PREFERENCE = {"measured": 0, "simulated": 1, "model": 2}


def winners(data: ReportData) -> pd.DataFrame:
    """The fastest algorithm at each (nranks, size): among measurements where any exist there,
    else among simulated results, else among the closed-form model."""
    s = data.summary[data.summary["size_bytes"] > 0].copy()
    s["preference"] = s["source"].map(PREFERENCE).fillna(3)
    best_source = s.groupby(["nranks", "size_bytes"])["preference"].transform("min")
    s = s[s["preference"] == best_source]
    idx = s.groupby(["nranks", "size_bytes"])["median_us"].idxmin()
    return s.loc[idx, ["nranks", "size_bytes", "algorithm", "source", "series", "median_us"]] \
        .reset_index(drop=True)


def winner_map(data: ReportData, opts: Options) -> Plot:
    """A grid over (size, ranks) coloured by the fastest algorithm; measured cells solid with
    the algorithm's marker, predicted cells pale and hatched."""
    if len(data.algorithms) < 2:
        raise NotApplicable("only one algorithm in the results, so nothing can win")
    win = winners(data)
    sizes = sorted(win["size_bytes"].astype(int).unique())
    ranks = sorted(win["nranks"].astype(int).unique())
    height = 1.2 + 0.22 * len(ranks) + (0.5 if opts.width == "single" else 0.3)
    fig, ax = figure(opts.width, max(height, 1.9))
    algs = data.algorithms
    for _, w in win.iterrows():
        x, y = sizes.index(int(w["size_bytes"])), ranks.index(int(w["nranks"]))
        style = algorithm_style(w["algorithm"], algs)
        measured = w["source"] == "measured"
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=style.colour,
                               alpha=1.0 if measured else 0.3, edgecolor="white", linewidth=0.6,
                               gid=f"{w['algorithm']}|{w['source']}"))
        if not measured:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="none", edgecolor=style.colour,
                                   hatch="////" if w["source"] == "simulated" else "....", linewidth=0))
    step = max(1, int(np.ceil(len(sizes) / (6 if opts.width == "single" else 12))))
    ax.set_xticks(range(0, len(sizes), step), [format_size(v) for v in sizes[::step]])
    ax.set_yticks(range(len(ranks)), [str(r) for r in ranks])
    ax.set_xlim(-0.5, len(sizes) - 0.5)
    ax.set_ylim(-0.5, len(ranks) - 0.5)
    ax.grid(False)
    ax.set_xlabel("Message size")
    ax.set_ylabel("Ranks P")
    ax.set_title("Fastest algorithm")
    won = [a for a in algs if a in set(win["algorithm"])]
    handles = [[Patch(facecolor=algorithm_style(a, algs).colour, label=a) for a in won]]
    handles += [[Patch(facecolor="0.3" if s == "measured" else "0.85", edgecolor="0.35" if s != "measured"
                      else "0.55", hatch={"simulated": "////", "model": "...."}.get(s, ""), label=s)
                 for s in data.sources if s in set(win["source"]) and set(win["source"]) != {"measured"}]]
    legend_below(fig, handles, opts.width)
    notes = []
    if data.summary[data.summary["source"] == "measured"]["run"].nunique() > 1:
        notes.append("Several measured runs were given; a measured cell shows the fastest over all of them.")
    if len(ranks) == 1:
        notes.append(f"Only P = {ranks[0]} is present, so the map is one row.")
    what = ("The fastest algorithm (lowest median time) at each message size and rank count: solid cells "
            "from measurements, pale hatched cells from the simulator (////) or the closed-form model "
            "(....) where nothing was measured.")
    rows = data.summary[data.summary["series"].isin(set(win["series"]))]
    return Plot("winner_map", "Which algorithm wins", fig, caption(data, what, rows, notes), win)
