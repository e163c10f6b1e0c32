"""Tables of the summary statistics and speed-ups, as Markdown (for the index and READMEs)
and as LaTeX with booktabs rules (for papers): one row per series and point."""

from __future__ import annotations

import numpy as np
import pandas as pd
from collbench.reports.common import speedups
from collbench.reports.data import ReportData
from collbench.reports.style import format_size

from collbench.stats import levels_text

HEADERS = ("Implementation", "P", "Size", "Median (µs)", "CI (µs)", "busbw (GB/s)", "Speed-up")
"""Column keys; the CI's header names the intervals' real level (:func:`ci_header`)."""


def column_format(values) -> str:
    """One format for a whole column, so its numbers line up and read alike: fixed point with
    enough decimals for three significant figures of the smallest value (at most 3), or
    scientific notation throughout when the values span more than four decades."""
    v = np.abs(np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), float))
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return "{:.2f}"
    if v.max() / v.min() > 1e4 or v.min() < 1e-3:
        return "{:.2e}"
    decimals = min(3, max(0, 2 - int(np.floor(np.log10(v.min())))))
    return f"{{:.{decimals}f}}"


def _formatted(values, fmt: str) -> list[str]:
    return ["–" if pd.isna(x) else fmt.format(x) for x in values]


def table_rows(data: ReportData, baseline: str, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table's rows for *frame* (default: every point), ordered by P, size, then series."""
    frame = data.summary if frame is None else frame
    rows = frame.assign(speedup=speedups(frame, baseline)).sort_values(
        ["nranks", "size_bytes", "series_order"], kind="stable")
    ci_known = rows["ci_low_us"].notna() & (rows["source"] == "measured")
    time_fmt = column_format(pd.concat([rows["median_us"], rows["ci_low_us"][ci_known],
                                        rows["ci_high_us"][ci_known]]))
    lows, highs = _formatted(rows["ci_low_us"], time_fmt), _formatted(rows["ci_high_us"], time_fmt)
    return pd.DataFrame({
        "Implementation": rows["series"],
        "P": rows["nranks"].astype(int).astype(str),
        "Size": rows["size_bytes"].map(format_size),
        "Median (µs)": _formatted(rows["median_us"], time_fmt),
        "CI (µs)": [f"[{lo}, {hi}]" if ok else "–"
                    for lo, hi, ok in zip(lows, highs, ci_known, strict=True)],
        "busbw (GB/s)": _formatted(rows["busbw_GBps"], column_format(rows["busbw_GBps"])),
        "Speed-up": [r if r == "–" else r + "×"
                     for r in _formatted(rows["speedup"], column_format(rows["speedup"]))],
        "_group": list(zip(rows["nranks"], rows["size_bytes"], strict=True)),
        "_ci_level": pd.to_numeric(rows["ci_level"], errors="coerce").where(ci_known).to_numpy()
        if "ci_level" in rows else np.nan,
    }).reset_index(drop=True)


def ci_header(rows: pd.DataFrame) -> str:
    """The CI column's header at the real level of the rows' intervals: "95.8% CI (µs)", "75% CI
    (µs)" for runs of 3 samples, "75%–95.8% CI (µs)" for a mix."""
    level = levels_text(rows["_ci_level"])
    return f"{level} CI (µs)" if level else "CI (µs)"


def markdown(rows: pd.DataFrame, baseline: str) -> str:
    """A GitHub-flavoured Markdown table; the speed-up column names its baseline."""
    names = {"Speed-up": f"Speed-up vs {baseline}", "CI (µs)": ci_header(rows)}
    headers = [names.get(h, h) for h in HEADERS]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(str(r[h]) for h in HEADERS) + " |" for _, r in rows.iterrows()]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX.get(ch, ch) for ch in str(text))
    return out.replace("×", r"$\times$").replace("·", r"$\cdot$").replace("–", "--")


MAX_FLOAT_ROWS = 40
"""Rows of one LaTeX float: about a page of \\small booktabs rows."""


def chunks(rows: pd.DataFrame, limit: int = MAX_FLOAT_ROWS) -> list[pd.DataFrame]:
    """*rows* cut into floats: one per rank count, each cut again between points (never inside
    one) into runs of message sizes of at most *limit* rows where it is longer."""
    out = []
    for _, at_p in rows.groupby("P", sort=False):
        current: list[pd.DataFrame] = []
        count = 0
        for _, point in at_p.groupby("_group", sort=False):
            if current and count + len(point) > limit:
                out.append(pd.concat(current))
                current, count = [], 0
            current.append(point)
            count += len(point)
        if current:
            out.append(pd.concat(current))
    return out


def latex(rows: pd.DataFrame, baseline: str, caption: str, label: str = "tab:collbench-summary") -> str:
    """Booktabs tables (need ``\\usepackage{booktabs}``), one float per rank count and range of
    sizes (:func:`chunks`), each captioned with its range; a rule separates the points."""
    ci = tex_escape(ci_header(rows)).replace("(µs)", r"($\mu$s)")
    headers = ["Implementation", "$P$", "Size", r"Median ($\mu$s)", ci, "busbw (GB/s)",
               f"vs {tex_escape(baseline)}"]
    parts = chunks(rows)
    out = []
    for i, part in enumerate(parts, start=1):
        sizes = part["Size"]
        where = f"$P = {part['P'].iloc[0]}$, {sizes.iloc[0]} to {sizes.iloc[-1]}"
        if len(parts) > 1:
            where += f" (table {i} of {len(parts)})"
        out += [r"\begin{table}[tp]", r"\centering", r"\small", r"\begin{tabular}{lrrrrrr}", r"\toprule",
                " & ".join(headers) + r" \\", r"\midrule"]
        previous = None
        for _, r in part.iterrows():
            if previous is not None and r["_group"] != previous:
                out.append(r"\midrule")
            previous = r["_group"]
            out.append(" & ".join(tex_escape(r[h]) for h in HEADERS) + r" \\")
        name = label + (f"-{i}" if len(parts) > 1 else "")
        out += [r"\bottomrule", r"\end{tabular}",
                rf"\caption{{{tex_escape(caption.rstrip('.'))}; {where}.}}",
                rf"\label{{{name}}}", r"\end{table}", ""]
    return "\n".join(out)
