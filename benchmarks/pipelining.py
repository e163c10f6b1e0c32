"""Step against dataflow execution of the ring, simulated and measured.

Simulated: the seed study's shape (P = 8, one rank per node, two FDR links per node, 256 MiB,
CPU reduction at 5 GB/s) for S = 1..32 segments, beside the pipelined ring's bound
(:func:`collbench.sim.analytic.ring_dataflow_bound`). Measured: this machine over MPI, step and
dataflow run alternately in one job (so their ratio sees the same machine), the median of
*reps* calls each (the max over ranks of each call), for the ring at a few sizes and S, and
every algorithm at 8 B (what dataflow's bookkeeping costs a small message).

    .venv/bin/python benchmarks/pipelining.py                 # both, P = 2 measured
    .venv/bin/python benchmarks/pipelining.py --ranks 4 --sizes 1M,16M --segments 1,4,16
    .venv/bin/python benchmarks/pipelining.py --simulated-only
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def simulated(segments: list[int]) -> None:
    from collbench.algorithms import build
    from collbench.sim import analytic
    from collbench.sim.dataflow import simulate_dataflow
    from collbench.sim.executor import simulate
    from collbench.sim.presets import load_network

    spec = load_network("ib-fdr").with_overrides(nics_per_node=2, gamma=1 / 5e9)
    p, size = 8, 256 << 20
    q = analytic.Params.of(spec)
    print(f"# simulated: {spec.name}, {spec.nics_per_node} x {spec.bandwidth * 8 / 1e9:g} Gb/s per node, "
          f"reduction 5 GB/s, P={p}, 256 MiB float32")
    print("| S | step (ms) | dataflow (ms) | bound (ms) | step/dataflow | dataflow/bound |")
    print("|---|---|---|---|---|---|")
    for s in segments:
        schedule = build("ring", p, size // 4, **({"segments": s} if s > 1 else {}))
        step, flow = simulate(schedule, spec).time, simulate_dataflow(schedule, spec).time
        bound = analytic.ring_dataflow_bound(p, size, q, s)
        print(f"| {s} | {step * 1e3:.2f} | {flow * 1e3:.2f} | {bound * 1e3:.2f} | {step / flow:.2f} | "
              f"{flow / bound:.3f} |", flush=True)


def measured(sizes: list[int], segments: list[int], reps: int) -> None:
    """Run under mpiexec: print one table row per point from rank 0."""
    import numpy as np
    from collbench.algorithms import build
    from collbench.algorithms.data import make_input
    from collbench.algorithms.ops import ReduceOp
    from mpi4py import MPI

    from collbench.config import make_config
    from collbench.dataflow import DataflowExecutor
    from collbench.executor import Executor
    from collbench.transports import open_transport

    comm = MPI.COMM_WORLD
    transport = open_transport("mpi", comm, make_config({}))
    points = [("ring", size, s) for size in sizes for s in segments]
    points += [(name, 8, 1) for name in ("naive", "ring", "rabenseifner")]
    if comm.rank == 0:
        print(f"# measured: P={comm.size} over MPI ({transport.describe()['library']}, wait "
              f"{transport.wait}), {os.cpu_count()} cores, median of {reps} calls each, alternating")
        print("| algorithm | size | S | step (us) | dataflow (us) | dataflow/step |")
        print("|---|---|---|---|---|---|")
    for name, size, s in points:
        count = size // 4
        schedule = build(name, comm.size, count, **({"segments": s} if s > 1 else {}))
        send = make_input(comm.rank, comm.size, count, "float32", ReduceOp.SUM)
        recv = np.empty_like(send)
        runs = {"step": Executor(schedule, transport, "float32", ReduceOp.SUM).run,
                "dataflow": DataflowExecutor(schedule, transport, "float32", ReduceOp.SUM).run}
        times: dict[str, list[float]] = {mode: [] for mode in runs}
        n = reps if size < (1 << 20) else max(3, reps // 10)
        for i in range(n + 2):  # two warm-up rounds
            for mode, run in runs.items():
                comm.Barrier()
                t = MPI.Wtime()
                run(recv, send)
                t = comm.allreduce(MPI.Wtime() - t, op=MPI.MAX)
                if i >= 2:
                    times[mode].append(t)
        if comm.rank == 0:
            step, flow = (float(np.median(times[m])) * 1e6 for m in ("step", "dataflow"))
            print(f"| {name} | {size} | {s} | {step:.1f} | {flow:.1f} | {flow / step:.3f} |", flush=True)


def _sizes(text: str) -> list[int]:
    from collbench.sizes import parse_size

    return [parse_size(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--sizes", default="1M,16M,256M")
    parser.add_argument("--segments", default="1,4,16")
    parser.add_argument("--sim-segments", default="1,2,4,8,16,32")
    parser.add_argument("--reps", type=int, default=200, help="calls per mode below 1 MiB (a tenth above)")
    parser.add_argument("--simulated-only", action="store_true")
    parser.add_argument("--measured-only", action="store_true")
    parser.add_argument("--inside-mpi", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    segments = [int(s) for s in args.segments.split(",")]
    if args.inside_mpi:
        measured(_sizes(args.sizes), segments, args.reps)
        return
    if not args.measured_only:
        simulated([int(s) for s in args.sim_segments.split(",")])
    if args.simulated_only:
        return
    launcher = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if launcher is None:
        sys.exit("no mpiexec beside Python or on PATH: pip install mpi4py mpich")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([launcher, "-n", str(args.ranks), sys.executable, __file__, "--inside-mpi",
                    "--sizes", args.sizes, "--segments", args.segments, "--reps", str(args.reps)],
                   check=True, env=env)


if __name__ == "__main__":
    main()
