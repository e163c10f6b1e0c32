"""Test data for the simulator: counts every schedule splits evenly, and 'measured' results
folders whose times come from the SimPy model itself (for calibration to recover)."""

from __future__ import annotations

from collbench.algorithms import build
from collbench.sim.executor import simulate
from collbench.sim.network import NetworkSpec
from collbench.sim.results import summary_row

from collbench.store import ResultsWriter


def even_count(p: int, k: int) -> int:
    """A count every schedule splits evenly at *p* ranks: a multiple of 2P and of 2p'."""
    return k * 2 * p * (1 << p.bit_length())


def model_run(folder, spec: NetworkSpec, ranks, ks, *, one_host: bool = False,
              provenance: dict | None = None) -> ResultsWriter:
    """A results writer on *folder* holding every algorithm at every P in *ranks* and count
    ``even_count(P, k)``, timed by the model; one rank per node, or all on one host."""
    writer = ResultsWriter(folder, {"name": "synthetic", "source": "measured", **(provenance or {})})
    for algorithm in ("naive", "ring", "rabenseifner"):
        for p in ranks:
            for k in ks:
                count = even_count(p, k)
                seconds = simulate(build(algorithm, p, count), spec, 4).time
                writer.add_point(summary_row(source="measured", network="mpi", algorithm=algorithm, nranks=p,
                                             size_bytes=4 * count, dtype="float32", itemsize=4,
                                             seconds=seconds, ranks_per_node=p if one_host else 1))
    return writer
