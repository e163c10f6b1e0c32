"""Held-out error: a network's predictions set against measurements that were not fitted.

A calibration fitted on a few nodes of one switch is judged where it is used: at more nodes
and on other described topologies (a two-level tree, oversubscribed). :func:`compare`
predicts every measured point on the described network, and :func:`score` sums the errors
up the way the accuracy targets are stated (points of at least some size within a bound,
and the median).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from collbench.sim.network import NetworkSpec
from collbench.sim.units import ITEMSIZE


def compare(spec: NetworkSpec, data, model: str = "sim") -> list[dict]:
    """Measured vs predicted on *spec* for every row of *data* (from
    :func:`collbench.sim.calibrate.measured_points`), with the error in percent of the
    measurement."""
    from collbench.sim.predict import predict_seconds

    out = []
    dtypes = data["dtype"] if "dtype" in data else ["float32"] * len(data)
    for alg, p, n, t, dtype in zip(data["algorithm"], data["nranks"].astype(int),
                                   data["size_bytes"].astype(int), data["time_s"], dtypes):
        predicted = predict_seconds(spec, alg, p, n, ITEMSIZE.get(str(dtype), 4), model)
        out.append({"algorithm": alg, "nranks": p, "size_bytes": n, "measured_us": t * 1e6,
                    "predicted_us": predicted * 1e6, "error_pct": 100.0 * (predicted - t) / t})
    return out


@dataclass(frozen=True)
class Score:
    """How many compared points of at least *from_bytes* are within *bound_pct*, and the
    median of their absolute errors."""

    from_bytes: int
    bound_pct: float
    within: int
    total: int
    median_abs_pct: float
    worst_pct: float

    def describe(self) -> str:
        return (f"{self.within} of {self.total} points of {_size(self.from_bytes)} or more within "
                f"{self.bound_pct:g}%; median |error| {self.median_abs_pct:.1f}%, "
                f"worst {self.worst_pct:+.1f}%")


def score(rows: list[dict], from_bytes: int = 2**20, bound_pct: float = 10.0) -> Score:
    """The :class:`Score` of the compared *rows* (from :func:`compare`)."""
    errors = [r["error_pct"] for r in rows if r["size_bytes"] >= from_bytes and math.isfinite(r["error_pct"])]
    if not errors:
        return Score(from_bytes, bound_pct, 0, 0, math.nan, math.nan)
    return Score(from_bytes, bound_pct, sum(abs(e) <= bound_pct for e in errors), len(errors),
                 statistics.median(abs(e) for e in errors), max(errors, key=abs))


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"
