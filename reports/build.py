"""Make the whole report: draw every figure the results support, save each in the requested
formats with its data as CSV, write the tables and the index page. Figures the results cannot
support are skipped and the index says why, so a report of measurements alone still works."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib.pyplot as plt
from collbench.reports import fig_compare, fig_point, fig_sweep, tables
from collbench.reports.captions import ci_words
from collbench.reports.common import NotApplicable, Options, Plot, baseline_of, chosen_ranks, chosen_sizes
from collbench.reports.data import ReportData, load
from collbench.reports.index import write_index
from collbench.reports.style import format_size, paper_style
from collbench.reports.systems import groups

from collbench.errors import CollbenchError

FORMATS = ("pdf", "png", "svg")


@dataclass
class Report:
    """What was written: the drawn *plots*, the *skipped* figures with reasons, the *files*."""

    out: Path
    plots: list[Plot] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def figure_makers(data: ReportData, opts: Options) -> list[tuple[str, Callable[[], Plot]]]:
    """Every figure of the report, in the order of the index, as (title, thunk).

    Predictions of other systems (:func:`collbench.reports.systems.groups`) get figures of
    their own, so that no figure draws them beside this machine's measurements."""
    makers = []
    for label, part in groups(data):
        makers += _group_makers(part, opts, label)
    makers += [("Predicted vs measured", lambda: fig_compare.predicted_vs_measured(data, opts)),
               ("Which algorithm wins", lambda: fig_compare.winner_map(data, opts))]
    return makers


def _group_makers(data: ReportData, opts: Options, label: str) -> list[tuple[str, Callable[[], Plot]]]:
    """The sweep and per-point figures of one group; *label* ("" for the measured group) is
    added to titles and file names."""
    suffix = f" ({label})" if label else ""
    if opts.baseline and opts.baseline not in data.algorithms:  # a prediction is compared within its run
        opts = replace(opts, baseline=None)

    def named(make: Callable[[], Plot]) -> Callable[[], Plot]:
        def run() -> Plot:
            plot = make()
            if label:
                plot.name += "_" + label.replace(" ", "-")
                plot.title += suffix
            return plot
        return run

    makers = [(f"Time vs message size{suffix}", named(lambda: fig_sweep.time_vs_size(data, opts))),
              (f"Bus bandwidth vs message size{suffix}", named(lambda: fig_sweep.busbw_vs_size(data, opts))),
              (f"Scaling with rank count{suffix}", named(lambda: fig_sweep.scaling(data, opts)))]
    try:
        nranks = chosen_ranks(data, opts)
        sizes = chosen_sizes(data, opts, nranks)
    except CollbenchError as e:  # --ranks/--size chosen for the other group
        why = str(e)
        return makers + [(f"Figures at one point{suffix}", lambda: _not_applicable(why))]
    for size in sizes:
        point = f"{format_size(size)}, P = {nranks}{suffix}"
        makers.append((f"Implementations at {point}", named(lambda s=size: fig_point.bars(data, opts, s))))
        if not data.samples.empty:  # predictions store no per-iteration times
            makers.append((f"Iteration distribution at {point}",
                           named(lambda s=size: fig_point.distribution(data, opts, s))))
    return makers


def _not_applicable(why: str) -> Plot:
    raise NotApplicable(why)


def parse_formats(text: str) -> tuple[str, ...]:
    """``pdf,png`` into ('pdf', 'png'); raises CollbenchError on an unknown format."""
    formats = tuple(f.strip().lower().lstrip(".") for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise CollbenchError(f"unknown figure format {unknown[0] if unknown else text!r}; "
                             f"choose from {', '.join(FORMATS)}")
    return formats


def make_report(folders: Iterable, out: Path | str, opts: Options | None = None,
                formats: Iterable[str] = ("pdf", "png"), in_place: bool | None = None) -> Report:
    """Read *folders*, write the figures, tables and ``index.md``/``index.html`` into *out*."""
    opts = opts or Options()
    data = load(folders, in_place)
    baseline_of(data, opts)  # check the choices before anything is drawn or written
    chosen_sizes(data, opts, chosen_ranks(data, opts))
    out = Path(out)
    try:
        (out / "data").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CollbenchError(f"cannot create the report folder {out}: {e.strerror or e}") from None
    report = Report(out)
    formats = tuple(dict.fromkeys(("png", *formats)))  # the index shows PNGs
    with paper_style(opts.width):
        for title, make in figure_makers(data, opts):
            try:
                plot = make()
            except NotApplicable as e:
                report.skipped.append((title, str(e)))
                continue
            for fmt in formats:
                path = out / f"{plot.name}.{fmt}"
                plot.figure.savefig(path, metadata={"Creator": "collbench report"} if fmt != "png" else None)
                report.files.append(path)
            data_path = out / "data" / f"{plot.name}.csv"
            plot.data.to_csv(data_path, index=False)
            report.files.append(data_path)
            plt.close(plot.figure)
            report.plots.append(plot)
    report.files += write_tables(data, opts, out)
    report.files += write_index(data, report, opts)
    return report


def write_tables(data: ReportData, opts: Options, out: Path) -> list[Path]:
    """``summary.md`` and ``summary.tex`` over every point, plus ``summary_all.csv``; the
    predictions of other systems in tables of their own, as in the figures."""
    baseline = baseline_of(data, opts)
    caption = (f"All-reduce median time, {ci_words(data.summary)}, bus bandwidth and "
               f"speed-up (t_{baseline}/t) against {baseline} of the same run at the same point.")
    md_parts, tex_parts = [], []
    for label, part in groups(data):
        rows = tables.table_rows(part, baseline)
        if label:
            md_parts.append(f"\nPredictions of {label}:\n")
        md_parts.append(tables.markdown(rows, baseline))
        what = caption.rstrip(".") + f"; predictions of {label}" if label else caption
        name = "tab:collbench-" + (label.replace(" ", "-") if label else "summary")
        tex_parts.append(tables.latex(rows, baseline, what, label=name))
    md, tex, csv = out / "summary.md", out / "summary.tex", out / "summary_all.csv"
    md.write_text("".join(md_parts))
    tex.write_text("\n".join(tex_parts))
    data.summary.drop(columns=["variant", "variant_name"]).to_csv(csv, index=False)
    return [md, tex, csv]
