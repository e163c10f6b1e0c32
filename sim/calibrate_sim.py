"""Calibration by simulation: fit a one-host model that has no closed form by running the
SimPy executor itself inside a nonlinear least-squares fit.

Two parts of a shared-memory host's behaviour are beyond :mod:`collbench.sim.calibrate`'s linear fit:

* **Bound cores** (``host_model = "bound"``): ranks time-share the cores they are bound
  to, so a waiting rank leaves its core to the others and a core holding two busy ranks
  halves both (3 ranks on 2 cores).
* **The cache** (``cache_size``, ``beta_miss``, ``gamma_miss``): a core copies and reduces
  more slowly once the node's buffers outgrow its cache, a knee in time per byte that the
  measurements of one host show at tens of MiB.

Each residual is ``log(predicted / measured)``, so every point weighs the same whatever its
size and over- and under-prediction by one factor cost the same. The figures are fitted in
log space within wide bounds (scipy's ``least_squares``, trust-region reflective), from the
linear fit's figures and a few starting cache sizes spread over the data's working sets;
the best end point wins. At P ≤ 4 a simulation costs well under a millisecond, so a fit of
54 points takes seconds.
"""

from __future__ import annotations

import math

import numpy as np
from collbench.sim.analytic import Params
from collbench.sim.calibrate import Calibration, fit
from collbench.sim.network import NetworkSpec
from collbench.sim.units import ITEMSIZE

from collbench.errors import CollbenchError

_FLOOR = {"alpha": 1e-10, "beta": 1e-13, "gamma": 1e-14, "overhead": 1e-10, "memory": 1e-13,
          "cache_size": 1e4, "beta_miss": 1e-14, "gamma_miss": 1e-14}
"""The smallest value each figure is searched at (log space has no zero): each is far below
what it could change in a measured time."""
_CEILING = {"alpha": 1e-2, "beta": 1e-8, "gamma": 1e-7, "overhead": 1e-2, "memory": 1e-7,
            "cache_size": 1e12, "beta_miss": 1e-7, "gamma_miss": 1e-7}


def host_spec(figures: dict[str, float], topology: str, host_model: str, cores: int,
              ranks: int) -> NetworkSpec:
    """The one-host network of *figures* (α, β, γ, o and optionally μ and the cache's three,
    of the knee) with *ranks* ranks on *cores* cores, in host model *host_model*: every rank copies through
    its core at 1/β."""
    memory = figures.get("memory", 0.0)
    return NetworkSpec(name="calibrated", topology=topology, bandwidth=1.0 / figures["beta"],
                       latency=figures["alpha"], ranks_per_node=max(ranks, 1),
                       intra_bandwidth=1.0 / figures["beta"], intra_latency=figures["alpha"],
                       gamma=figures["gamma"], overhead=figures["overhead"],
                       memory_bandwidth=1.0 / memory if memory else 0.0, cores=cores,
                       host_model=host_model, cache_size=figures.get("cache_size", 0.0),
                       beta_miss=figures.get("beta_miss", 0.0), gamma_miss=figures.get("gamma_miss", 0.0))


def simulated_seconds(spec: NetworkSpec, algorithm: str, nranks: int, nbytes: float,
                      itemsize: int = 4) -> float:
    """Seconds of one all-reduce of *nranks* ranks on *spec* (a host that holds them all)."""
    from collbench.algorithms import build
    from collbench.sim.executor import simulate

    return simulate(build(algorithm, nranks, int(nbytes) // itemsize), spec, itemsize).time


def fit_by_simulation(data, *, host_model: str = "bound", cache: bool = True, memory: bool = False,
                      cores: int | None = None, topology: str = "half-duplex",
                      note_sources: list[str] | None = None) -> Calibration:
    """Fit a one-host model with bound cores (*host_model* ``bound``; else ``static``)
    and/or a cache knee (see :class:`~collbench.sim.network.NetworkSpec`) to *data* (from
    :func:`collbench.sim.calibrate.measured_points`) by simulating every point. *cores* as in
    :func:`collbench.sim.calibrate.fit`. The result carries the fitted host as a network
    (``host``), from which predictions simulate.

    Raises CollbenchError for runs that span several hosts or a model with neither part."""
    from scipy.optimize import least_squares

    if host_model == "static" and not cache:
        raise CollbenchError("fitting by simulation needs bound cores or the cache; the static "
                             "model without a cache has closed forms: use the plain fit")
    if not all(data["one_host"]):
        raise CollbenchError("bound cores and the cache are fitted only on runs of one host; "
                             "some of these runs span several")
    start = fit(data, topology, memory=memory, cores=cores)
    row_cores = [0 if cores == 0 else int(c if cores is None else cores) for c in data["cores"]]
    itemsizes = [ITEMSIZE.get(str(d), 4) for d in data["dtype"]] if "dtype" in data else [4] * len(data)
    rows = list(zip(data["algorithm"], data["nranks"].astype(int), data["bytes"], row_cores, itemsizes))
    times = data["time_s"].to_numpy(dtype=float)
    names = ["alpha", "beta", "gamma", "overhead"] + ["memory"] * memory
    if cache:
        names += ["cache_size", "beta_miss", "gamma_miss"]
    q = start.params
    first = {"alpha": q.alpha, "beta": q.beta, "gamma": q.gamma, "overhead": q.overhead, "memory": q.memory,
             "beta_miss": q.beta, "gamma_miss": max(q.gamma, q.beta)}
    lower = np.log([_FLOOR[n] for n in names])
    upper = np.log([_CEILING[n] for n in names])

    def figures_of(x: np.ndarray) -> dict[str, float]:
        return dict(zip(names, np.exp(x).tolist()))

    def predicted(figures: dict[str, float]) -> np.ndarray:
        return np.array([simulated_seconds(host_spec(figures, topology, host_model, c, p),
                                           a, p, n, i) for a, p, n, c, i in rows])

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log(predicted(figures_of(x)) / times)

    held = [p * n for _, p, n, _, _ in rows]
    cache_starts = np.geomspace(min(held), max(held), 4)[1:3] if cache else [None]
    best = None
    for cache_size in cache_starts:
        guess = {**first, "cache_size": cache_size}
        x0 = np.clip(np.log([max(guess[n], _FLOOR[n]) for n in names]), lower, upper)
        result = least_squares(residuals, x0, bounds=(lower, upper), diff_step=1e-4, x_scale=1.0)
        if best is None or result.cost < best.cost:
            best = result
    figures = figures_of(best.x)
    relative = predicted(figures) / times - 1.0
    used = {c for c in row_cores if c}
    saved_cores = used.pop() if len(used) == 1 else 0
    host = host_spec(figures, topology, host_model, saved_cores, 1)
    params = Params(figures["alpha"], figures["beta"], figures["gamma"], figures["overhead"],
                    figures.get("memory", 0.0), saved_cores)
    notes = ["fitted by simulation"] + (["runs on hosts of different core counts: cores not saved"]
                                        if len(used) > 1 else [])
    return Calibration(params, topology, len(rows), float(math.sqrt(np.mean(relative ** 2))),
                       "; ".join(notes), list(note_sources or []), host=host.as_dict())
