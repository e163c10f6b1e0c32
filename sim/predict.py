"""One predicted point: build the schedule, run it (SimPy) or evaluate its closed form, and
return the results row. The Python API behind ``collbench sim``."""

from __future__ import annotations

from collbench.algorithms import build
from collbench.sim import analytic
from collbench.sim.executor import simulate
from collbench.sim.network import NetworkSpec, SpecError
from collbench.sim.results import summary_row

from collbench.errors import CollbenchError

SECONDS_PER_MESSAGE = {"ring": 2e-6, "rabenseifner": 5e-5, "naive": 1e-4}
"""A rough cost of simulating one message on one core, used only to warn before a long sweep
(``benchmarks/sim_speed.py --algorithm A`` measures it): the ring's messages reuse one channel
each and mostly skip the flow model; Rabenseifner's and naive's each open a channel and a route
of their own, and naive's share the root's links."""


def messages(algorithm: str, nranks: int, segments: int = 1) -> int:
    """How many messages one all-reduce of *algorithm* on *nranks* ranks sends (the ring's
    chunks cut in *segments*)."""
    p = nranks
    if p < 2:
        return 0
    if algorithm == "naive":
        return 2 * (p - 1)
    if algorithm == "ring":
        return 2 * p * (p - 1) * segments
    pof2 = 1 << (p.bit_length() - 1)
    return 2 * pof2 * (pof2.bit_length() - 1) + 4 * (p - pof2)


def cost_warning(points: list[tuple[str, int, int]], segments: int = 1, limit: float = 60.0) -> str | None:
    """One line warning of a sweep of (algorithm, ranks, size) *points* whose simulation
    would take more than *limit* seconds of one core, or None."""
    total = sum(messages(a, p, segments) for a, p, _ in points)
    seconds = sum(messages(a, p, segments) * SECONDS_PER_MESSAGE.get(a, 1e-4) for a, p, _ in points)
    if seconds <= limit:
        return None
    a, p, _ = max(points, key=lambda point: messages(point[0], point[1], segments))
    when = f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"
    most = messages(a, p, segments)
    return (f"this sweep simulates {total:.3g} messages ({a} at P = {p}: {most:.3g} per point), "
            f"about {when} of one core; --jobs N spreads the points over N processes, and --model "
            "analytic answers switch-like networks at once")


def refuse_analytic(spec: NetworkSpec) -> None:
    """Raise CollbenchError if *spec* has bound cores or a cache, which have no closed form."""
    if spec.host_model == "bound" or spec.cache_size:
        raise CollbenchError(f"network {spec.name} has bound cores or a cache, which have no closed "
                             "form; use --model sim")


def predict_seconds(spec: NetworkSpec, algorithm: str, nranks: int, size_bytes: int,
                    itemsize: int = 4, model: str = "sim", segments: int = 1,
                    execution: str = "step") -> float:
    """Predicted seconds of *algorithm* on *nranks* ranks of *spec* for *size_bytes* per rank,
    the ring's chunks cut in *segments*, run step by step or as a dataflow (*execution*).

    Raises CollbenchError if *model* is ``analytic`` and *spec* has no closed form, or
    *execution* is ``dataflow`` (only the pipelined ring has one, a bound:
    :func:`~collbench.sim.analytic.ring_dataflow_bound`)."""
    if nranks < 1:
        raise CollbenchError(f"the number of ranks must be at least 1, got {nranks}")
    if segments < 1:
        raise CollbenchError(f"segments must be at least 1, got {segments}")
    if execution not in ("step", "dataflow"):
        raise CollbenchError(f"unknown execution {execution!r}; choose step or dataflow")
    options = {"segments": segments} if algorithm == "ring" and segments > 1 else {}
    if model == "analytic":
        if execution == "dataflow":
            raise CollbenchError("the closed forms predict step execution; use --model sim for dataflow")
        refuse_analytic(spec)
        # One rank per node, or all ranks on one node over its intra-node fabric.
        one_host = nranks <= spec.ranks_per_node and spec.intra_bandwidth > 0 and spec.topology != "ideal"
        # On one node only its intra-node fabric carries messages, full duplex but on half-duplex.
        topology = spec.topology if not one_host or spec.topology == "half-duplex" else "switch"
        if topology not in analytic.MODEL_TOPOLOGIES or (spec.ranks_per_node != 1 and not one_host):
            raise CollbenchError(f"network {spec.name} ({spec.topology}, {spec.ranks_per_node} ranks per "
                                 "node) has no closed form; use --model sim")
        q = analytic.Params.of_host(spec) if one_host else analytic.Params.of(spec)
        return analytic.predict(algorithm, nranks, size_bytes, q, topology, **options)
    schedule = build(algorithm, nranks, size_bytes // itemsize, **options)
    try:
        if execution == "dataflow":
            from collbench.sim.dataflow import simulate_dataflow

            return simulate_dataflow(schedule, spec, itemsize).time
        return simulate(schedule, spec, itemsize).time
    except SpecError as e:
        raise CollbenchError(f"network {spec.name}: {e}") from None


def predict_point(spec: NetworkSpec, algorithm: str, nranks: int, size_bytes: int, dtype: str,
                  itemsize: int, model: str = "sim", segments: int = 1, execution: str = "step") -> dict:
    """The results row of one predicted point (see :mod:`collbench.sim.results`)."""
    seconds = predict_seconds(spec, algorithm, nranks, size_bytes, itemsize, model, segments, execution)
    return summary_row(source="simulated" if model == "sim" else "model", network=spec.name,
                       algorithm=algorithm, nranks=nranks, size_bytes=size_bytes, dtype=dtype,
                       itemsize=itemsize, seconds=seconds, ranks_per_node=spec.ranks_per_node)
