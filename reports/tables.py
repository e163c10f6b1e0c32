"""Tables of the summary statistics and speed-ups, as Markdown (for the index and READMEs)
and as LaTeX with booktabs rules (for papers): one row per series and point."""

from __future__ import annotations

import pandas as pd
from collbench.reports.common import speedups
from collbench.reports.data import ReportData
from collbench.reports.style import format_size

HEADERS = ("Implementation", "P", "Size", "Median (µs)", "95% CI (µs)", "busbw (GB/s)", "Speed-up")


def _num(value: float) -> str:
    """Three significant figures without scientific notation for the usual ranges."""
    if pd.isna(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.0f}"


def table_rows(data: ReportData, baseline: str, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table's rows for *frame* (default: every point), ordered by P, size, then series."""
    frame = data.summary if frame is None else frame
    rows = frame.assign(speedup=speedups(frame, baseline)).sort_values(
        ["nranks", "size_bytes", "series_order"], kind="stable")
    ci_known = rows["ci_low_us"].notna() & (rows["source"] == "measured")
    return pd.DataFrame({
        "Implementation": rows["series"],
        "P": rows["nranks"].astype(int).astype(str),
        "Size": rows["size_bytes"].map(format_size),
        "Median (µs)": rows["median_us"].map(_num),
        "95% CI (µs)": [f"[{_num(lo)}, {_num(hi)}]" if ok else "–"
                        for lo, hi, ok in zip(rows["ci_low_us"], rows["ci_high_us"], ci_known, strict=True)],
        "busbw (GB/s)": rows["busbw_GBps"].map(_num),
        "Speed-up": rows["speedup"].map(lambda r: "–" if pd.isna(r) else f"{r:.2f}×"),
        "_group": list(zip(rows["nranks"], rows["size_bytes"], strict=True)),
    })


def markdown(rows: pd.DataFrame, baseline: str) -> str:
    """A GitHub-flavoured Markdown table; the speed-up column names its baseline."""
    headers = [h if h != "Speed-up" else f"Speed-up vs {baseline}" for h in HEADERS]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(str(r[h]) for h in HEADERS) + " |" for _, r in rows.iterrows()]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX.get(ch, ch) for ch in str(text))
    return out.replace("×", r"$\times$").replace("·", r"$\cdot$").replace("–", "--")


def latex(rows: pd.DataFrame, baseline: str, caption: str) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``); a rule separates the points."""
    headers = ["Implementation", "$P$", "Size", r"Median ($\mu$s)", r"95\% CI ($\mu$s)",
               "busbw (GB/s)", f"vs {tex_escape(baseline)}"]
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{lrrrrrr}", r"\toprule",
           " & ".join(headers) + r" \\", r"\midrule"]
    previous = None
    for _, r in rows.iterrows():
        if previous is not None and r["_group"] != previous:
            out.append(r"\midrule")
        previous = r["_group"]
        out.append(" & ".join(tex_escape(r[h]) for h in HEADERS) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(caption)}}}",
            r"\label{tab:collbench-summary}", r"\end{table}"]
    return "\n".join(out) + "\n"
