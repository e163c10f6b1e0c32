"""Synthetic results folders, written by the project's own writer, for the tests and for trying
a report without a cluster. Times follow an α-β model with seeded noise, a slow first call and
slower warm-ups, so every figure has something to show; nothing here is a measurement."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from collbench.lineage import CALIBRATED_FROM, run_ref
from collbench.stats import summarise
from collbench.store import ResultsWriter, read_results

ALPHA_US, BETA_US_PER_BYTE = 5.0, 1e-4  # 5 µs latency, 10 GB/s links
NOISE_CV = {"naive": 0.06, "ring": 0.03, "rabenseifner": 0.03, "native": 0.02}


def model_time_us(algorithm: str, nranks: int, size: int) -> float:
    """α-β time of *algorithm*: the shapes that make the algorithms cross over."""
    p = nranks
    if p == 1:
        return 1.0
    if algorithm == "naive":  # reduce to rank 0 then broadcast, whole buffer each hop
        return 2 * (p - 1) * (ALPHA_US + size * BETA_US_PER_BYTE)
    if algorithm == "ring":
        return 2 * (p - 1) * ALPHA_US + 2 * (p - 1) / p * size * BETA_US_PER_BYTE
    steps = 2 * math.ceil(math.log2(p))
    if algorithm == "rabenseifner":
        return steps * ALPHA_US + 2 * (p - 1) / p * size * BETA_US_PER_BYTE * 1.05
    return 0.8 * steps * ALPHA_US + 2 * (p - 1) / p * size * BETA_US_PER_BYTE * 1.1


def provenance(name: str, source: str, nranks: int, **extra) -> dict:
    """A ``run.json`` with every key of :data:`collbench.schema.PROVENANCE_KEYS`."""
    hosts = [f"node{i:02d}" for i in range(max(1, nranks // 4))] if source == "measured" else []
    base = {
        "name": name, "source": source, "command": ["collbench", "synthetic"],
        "config": {"iters": 20, "warmup_iters": 3, "check_iters": 1, "dtype": "float32", "op": "sum"},
        "nranks": nranks, "hosts": hosts, "ranks_per_node": {h: nranks // len(hosts) for h in hosts},
        "versions": {"python": "3.11.2", "numpy": "2.1.0", "mpi4py": "4.0.1",
                     "mpi_library": "MPICH Version:\t4.2.3\nMPICH Release date: ..."},
        "environment": {}, "slurm": None, "git_commit": "0123456789abcdef",
        "machine": {"platform": "Linux", "cpus": 2},
        "start_time": "2025-03-14T09:26:53Z", "end_time": "2025-03-14T09:30:00Z",
    }
    if source != "measured":
        base["network"] = {"name": "synthetic-10GBps"}
    return {**base, **extra}


def write_run(folder: Path | str, *, name: str, source: str = "measured", transport: str = "mpi",
              algorithms: Iterable[str] = ("naive", "ring", "rabenseifner", "native"),
              ranks: Iterable[int] = (8,), sizes: Iterable[int] = tuple(4**k for k in range(2, 15)),
              iters: int = 20, warmup: int = 3, seed: int = 0, slowdown: float = 1.0,
              in_place: Iterable[bool] = (False,), ranks_per_node: int = 4,
              calibrated_from: Iterable[Path] | None = None, **extra) -> Path:
    """Write one results folder: measured runs with samples, predictions with summary only.

    *calibrated_from*: measured folders a prediction is linked to, as ``sim predict
    --calibration`` links it (:mod:`collbench.lineage`); *extra* goes into ``run.json``."""
    rng = np.random.default_rng(seed)
    ranks = list(ranks)
    if calibrated_from is not None:
        extra[CALIBRATED_FROM] = [run_ref(f, read_results(f)[0]) for f in calibrated_from]
    writer = ResultsWriter(folder, provenance(name, source, max(ranks), **extra))
    for p in ranks:
        for alg in algorithms:
            for size in sizes:
                for mode in in_place:
                    key = {"source": source, "transport": transport, "algorithm": alg, "nranks": p,
                           "size_bytes": size, "dtype": "float32", "op": "sum", "in_place": mode,
                           "count": size // 4}
                    t = model_time_us(alg, p, size) * slowdown
                    if source == "measured":
                        _measured_point(writer, key, t, rng, iters, warmup, NOISE_CV.get(alg, 0.04), p,
                                        ranks_per_node)
                    else:
                        factor = 1.08 if source == "simulated" else 0.92
                        _predicted_point(writer, key, t * factor, p, ranks_per_node)
    return Path(folder)


def _measured_point(writer, key, t, rng, iters, warmup, cv, p, rpn) -> None:
    timed = t * rng.lognormal(0.0, cv, iters)
    first = t * 7.5
    warm = t * rng.uniform(1.05, 1.4, warmup)
    samples = [{**key, "phase": "first", "iter": 0, "time_us": first}]
    samples += [{**key, "phase": "warmup", "iter": i + 1, "time_us": v} for i, v in enumerate(warm)]
    samples += [{**key, "phase": "timed", "iter": i, "time_us": v} for i, v in enumerate(timed)]
    stats = summarise(timed, key["size_bytes"], p).as_dict()
    writer.add_point({**key, **stats, "ranks_per_node": rpn, "first_us": first, "n_wrong": 0}, samples)


def _predicted_point(writer, key, t, p, rpn) -> None:
    stats = summarise([t], key["size_bytes"], p).as_dict()
    writer.add_point({**key, **stats, "ranks_per_node": rpn, "first_us": float("nan"), "n_wrong": -1})
