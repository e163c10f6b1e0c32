"""What rank 0 prints: an nccl-tests style table (a line per point as it finishes, with a
units row), or CSV / JSON for machines; progress goes to stderr only on a terminal."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path

from collbench.schema import SUMMARY_COLUMNS
from collbench.stats import CONFIDENCE, ci_order, level_percent

_COLUMNS = (  # (title, unit, width, row key or None, format)
    ("size", "(B)", 12, "size_bytes", "d"),
    ("count", "(elements)", 12, "count", "d"),
    ("type", "", 8, "dtype", "s"),
    ("redop", "", 6, "op", "s"),
    ("algorithm", "", 13, "algorithm", "s"),
    ("place", "", 6, None, "s"),
    ("time", "(us)", 11, "median_us", ".2f"),
    ("ci{level}-lo", "(us)", 11, "ci_low_us", ".2f"),
    ("ci{level}-hi", "(us)", 11, "ci_high_us", ".2f"),
    ("first", "(us)", 11, "first_us", ".2f"),
    ("cv", "", 7, "cv", ".3f"),
    ("algbw", "(GB/s)", 11, "algbw_GBps", ".3f"),
    ("busbw", "(GB/s)", 11, "busbw_GBps", ".3f"),
    ("#wrong", "", 7, "n_wrong", "d"),
)


def _cell(row: dict, key: str | None, fmt: str, width: int) -> str:
    if key is None:
        value = "in" if row["in_place"] else "out"
    else:
        value = row[key]
    return f"{value:>{width}{fmt}}"


class PointPrinter:
    """Prints on rank 0 only (``enabled``); *fmt* is ``table``, ``csv`` or ``json``."""

    def __init__(self, fmt: str, folder: Path, enabled: bool = True) -> None:
        self.fmt, self.folder, self.enabled = fmt, folder, enabled
        self.rows: list[dict] = []

    def header(self, config, nranks: int, transport: dict, skipped: int) -> None:
        if not self.enabled or self.fmt != "table":
            return
        details = ", ".join(f"{k}={v}" for k, v in transport.items() if k != "transport")
        print(f"# collbench: {nranks} ranks, transport {config.transport}"
              f"{' (' + details + ')' if details else ''}, {config.datatype} {config.op}, "
              f"{config.iters} iters + {config.warmup_iters} warm-up + first, "
              f"{config.check_iters} check(s); time = median of the max over ranks")
        print(f"# results: {self.folder}")
        level = ci_order(config.iters)[1]
        print(f"# ci: {level_percent(level)} confidence interval of the median (order statistics "
              f"of {config.iters} timed iterations)"
              + (f", too few for {level_percent(CONFIDENCE)}: raise -n" if level < CONFIDENCE else ""))
        if skipped:
            print(f"# resuming: {skipped} point(s) already stored are skipped")
        label = level_percent(level).rstrip("%")
        print("#" + "".join(f"{t.format(level=label):>{w}}" for t, _, w, _, _ in _COLUMNS)[1:])
        print("#" + "".join(f"{u:>{w}}" for _, u, w, _, _ in _COLUMNS)[1:], flush=True)

    def row(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        if self.fmt == "table":
            print(" " + "".join(_cell(row, k, f, w) for _, _, w, k, f in _COLUMNS)[1:], flush=True)

    def footer(self, wrong_points: int) -> None:
        if not self.enabled:
            return
        if self.fmt == "csv":
            writer = csv.DictWriter(sys.stdout, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
        elif self.fmt == "json":
            print(json.dumps({"results": str(self.folder), "points": self.rows}, indent=1, default=float))
        else:
            print(f"# {len(self.rows)} point(s) measured; results in {self.folder}")
            registering = [r for r in self.rows if isinstance(r.get("reg_timed"), int) and r["reg_timed"]]
            if registering:
                print(f"# {len(registering)} point(s) registered memory inside timed calls (reg_timed in "
                      "summary.csv); raise COLLBENCH_VERBS_REGCACHE_LIMIT to keep their buffers registered")
        if wrong_points:
            print(f"collbench: error: {wrong_points} point(s) had wrong results (see #wrong)",
                  file=sys.stderr)
        sys.stdout.flush()

    @contextlib.contextmanager
    def progress(self, total: int, show: bool):
        """A callable to advance by one point; a rich progress bar on a terminal."""
        if not (self.enabled and show and sys.stderr.isatty()):
            yield lambda: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("points", total=total)
            yield lambda: bar.advance(task)
