"""The seed study's setting, predicted: 8 ranks, one per node, 256 MiB, two FDR links per
node (the ``ib-fdr`` preset), beside what the seed study measured there.

    .venv/bin/python benchmarks/sim_seed_study.py
"""

from __future__ import annotations

from collbench.algorithms import build
from collbench.sim import analytic
from collbench.sim.executor import simulate
from collbench.sim.presets import load_network

MEASURED = {"ring": 0.097}
"""The seed study's fastest single run of all (a ring, P100 GPUs, FDR x2); it reported no
comparable figure for naive or Rabenseifner in this setting."""


def main() -> None:
    spec = load_network("ib-fdr")
    p, size = 8, 256 * 2**20
    print(f"# {spec.name}: {spec.nics_per_node} x {spec.bandwidth * 8 / 1e9:g} Gb/s per node, "
          f"latency {spec.latency * 1e6:g} us, overhead {spec.overhead * 1e6:g} us, "
          f"reduction {1e-9 / spec.gamma:g} GB/s; P={p}, 256 MiB float32")
    print("| algorithm | simulated (s) | closed form (s) | busbw (GB/s) | seed study measured (s) |")
    print("|---|---|---|---|---|")
    for algorithm in ("naive", "ring", "rabenseifner"):
        simulated = simulate(build(algorithm, p, size // 4), spec, 4).time
        closed = analytic.predict(algorithm, p, size, analytic.Params.of(spec), spec.topology)
        busbw = size / simulated / 1e9 * 2 * (p - 1) / p
        measured = MEASURED.get(algorithm)
        print(f"| {algorithm} | {simulated:.4f} | {closed:.4f} | {busbw:.2f} | "
              f"{measured if measured is not None else '-'} |")


if __name__ == "__main__":
    main()
