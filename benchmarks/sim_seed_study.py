"""The seed study's setting, predicted: 8 ranks, one per node, 256 MiB float32, on nodes of
P100 GPUs with two FDR rails (the ``p100-fdr2-pcie`` preset), beside the bound that perfect
striping over both rails would give and what the seed study measured.

    .venv/bin/python benchmarks/sim_seed_study.py
"""

from __future__ import annotations

from dataclasses import replace

from collbench.algorithms import build
from collbench.sim.executor import simulate
from collbench.sim.presets import load_network

MEASURED = {"ring": 0.097}
"""The seed study's fastest single run of all (a ring, P100 GPUs, FDR x2); it reported no
comparable figure for naive or Rabenseifner in this setting."""


def main() -> None:
    spec = load_network("p100-fdr2-pcie")
    striped = replace(spec, name="two rails bonded", topology="switch", pcie_bandwidth=0.0)
    p, size = 8, 256 * 2**20
    print(f"# {spec.name}: {spec.topology}, {spec.nics_per_node} rails of {spec.bandwidth * 8 / 1e9:g} Gb/s, "
          f"PCIe {spec.pcie_bandwidth / 1e9:g} GB/s, latency {spec.latency * 1e6:g} us, overhead "
          f"{spec.overhead * 1e6:g} us, reduction {1e-9 / spec.gamma:g} GB/s; P={p}, 256 MiB float32")
    print("| algorithm | one rail per rank (s) | busbw (GB/s) | both rails striped, a bound (s) | "
          "seed study measured (s) |")
    print("|---|---|---|---|---|")
    for algorithm in ("naive", "ring", "rabenseifner"):
        simulated = simulate(build(algorithm, p, size // 4), spec, 4).time
        bound = simulate(build(algorithm, p, size // 4), striped, 4).time
        busbw = size / simulated / 1e9 * 2 * (p - 1) / p
        measured = MEASURED.get(algorithm)
        print(f"| {algorithm} | {simulated:.4f} | {busbw:.2f} | {bound:.4f} | "
              f"{measured if measured is not None else '-'} |")


if __name__ == "__main__":
    main()
