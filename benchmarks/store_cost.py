"""What storing a point costs the results store, and whether it grows with the points before it.

Stores *points* points of *samples* timed iterations each through
:class:`collbench.store.ResultsWriter` into a fresh folder and prints the time taken, the bytes
written (the process's ``wchar`` from ``/proc/self/io``, so every byte any write makes, fsyncs
aside) and the bytes written for the first and the last point. An append-only store writes
about the same for point N as for point 1; one that rewrites its files writes N times more.
``--store`` loads another ``store.py`` (an older version, say) in place of the installed one.

    .venv/bin/python benchmarks/store_cost.py                        # 120 points of 2000 samples
    .venv/bin/python benchmarks/store_cost.py --points 300 --samples 100
    git show 019e451:collbench/store.py > /tmp/store_old.py
    .venv/bin/python benchmarks/store_cost.py --store /tmp/store_old.py
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path
from types import ModuleType

from collbench.schema import POINT_KEY, SUMMARY_COLUMNS


def load_store(path: str | None) -> ModuleType:
    """The installed :mod:`collbench.store`, or the module in the file *path*."""
    if path is None:
        from collbench import store

        return store
    spec = importlib.util.spec_from_file_location("store_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def written_bytes() -> int:
    """Bytes this process has passed to write calls so far (Linux ``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no wchar line")


def point(k: int, samples: int) -> tuple[dict, list[dict]]:
    """The summary row and timed sample rows of the *k*-th point (its size makes it unique)."""
    key = {"source": "measured", "transport": "mpi", "algorithm": "ring", "nranks": 2,
           "size_bytes": 8 * (k + 1), "dtype": "float32", "op": "sum", "in_place": False}
    rows = [{**key, "count": 2 * (k + 1), "phase": "timed", "iter": i, "time_us": 12.345678 + i * 1e-3}
            for i in range(samples)]
    figures = [c for c in SUMMARY_COLUMNS if c not in POINT_KEY and c != "schema_version"]
    return {**dict.fromkeys(figures, 1.25), **key}, rows


def measure(store: ModuleType, folder: Path, points: int, samples: int) -> tuple[float, int, list[int]]:
    """Seconds and bytes to store *points* points in *folder*, and the bytes of each point."""
    start, before = time.perf_counter(), written_bytes()
    writer = store.ResultsWriter(folder, {"name": "store-cost"})
    per_point = []
    for k in range(points):
        summary, rows = point(k, samples)
        b = written_bytes()
        writer.add_point(summary, rows)
        per_point.append(written_bytes() - b)
    if hasattr(writer, "close"):
        writer.close()
    return time.perf_counter() - start, written_bytes() - before, per_point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=120, help="points to store (default 120)")
    parser.add_argument("--samples", type=int, default=2000, help="timed samples per point (default 2000)")
    parser.add_argument("--store", metavar="FILE", help="a store.py to measure instead of collbench.store")
    parser.add_argument("--dir", metavar="DIR", help="where to make the folder (default: the temp dir)")
    args = parser.parse_args()
    if args.points < 1 or args.samples < 0:
        parser.error("--points must be at least 1 and --samples at least 0")
    store = load_store(args.store)
    root = Path(tempfile.mkdtemp(prefix="store-cost-", dir=args.dir))
    try:
        seconds, total, per_point = measure(store, root / "run", args.points, args.samples)
        on_disk = sum(f.stat().st_size for f in (root / "run").iterdir())
    finally:
        shutil.rmtree(root)
    print(f"{args.store or 'collbench.store'}: {args.points} points of {args.samples} samples: "
          f"{seconds:.2f} s, {total / 1e6:.1f} MB written ({on_disk / 1e6:.1f} MB on disk); "
          f"point 1 {per_point[0] / 1e3:.0f} kB, point {args.points} {per_point[-1] / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
