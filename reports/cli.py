"""``collbench report``: figures, tables and an index page from results folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from collbench.errors import CollbenchError


def register(subparsers) -> None:
    """Add the ``report`` sub-command to *subparsers* (see :mod:`collbench.cli`)."""
    p = subparsers.add_parser(
        "report",
        help="figures and tables for papers from results folders",
        description="Read any mix of results folders (measured, simulated, closed-form model) and "
        "write figures (PDF/PNG/SVG), Markdown and LaTeX tables, and an index page with captions "
        "that carry each run's provenance.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="results folders to read, or folders above them such as a Slurm sweep")
    p.add_argument("--out", default="report", metavar="DIR", help="report folder (default: report/)")
    p.add_argument("--formats", default="pdf,png", metavar="LIST",
                   help="figure formats, comma-separated from pdf, png, svg (default: pdf,png)")
    p.add_argument("--baseline", metavar="ALG",
                   help="algorithm the speed-ups compare against (default: native, else naive)")
    p.add_argument("--size", metavar="SIZES",
                   help="message size(s) for the bar, distribution and scaling figures, e.g. 256M or "
                   "1K,256MiB (default: the largest measured)")
    p.add_argument("--ranks", type=int, metavar="P",
                   help="rank count for the per-size figures (default: the one with most measurements)")
    p.add_argument("--width", choices=("single", "double"), default="single",
                   help="single-column (3.3 in) or double-column (7 in) figures (default: single)")
    p.add_argument("--in-place", action="store_true",
                   help="show in-place points where both modes exist (default: out-of-place)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Make the report; bad input raises CollbenchError, which the CLI prints as one line."""
    from collbench.reports.build import make_report, parse_formats
    from collbench.reports.common import Options
    from collbench.reports.data import parse_size

    if args.ranks is not None and args.ranks < 1:
        raise CollbenchError(f"--ranks must be a positive rank count, not {args.ranks}")
    sizes = tuple(parse_size(s) for s in args.size.split(",")) if args.size else ()
    opts = Options(width=args.width, baseline=args.baseline, sizes=sizes, ranks=args.ranks)
    report = make_report(args.results, Path(args.out), opts, parse_formats(args.formats),
                         in_place=True if args.in_place else None)
    print(f"report: {len(report.plots)} figures in {report.out}/ (index.md, index.html, summary.md, "
          f"summary.tex)")
    for title, reason in report.skipped:
        print(f"report: not drawn: {title}: {reason}")
    return 0
