"""Calibration on a multi-node network without closed forms: fit the four figures (α, β, γ, o)
to runs measured across a two-level tree by simulating every point on that tree.

The closed forms of :mod:`collbench.sim.analytic` hold on one switch; runs that crossed an
oversubscribed core are slower than a switch of the same links by the core's share, so a
switch fit would take that for a slower network. Here the user describes the tree (leaves,
oversubscription) and the fit varies only the figures: each residual is
``log(predicted / measured)`` (every point weighs the same, as in
:mod:`collbench.sim.calibrate_sim`), the figures are searched in log space within wide bounds
by scipy's ``least_squares``, starting from the switch fit of the same points.
"""

from __future__ import annotations

import math

import numpy as np
from collbench.sim.analytic import Params
from collbench.sim.calibrate import Calibration, fit
from collbench.sim.calibrate_sim import simulated_seconds
from collbench.sim.network import NetworkSpec
from collbench.sim.units import ITEMSIZE

from collbench.errors import CollbenchError

_NAMES = ("alpha", "beta", "gamma", "overhead")
_FLOOR = np.log([1e-9, 1e-13, 1e-14, 1e-10])
"""The smallest figures searched (log space has no zero), far below what they could change."""
_CEILING = np.log([1.0, 1e-3, 1e-6, 1.0])


def fabric_of(spec: NetworkSpec, q: Params) -> NetworkSpec:
    """*spec*'s topology with the figures *q*: one NIC per node of 1/β, latency α."""
    return spec.with_overrides(name="calibrated", bandwidth=1.0 / q.beta, latency=q.alpha, gamma=q.gamma,
                               overhead=q.overhead, nics_per_node=1)


def fit_on_network(data, spec: NetworkSpec, note_sources: list[str] | None = None) -> Calibration:
    """Fit (α, β, γ, o) to *data* (from :func:`collbench.sim.calibrate.measured_points`), runs
    of one rank per node on *spec*'s topology, by simulating every point. The result carries
    the fitted network (``fabric``), from which predictions simulate.

    Raises CollbenchError for runs of several ranks per node or a spec with a host model."""
    from scipy.optimize import least_squares

    if spec.ranks_per_node != 1 or spec.host_model != "none":
        raise CollbenchError("the network fit takes runs of one rank per node on a network without a "
                             "host model")
    if "ranks_per_node" in data and (data["ranks_per_node"].astype(int) > 1).any():
        raise CollbenchError("the network fit takes runs of one rank per node; some of these runs put "
                             "several ranks on a node")
    start = fit(data, "switch", cores=0).params
    itemsizes = [ITEMSIZE.get(str(d), 4) for d in data["dtype"]] if "dtype" in data else [4] * len(data)
    rows = list(zip(data["algorithm"], data["nranks"].astype(int), data["bytes"], itemsizes))
    times = data["time_s"].to_numpy(dtype=float)

    def params_of(x: np.ndarray) -> Params:
        return Params(*np.exp(x).tolist())

    def predicted(q: Params) -> np.ndarray:
        network = fabric_of(spec, q)
        return np.array([simulated_seconds(network, a, p, n, i) for a, p, n, i in rows])

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log(predicted(params_of(x)) / times)

    x0 = np.clip(np.log([max(getattr(start, n), 1e-300) for n in _NAMES]), _FLOOR, _CEILING)
    best = least_squares(residuals, x0, bounds=(_FLOOR, _CEILING), diff_step=1e-4, x_scale=1.0)
    q = params_of(best.x)
    relative = predicted(q) / times - 1.0
    return Calibration(q, spec.topology, len(rows), float(math.sqrt(np.mean(relative ** 2))),
                       "fitted by simulation on the described network", list(note_sources or []),
                       fabric=fabric_of(spec, q).as_dict())
