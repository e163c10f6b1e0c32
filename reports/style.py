"""Paper conventions shared by every figure, so a reader learns the encoding once.

Colour and marker belong to the algorithm and never change between figures; the line style
belongs to the source (measured solid, simulated dashed, closed-form model dotted); a marker's
fill tells apart several runs of the same kind (two clusters, two transports). Colours are the
Okabe–Ito palette, which stays distinct under the common colour-vision deficiencies and in
greyscale print when combined with the markers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatterSciNotation, NullFormatter  # noqa: E402


@dataclass(frozen=True)
class AlgorithmStyle:
    colour: str
    marker: str


ALGORITHM_STYLES = {
    "naive": AlgorithmStyle("#D55E00", "o"),  # vermillion
    "ring": AlgorithmStyle("#0072B2", "s"),  # blue
    "rabenseifner": AlgorithmStyle("#009E73", "^"),  # bluish green
    "native": AlgorithmStyle("#000000", "D"),  # black: the vendor baseline
}
FALLBACK_STYLES = (
    AlgorithmStyle("#E69F00", "v"),  # orange
    AlgorithmStyle("#CC79A7", "P"),  # reddish purple
    AlgorithmStyle("#56B4E9", "X"),  # sky blue
)
"""Unknown algorithms take these in sorted-name order, then cycle."""

SOURCE_LINESTYLES = {"measured": "-", "simulated": "--", "model": ":"}
SOURCE_HATCHES = {"measured": "", "simulated": "////", "model": "...."}
FILLSTYLES = ("full", "none", "left", "bottom")
"""Marker fills for the runs (variants) that share an algorithm and a source."""

WIDTHS_IN = {"single": 3.3, "double": 7.0}


def algorithm_order(names) -> list[str]:
    """The fixed algorithm order: the known ones first, as in the palette, then the rest sorted."""
    known = [n for n in ALGORITHM_STYLES if n in set(names)]
    return known + sorted(set(names) - set(known))


def algorithm_style(name: str, all_names=()) -> AlgorithmStyle:
    """The style of algorithm *name*; unknown names get a fallback by their rank among *all_names*."""
    if name in ALGORITHM_STYLES:
        return ALGORITHM_STYLES[name]
    unknown = sorted({n for n in all_names if n not in ALGORITHM_STYLES} | {name})
    return FALLBACK_STYLES[unknown.index(name) % len(FALLBACK_STYLES)]


def rc(width: str) -> dict:
    """Matplotlib settings readable at print size; fonts embedded as TrueType (type 42)."""
    base = 7.0 if width == "single" else 8.0
    return {
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "font.size": base,
        "axes.titlesize": base,
        "axes.labelsize": base,
        "xtick.labelsize": base - 0.5,
        "ytick.labelsize": base - 0.5,
        "legend.fontsize": base - 0.5,
        "legend.frameon": False,
        "lines.linewidth": 1.2,
        "lines.markersize": 3.5,
        "axes.grid": True,
        "grid.linewidth": 0.4,
        "grid.alpha": 0.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "savefig.dpi": 300,
        "figure.constrained_layout.use": True,
    }


@contextlib.contextmanager
def paper_style(width: str) -> Iterator[None]:
    with plt.rc_context(rc(width)):
        yield


def figure(width: str, height_in: float | None = None, **kwargs):
    """A new Figure *width* wide (``single`` 3.3 in or ``double`` 7 in) and its axes."""
    w = WIDTHS_IN[width]
    h = height_in if height_in is not None else (2.6 if width == "single" else 3.0)
    return plt.subplots(figsize=(w, h), **kwargs)


_BINARY = ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"), (1, "B"))


def format_size(nbytes: float) -> str:
    """Binary units as on the axes: 8 B, 32 KiB, 256 MiB (one decimal when not whole)."""
    for factor, unit in _BINARY:
        if nbytes >= factor:
            value = nbytes / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes:.0f} B"


def format_time_us(us: float) -> str:
    """A time given in microseconds in the unit that reads best: 850 µs, 1.2 ms, 3 s."""
    for factor, unit in ((1e6, "s"), (1e3, "ms"), (1.0, "µs"), (1e-3, "ns")):
        if abs(us) >= factor:
            return f"{us / factor:.3g} {unit}"
    return f"{us:.3g} µs"


def size_axis(ax, lo: float, hi: float, max_ticks: int) -> None:
    """Put a base-2 log scale with binary-unit labels (1 KiB, 32 KiB, 1 MiB) on the x axis of *ax*.

    Labelled ticks sit on every 1, 2, 5 or 10 octaves, aligned to 1 so that 1 KiB, 1 MiB
    appear whenever the step allows; every other power of two gets a minor tick."""
    ax.set_xscale("log", base=2)
    axis = ax.xaxis
    lo_e, hi_e = math.floor(math.log2(max(lo, 1))), math.ceil(math.log2(max(hi, 1)))
    step = next((s for s in (1, 2, 5, 10) if (hi_e - lo_e) // s + 1 <= max_ticks), 10)
    first = math.ceil(lo_e / step) * step
    axis.set_major_locator(FixedLocator([2.0**e for e in range(first, hi_e + 1, step)]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: format_size(v)))
    axis.set_minor_locator(FixedLocator([2.0**e for e in range(lo_e, hi_e + 1)]))
    axis.set_minor_formatter(NullFormatter())


class LogLabels(LogFormatterSciNotation):
    """Labels of a log axis in *fmt* (e.g. with their unit), on the ticks matplotlib's own
    log formatter would label: decades, and some minor ticks when the axis spans under a
    decade; other ticks stay unlabelled, so no tick ever reads as a bare ``2×10¹``."""

    def __init__(self, fmt, minor: bool = False) -> None:
        super().__init__(labelOnlyBase=not minor)
        self.fmt = fmt

    def __call__(self, x, pos=None) -> str:
        return self.fmt(x) if super().__call__(x, pos) else ""


def log_axis(ax, which: str, fmt) -> None:
    """A log10 axis of *which* ("x" or "y") whose every label, major or minor, is ``fmt(value)``."""
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(LogLabels(fmt))
    axis.set_minor_formatter(LogLabels(fmt, minor=True))


def time_axis(ax, which: str = "y") -> None:
    """A log10 axis of microseconds whose labels carry their unit (10 µs, 1 ms)."""
    log_axis(ax, which, format_time_us)


def plain_number(value: float) -> str:
    """A tick value without scientific notation: 0.01, 2, 300."""
    return f"{value:.6g}" if 1e-4 <= abs(value) < 1e6 else f"{value:.0e}"


def rank_axis(ax, ranks, panel_in: float) -> None:
    """A base-2 log x axis of rank counts labelled at the given *ranks*, every k-th of them so
    that the labels of a panel *panel_in* inches wide never overlap; the rest get a tick."""
    ranks = sorted({int(r) for r in ranks})
    ax.set_xscale("log", base=2)
    size = plt.rcParams["xtick.labelsize"]
    size = size if isinstance(size, (int, float)) else 6.5
    need = max(len(str(r)) for r in ranks) * 0.6 * size / 72 + 0.08  # inches per label
    step = 1
    while (len(ranks[::step]) - 1) * need > 0.9 * panel_in and step < len(ranks):
        step += 1
    shown = ranks[::step]
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(FixedLocator(sorted(set(ranks) - set(shown))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def category_ticks(ax, positions, labels, width: str) -> None:
    """Label categories with multi-line names when they fit side by side at *width*, else
    with one-line names set upright, the figure growing by their length so that the axes keep
    their height and neighbouring labels never overlap."""
    size = rc(width)["xtick.labelsize"]
    longest = max(len(line) for label in labels for line in label.split("\n"))
    span = (WIDTHS_IN[width] - 0.7) / max(len(labels), 1)
    if longest * size * 0.5 / 72 <= 0.95 * span:
        ax.set_xticks(positions, labels)
        return
    upright = [label.replace("\n", " · ") for label in labels]
    ax.set_xticks(positions, upright, rotation=90)
    fig = ax.get_figure()
    lines = max(label.count("\n") + 1 for label in labels)
    grow = max(len(u) for u in upright) * size * 0.55 / 72 - lines * size * 1.2 / 72
    fig.set_figheight(fig.get_figheight() + max(grow, 0))


def legend_handles(algorithms, sources, variants) -> list[list[Line2D]]:
    """The factored legend, one group per row: the algorithms (colour and marker); the sources
    (line style) when sources are mixed; the run variants (marker fill) when there are several.

    *variants* are ``(name, fill index)`` pairs: the index the series were drawn with, so the
    legend matches a figure that shows only some of the runs."""
    groups = [[Line2D([], [], color=algorithm_style(a, algorithms).colour,
                      marker=algorithm_style(a, algorithms).marker, label=a) for a in algorithms]]
    if len(sources) > 1:
        groups.append([Line2D([], [], color="0.35", linestyle=SOURCE_LINESTYLES.get(s, "-."), label=s)
                       for s in sources])
    if len(variants) > 1:
        groups.append([Line2D([], [], color="0.35", marker="o", linestyle="",
                              fillstyle=FILLSTYLES[int(i) % len(FILLSTYLES)], label=name)
                       for name, i in variants])
    return groups


def _fits(rows, ncol: int, width: str) -> bool:
    """True if *rows* of legend labels laid out in *ncol* columns fit the figure width; each
    column is as wide as its widest label, as matplotlib draws it."""
    size = rc(width)["legend.fontsize"]
    text = sum(max(len(r[c]) if c < len(r) else 0 for r in rows) * size * 0.52 for c in range(ncol))
    return text + ncol * 4.2 * size <= WIDTHS_IN[width] * 72 - 6


def _wrap(groups, ncol: int):
    return [[h.get_label() for h in g[i:i + ncol]] for g in groups for i in range(0, len(g), ncol)]


def legend_below(fig, groups, width: str) -> None:
    """A legend under the axes, never over the data: each group of handles (a flat list is
    one group) starts its own row and wraps when the width is full."""
    if groups and not isinstance(groups[0], list):
        groups = [groups]
    groups = [g for g in groups if g]
    if not groups:
        return
    ncol = next((n for n in range(max(map(len, groups)), 0, -1) if _fits(_wrap(groups, n), n, width)), 1)
    rows = []
    for group in groups:
        for i in range(0, len(group), ncol):
            chunk = group[i:i + ncol]
            rows.append(chunk + [Line2D([], [], linestyle="", label=" ")] * (ncol - len(chunk)))
    # Matplotlib fills a legend column by column; transpose so that each group reads as a row.
    ordered = [row[c] for c in range(ncol) for row in rows]
    fig.legend(handles=ordered, loc="outside lower center", ncol=ncol, handlelength=2.0,
               handletextpad=0.6, columnspacing=1.0, borderaxespad=0.2)
