"""``collbench run``: measure a sweep under ``mpiexec``/``srun``.

Short flags mean what they mean in nccl-tests' all_reduce_perf where both have them (-b -e
-f -n -w -c -d -o -a -m -T); collbench's own settings have long forms only, and nccl-tests'
letters collbench has no use for (-t -g -i -z -G -p -r ...) are left free."""

from __future__ import annotations

import argparse
import sys

from collbench.algorithms.ops import DTYPE_ALIASES, DTYPES
from collbench.config import load_experiment, make_config
from collbench.errors import CollbenchError


def register(sub) -> None:
    p = sub.add_parser("run", help="measure all-reduce algorithms (start under mpiexec or srun)",
                       description="Measure all-reduce algorithms with nccl-tests' flags. Start it "
                       "under mpiexec or srun, e.g. 'mpiexec -n 4 collbench run -b 8 -e 64M -f 4'. "
                       "Exit status: 0, 1 if a result was wrong, 2 for bad input, 3 if the average "
                       "bus bandwidth is below --min-busbw.")
    p.add_argument("-x", "--experiment", metavar="FILE", help="experiment file (TOML) with a [run] table")
    p.add_argument("--algorithms", help="comma list of naive, ring, rabenseifner, native (default all; "
                   "verbs: all but native)")
    p.add_argument("--transport", help="mpi (default), nccl or verbs")
    p.add_argument("-b", "--minbytes", help="smallest size, e.g. 8, 1K, 1MiB (default 8)")
    p.add_argument("-e", "--maxbytes", help="largest size (default 64M)")
    p.add_argument("-f", "--stepfactor", help="multiply the size by this each step (default 4)")
    p.add_argument("-n", "--iters", help="timed iterations per point (default 20)")
    p.add_argument("-w", "--warmup_iters", help="warm-up iterations after the first (default 5)")
    p.add_argument("-m", "--agg_iters", help="calls per timed iteration, back to back (default 1)")
    p.add_argument("-a", "--average", help="how the ranks' times combine: 0 rank 0, 1 mean, 2 min, "
                   "3 max (default 3 for per-call timing, 1 for aggregate)")
    p.add_argument("--timing", help="per-call (default: a barrier before each iteration) or aggregate "
                   "(the iterations back to back after one barrier, as all_reduce_perf)")
    p.add_argument("-c", "--check_iters", help="checking iterations per point (default 1)")
    p.add_argument("-d", "--datatype", help=f"{', '.join(DTYPES)} (default float32), or nccl-tests' "
                   f"names {', '.join(DTYPE_ALIASES)}")
    p.add_argument("-o", "--op", help="sum (default), prod, min, max, avg")
    p.add_argument("--modes", help="out and/or in (default out,in)")
    p.add_argument("--segments", help="pipeline segments per ring chunk (default 1)")
    p.add_argument("--execution", help="step (default: post a step, wait for all of it) or dataflow "
                   "(each op once what it needs is done; mpi with numpy buffers)")
    p.add_argument("--trace", metavar="FILE", help="write every op's events (one untimed call per point) "
                   "in Chrome trace format, for Perfetto")
    p.add_argument("-T", "--timeout", help="seconds without progress before the job aborts (default 300)")
    p.add_argument("--buffers", help="numpy (host, default) or cupy (device)")
    p.add_argument("--device", help="RDMA device for the verbs transport (default: the first)")
    p.add_argument("--mpi-thread-level", dest="mpi_thread_level",
                   help="MPI thread level to initialise with: single, funneled (default, as an "
                   "application with threads of its own), serialized or multiple")
    p.add_argument("--name", help="run name, the results folder's suffix (default run)")
    p.add_argument("--out", metavar="DIR", help="results folder (default results/<time>-<name>); "
                   "an existing one is resumed if it was measured with the same settings")
    p.add_argument("--force-new", action="store_true",
                   help="do not resume: move an existing --out folder aside to DIR.<UTC time> "
                   "(nothing is deleted) and start afresh in DIR")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="what rank 0 prints (the folder always gets CSV)")
    p.add_argument("--rank-samples", dest="rank_samples", metavar="all|none",
                   help="keep each rank's own time of every iteration in samples.csv (all, default) "
                   "or only the times combined over ranks (none: P+1 times fewer rows)")
    p.add_argument("--min-busbw", metavar="GB/s",
                   help="exit with status 3 if the average bus bandwidth of the points measured "
                   "is below this (the results are stored either way)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (a bar on a terminal, plain lines otherwise)")
    p.set_defaults(func=run_command)


_SETTINGS = ("algorithms", "transport", "minbytes", "maxbytes", "stepfactor", "iters",
             "warmup_iters", "agg_iters", "average", "timing", "check_iters", "datatype", "op",
             "modes", "segments", "execution", "trace", "timeout", "buffers", "device",
             "mpi_thread_level", "rank_samples", "name", "out")


def parse_gbps(text: str | None) -> float | None:
    """``--min-busbw``'s value in GB/s; raises CollbenchError unless it is a number >= 0."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CollbenchError(f"--min-busbw takes a bandwidth in GB/s, got {text!r}") from None
    if not value >= 0:
        raise CollbenchError(f"--min-busbw must be at least 0 GB/s, got {text}")
    return value


def run_command(args: argparse.Namespace) -> int:
    settings = load_experiment(args.experiment) if args.experiment else {}
    settings.update({k: getattr(args, k) for k in _SETTINGS if getattr(args, k) is not None})
    config = make_config(settings)  # all checks happen before MPI starts
    min_busbw = parse_gbps(args.min_busbw)
    from collbench.harness import run_sweep

    return run_sweep(config, output_format=args.format, show_progress=not args.no_progress,
                     argv=sys.argv, force_new=args.force_new, min_busbw=min_busbw)
