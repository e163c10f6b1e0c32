"""The index page, ``index.md`` and ``index.html``: every figure with its caption and files,
the figures not drawn and why, the runs' provenance, and the table at the chosen point."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

from collbench.reports import stragglers, tables
from collbench.reports.captions import describe_run
from collbench.reports.common import baseline_of, chosen_ranks, chosen_sizes
from collbench.reports.data import ReportData
from collbench.reports.systems import measured_runs, unlinked


def _files(report, name: str) -> list[tuple[str, str]]:
    """(label, relative path) of every file written for figure *name*."""
    written = {p.name for p in report.files}
    found = [(ext.upper(), f"{name}.{ext}") for ext in ("pdf", "svg", "png") if f"{name}.{ext}" in written]
    return found + [("data (CSV)", f"data/{name}.csv")]


def _sections(data: ReportData, report, opts):
    """The page as (kind, payload) blocks, rendered to Markdown or HTML below."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    yield "h1", "collbench report"
    folders = f"{len(data.runs)} results folder{'s' if len(data.runs) > 1 else ''}"
    yield "p", f"Made {stamp} by `collbench report` from {folders}."
    yield "h2", "Runs"
    yield "ul", [f"{describe_run(run, data.runs[run], data.summary[data.summary['run'] == run])} "
                 f"Folder: `{data.folders[run]}`." for run in data.runs]
    if data.left_out:
        yield "p", "Left out: " + " ".join(data.left_out)
    left = unlinked(data)
    if left and measured_runs(data):
        yield "p", ("Predictions of other systems, drawn in figures of their own and never set against "
                    "the measurements: " + "; ".join(f"“{run}”: {why}" for run, why in left.items()) + ".")
    for note in data.notes:
        yield "p", note
    yield "h2", "Figures"
    for number, plot in enumerate(report.plots, start=1):
        yield "h3", f"Figure {number}. {plot.title}"
        yield "img", (f"{plot.name}.png", plot.title)
        yield "p", f"**Figure {number}.** {plot.caption}"
        yield "links", _files(report, plot.name)
    if report.skipped:
        yield "h2", "Figures not drawn"
        yield "ul", [f"{title}: {reason}." for title, reason in report.skipped]
    baseline = baseline_of(data, opts)
    nranks = chosen_ranks(data, opts)
    sizes = chosen_sizes(data, opts, nranks)
    chosen = data.summary[(data.summary["nranks"] == nranks) & data.summary["size_bytes"].isin(sizes)]
    yield "h2", "Tables"
    yield "table", (tables.table_rows(data, baseline, chosen), baseline)
    yield "links", [("all points, Markdown", "summary.md"), ("LaTeX (booktabs)", "summary.tex"),
                    ("every column, CSV", "summary_all.csv")]
    slow = stragglers.slowest_ranks(data)
    if not slow.empty:
        yield "h3", "Slowest ranks"
        yield "ul", stragglers.lines(slow)


def _markdown(blocks) -> str:
    out = []
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + payload)
        elif kind == "p":
            out.append(payload)
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in payload))
        elif kind == "img":
            out.append(f"![{payload[1]}]({payload[0]})")
        elif kind == "links":
            out.append(" · ".join(f"[{label}]({path})" for label, path in payload))
        elif kind == "table":
            out.append(tables.markdown(*payload).rstrip())
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape *text* and render its `code` and **bold** spans."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _html(blocks) -> str:
    body = []
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_inline(payload)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(payload)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in payload) + "</ul>")
        elif kind == "img":
            body.append(f'<img src="{html.escape(payload[0])}" alt="{html.escape(payload[1])}">')
        elif kind == "links":
            body.append("<p>" + " · ".join(f'<a href="{html.escape(p)}">{html.escape(label)}</a>'
                                           for label, p in payload) + "</p>")
        elif kind == "table":
            rows, baseline = payload
            heads = [h if h != "Speed-up" else f"Speed-up vs {baseline}" for h in tables.HEADERS]
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[h]))}</td>" for h in tables.HEADERS)
                            + "</tr>" for _, r in rows.iterrows())
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>"
                        + cells + "</table>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
             "img{max-width:100%;border:1px solid #ddd}td,th{padding:2px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}table{border-collapse:collapse}"
             "tr:nth-child(even){background:#f4f4f4}")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>collbench report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_index(data: ReportData, report, opts) -> list[Path]:
    """Write ``index.md`` and ``index.html`` into the report folder; returns their paths."""
    blocks = list(_sections(data, report, opts))
    md, page = report.out / "index.md", report.out / "index.html"
    md.write_text(_markdown(blocks))
    page.write_text(_html(blocks))
    return [md, page]
