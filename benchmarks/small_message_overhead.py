"""Ring and Rabenseifner at 8 B against the MPI library's own all-reduce at P = 2, at each MPI
thread level: the per-step overhead of the Python executor as an application would see it.

Runs ``collbench run --algorithms ring,rabenseifner,native -b 8 -e 8 --modes out`` under the venv's mpiexec,
two ranks bound to cores, once per thread level (single, funneled, multiple) in one pass, and
repeats the pass; prints each median time (the median over passes of each job's median) and
the ratios to native at the same level and to native at THREAD_SINGLE, which is what OSU's
``osu_allreduce`` (``MPI_Init``) measures. Target: ring and Rabenseifner within 6x of
THREAD_SINGLE native. On a shared machine, read only ratios from one pass.

Usage: python benchmarks/small_message_overhead.py [--iters 5000] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

BIN = Path(sys.executable).parent
LEVELS = ("single", "funneled", "multiple")
ALGORITHMS = ("ring", "rabenseifner", "native")
TARGET = 6.0


def measure(level: str, iters: int, folder: Path) -> pd.DataFrame:
    """One job at *level*: the summary rows of the three algorithms at 8 B."""
    command = [str(BIN / "mpiexec"), "-n", "2", "--bind-to", "core", str(BIN / "collbench"), "run",
               "--algorithms", ",".join(ALGORITHMS), "-b", "8", "-e", "8", "--modes", "out", "-n", str(iters),
               "-w", "200", "--mpi-thread-level", level, "--no-progress", "--out", str(folder)]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    summary = pd.read_csv(folder / "summary.csv")
    return summary.assign(level=level)[["level", "algorithm", "median_us"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="keep the results folders here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="small-message-"))
    print(f"# {platform.node()}, {os.cpu_count()} CPUs, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} "
          f"UTC, load {os.getloadavg()[0]:.1f}; {args.iters} timed calls, 8 B float32 sum, P = 2, "
          f"bound; results in {out}")
    rows = []
    for repeat in range(args.repeats):
        for level in LEVELS:
            rows.append(measure(level, args.iters, out / f"{level}-{repeat}").assign(repeat=repeat))
    data = pd.concat(rows, ignore_index=True)
    per_pass = data.pivot_table(index=["repeat", "level"], columns="algorithm", values="median_us")
    baseline = per_pass.xs("single", level="level")["native"]
    for name in ("ring", "rabenseifner"):
        per_pass[f"{name}/native"] = per_pass[name] / per_pass["native"]
        per_pass[f"{name}/native(single)"] = per_pass[name] / baseline.reindex(
            per_pass.index.get_level_values("repeat")).to_numpy()
    summary = per_pass.groupby(level="level").median().reindex(list(LEVELS))
    pd.set_option("display.width", 160)
    print("\n# per pass (times in us, ratios within the pass)")
    print(per_pass.round(2).to_string())
    print("\n# median over passes")
    print(summary.round(2).to_string())
    default = summary.loc["funneled"]
    for name in ("ring", "rabenseifner"):
        ratio = default[f"{name}/native(single)"]
        print(f"{name} at funneled: {ratio:.1f}x THREAD_SINGLE native "
              f"({'within' if ratio <= TARGET else 'OVER'} the {TARGET:g}x target)")


if __name__ == "__main__":
    main()
