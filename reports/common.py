"""What every figure function shares: its options, its result, the choice of the point to
show, the speed-up rule and the drawing of one series."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from collbench.reports.data import PREDICTED, ReportData
from collbench.reports.style import FILLSTYLES, SOURCE_LINESTYLES, algorithm_style, format_size
from matplotlib.figure import Figure

from collbench.errors import CollbenchError


@dataclass(frozen=True)
class Options:
    """Choices a user makes on the command line (see :mod:`collbench.reports.cli`)."""

    width: str = "single"
    baseline: str | None = None
    """Algorithm the speed-ups compare against; default ``native`` if present, else ``naive``."""
    sizes: tuple[int, ...] = ()
    """Message sizes (bytes) for the bar, distribution and scaling figures; default the largest."""
    ranks: int | None = None
    """Rank count for the per-size figures; default the one with most measured points."""


@dataclass
class Plot:
    """A drawn figure: *figure* for tests and the writer, *caption* for the index, and *data*,
    the values drawn, written as CSV beside the figure so a reader can re-plot them."""

    name: str
    title: str
    figure: Figure
    caption: str
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)


class NotApplicable(Exception):
    """A figure that the given results cannot support; the message says what is missing."""


def measured_first(frame: pd.DataFrame) -> pd.DataFrame:
    """The measured rows of *frame* if there are any, else all of them."""
    measured = frame[frame["source"] == "measured"]
    return measured if not measured.empty else frame


def chosen_ranks(data: ReportData, opts: Options) -> int:
    """*opts.ranks*, or the rank count with the most measured points (the largest on a tie)."""
    present = sorted(data.summary["nranks"].astype(int).unique())
    if opts.ranks is not None:
        if opts.ranks not in present:
            raise CollbenchError(f"no results at --ranks {opts.ranks}; the results hold P = "
                                 f"{', '.join(map(str, present))}")
        return opts.ranks
    counts = measured_first(data.summary).groupby("nranks").size()
    return int(max(counts.index, key=lambda p: (counts[p], p)))


def chosen_sizes(data: ReportData, opts: Options, nranks: int) -> list[int]:
    """*opts.sizes* (each checked to exist at *nranks*), or the largest size measured there."""
    at_p = data.summary[data.summary["nranks"] == nranks]
    present = sorted(at_p["size_bytes"].astype(int).unique())
    if opts.sizes:
        missing = [s for s in opts.sizes if s not in present]
        if missing:
            raise CollbenchError(f"no results of size {format_size(missing[0])} at P = {nranks}; "
                                 f"sizes there: {', '.join(map(format_size, present))}")
        return list(opts.sizes)
    return [int(measured_first(at_p)["size_bytes"].max())]


def baseline_of(data: ReportData, opts: Options) -> str:
    """The baseline algorithm: *opts.baseline*, or ``native``, ``naive``, the first present."""
    algs = data.algorithms
    if opts.baseline:
        if opts.baseline not in algs:
            raise CollbenchError(f"--baseline {opts.baseline} is not in the results; "
                                 f"algorithms there: {', '.join(algs)}")
        return opts.baseline
    return next((a for a in ("native", "naive") if a in algs), algs[0])


GROUP = ("run", "source", "transport", "dtype", "op", "nranks", "size_bytes")


def speedups(rows: pd.DataFrame, baseline: str) -> pd.Series:
    """Speed of each row relative to *baseline* at its point: t_baseline / t.

    A prediction is compared only with the baseline of its own run: a simulated ring on one
    network against measured native of another machine would credit the network to the ring.
    A measurement takes its own run's baseline, else that of another measured run of the same
    system (hosts and processor) at that point. NaN where no such baseline exists."""
    point = ["nranks", "size_bytes"]
    base = rows[rows["algorithm"] == baseline]
    same = base[list(GROUP) + ["median_us"]].drop_duplicates(list(GROUP)) \
        .rename(columns={"median_us": "same"})
    measured = base[base["source"] == "measured"]
    other = measured[point + ["system", "median_us"]].drop_duplicates(point + ["system"]) \
        .rename(columns={"median_us": "other"})
    merged = rows[list(GROUP) + ["system", "median_us"]].reset_index() \
        .merge(same, on=list(GROUP), how="left") \
        .merge(other, on=point + ["system"], how="left").set_index("index")
    merged.loc[merged["source"] != "measured", "other"] = np.nan
    t = merged["median_us"].where(merged["median_us"] > 0)
    return (merged["same"].fillna(merged["other"]) / t).reindex(rows.index)


def speedup_text(ratio: float, baseline: str | None = None) -> str:
    """"82% faster" for a ratio of 1.82, "3.1× faster" from 2× on, "12% slower" below 1."""
    if not np.isfinite(ratio):
        return ""
    if abs(ratio - 1) < 5e-3:
        word = "same"
    elif ratio >= 2 or ratio <= 0.5:
        word = f"{ratio:.1f}× faster" if ratio > 1 else f"{1 / ratio:.1f}× slower"
    else:
        word = f"{(ratio - 1) * 100:.0f}% faster" if ratio > 1 else f"{(1 / ratio - 1) * 100:.0f}% slower"
    return f"{word} than {baseline}" if baseline else word


def line_style(data: ReportData, rows: pd.DataFrame) -> dict:
    """Matplotlib keyword arguments that draw the series in *rows* in its fixed style."""
    first = rows.iloc[0]
    style = algorithm_style(first["algorithm"], data.algorithms)
    predicted = first["source"] in PREDICTED
    return {
        "color": style.colour,
        "linestyle": SOURCE_LINESTYLES.get(first["source"], "-."),
        "fillstyle": FILLSTYLES[int(first["variant"]) % len(FILLSTYLES)],
        "marker": style.marker,  # predictions too: their fill tells two networks apart
        "markersize": 2.6 if predicted else 3.5,
        "markerfacecoloralt": "white",
        "label": first["series"],
        "gid": first["series"],
    }


def band(ax, x, low, high, colour: str) -> None:
    """Shade a confidence band where it is known and not degenerate (predictions have none)."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    ok = np.isfinite(low) & np.isfinite(high)
    if ok.any() and (high[ok] > low[ok]).any():
        ax.fill_between(np.asarray(x, float)[ok], low[ok], high[ok], color=colour, alpha=0.18,
                        linewidth=0)
