"""The Python API for notebooks and scripts; it mirrors the CLI (run it under mpiexec).

>>> from collbench import api
>>> status = api.run(algorithms="ring,native", minbytes="1K", maxbytes="1M", out="results/nb")
>>> provenance, summary, samples = api.read("results/nb")
"""

from __future__ import annotations

from collbench.config import RunConfig, load_experiment, make_config
from collbench.store import read_results as read


def config(experiment: str | None = None, **settings) -> RunConfig:
    """A checked RunConfig from an optional experiment file and keyword settings (the CLI's
    long flag names: ``algorithms``, ``minbytes``, ``iters``...), keywords winning."""
    merged = load_experiment(experiment) if experiment else {}
    merged.update(settings)
    return make_config(merged)


def run(experiment: str | None = None, comm=None, output_format: str = "table", **settings) -> int:
    """Run a sweep on *comm* (default MPI.COMM_WORLD); returns the exit status (0, or 1 if any
    element was wrong). Every rank of the job must call it."""
    from collbench.harness import run_sweep

    return run_sweep(config(experiment, **settings), comm, output_format)


__all__ = ["config", "read", "run"]
