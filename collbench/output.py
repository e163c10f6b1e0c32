"""What rank 0 prints: an nccl-tests style table (a line per point as it finishes, with a
units row, and the average bus bandwidth at the end), or CSV / JSON for machines; progress
goes to stderr, as a live bar on a terminal and as plain lines anywhere else (mpiexec and
Slurm hand rank 0 a pipe or a file)."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from pathlib import Path

from collbench.config import AVERAGES
from collbench.schema import SUMMARY_COLUMNS
from collbench.stats import CONFIDENCE, ci_order, level_percent

BELOW_MIN_BUSBW = 3
"""Exit status of a run whose average bus bandwidth is below ``--min-busbw``."""

PROGRESS_INTERVAL = 10.0
"""Seconds between plain progress lines (the first and last point always get one)."""

_COLUMNS = (  # (title, unit, width, row key or None, format)
    ("size", "(B)", 12, "size_bytes", "d"),
    ("count", "(elements)", 12, "count", "d"),
    ("type", "", 9, "dtype", "s"),
    ("redop", "", 6, "op", "s"),
    ("algorithm", "", 13, "algorithm", "s"),
    ("place", "", 6, None, "s"),
    ("time", "(us)", 11, "reported_us", ".2f"),
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


def timing_words(config) -> str:
    """What the table's time column is, in words."""
    over_ranks = AVERAGES[config.average]
    per = f"per call of {config.agg_iters} back to back" if config.agg_iters > 1 else "per call"
    if config.timing == "aggregate":
        return (f"time = aggregate: {config.iters} iterations back to back after one barrier, "
                f"{per}, each rank's mean, {over_ranks} over ranks")
    return f"time = per-call: barrier before each iteration, {per}, median of the {over_ranks} over ranks"


def average_busbw(rows: list[dict]) -> float:
    """nccl-tests' footer: the plain mean of the bus bandwidth of every point printed."""
    return sum(float(r["busbw_GBps"]) for r in rows) / len(rows) if rows else float("nan")


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
              f"{config.check_iters} check(s); {timing_words(config)}")
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
            print(json.dumps({"results": str(self.folder), "points": self.rows,
                              "avg_busbw_GBps": average_busbw(self.rows)}, indent=1, default=float))
        else:
            print(f"# Out of bounds values : {wrong_points} {'FAILED' if wrong_points else 'OK'}")
            print(f"# Avg bus bandwidth    : {average_busbw(self.rows):.6g} GB/s")
            print(f"# {len(self.rows)} point(s) measured; results in {self.folder}")
            registering = [r for r in self.rows if isinstance(r.get("reg_timed"), int) and r["reg_timed"]]
            if registering:
                print(f"# {len(registering)} point(s) registered memory inside timed calls (reg_timed in "
                      "summary.csv); raise COLLBENCH_VERBS_REGCACHE_LIMIT to keep their buffers registered")
        if wrong_points:
            print(f"collbench: error: {wrong_points} point(s) had wrong results (see #wrong)",
                  file=sys.stderr)
        sys.stdout.flush()

    def check_min_busbw(self, min_busbw: float | None) -> int:
        """0, or :data:`BELOW_MIN_BUSBW` with one sentence on stderr if the average bus
        bandwidth of the points measured is below *min_busbw* GB/s."""
        if min_busbw is None or not self.rows:
            return 0
        average = average_busbw(self.rows)
        if average >= min_busbw:
            return 0
        print(f"collbench: error: the average bus bandwidth {average:.6g} GB/s is below "
              f"--min-busbw {min_busbw:g} GB/s (results are stored in {self.folder})", file=sys.stderr)
        return BELOW_MIN_BUSBW

    @contextlib.contextmanager
    def progress(self, total: int, show: bool):
        """A callable to advance by one point: a rich bar on a terminal, plain lines else."""
        if not (self.enabled and show and total):
            yield lambda: None
            return
        if not sys.stderr.isatty():
            yield ProgressLines(total).advance
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("points", total=total)
            yield lambda: bar.advance(task)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ProgressLines:
    """Progress for a pipe or a log file: ``collbench: progress D/T points, elapsed E, ETA R``
    after the first point, the last, and at most every *interval* seconds between."""

    def __init__(self, total: int, interval: float = PROGRESS_INTERVAL, stream=None) -> None:
        self.total, self.interval, self.stream = total, interval, stream
        self.done, self.start = 0, time.monotonic()
        self.last = self.start

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if not (self.done in (1, self.total) or now - self.last >= self.interval):
            return
        self.last, elapsed = now, now - self.start
        eta = elapsed / self.done * (self.total - self.done)
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError):  # a closed stderr must not stop the measurement
            print(f"collbench: progress {self.done}/{self.total} points, elapsed {_duration(elapsed)}, "
                  f"ETA {_duration(eta)}", file=stream, flush=True)
