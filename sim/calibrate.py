"""Calibration: fit the model's four figures to measured all-reduce times.

The closed forms of :mod:`collbench.sim.analytic` are linear in (α, β, γ, o), so the fit is a
bounded linear least-squares problem (no figure may be negative), solved on *relative*
residuals so that 1 KiB points weigh as much as 1 GiB ones. Naive on a switch is linear on
each side of a ``max``; the fit picks the side from the current estimate and refits until
the choice settles.

Only the schedule-based algorithms (naive, ring, rabenseifner) are fitted: ``native`` is
the library's own all-reduce, a black box whose schedule the model does not know, so its
rows are skipped. α and o multiply the same count of messages in every model except naive
on the ``ideal`` network; when the data cannot tell them apart, o is fixed at 0 and the
latency absorbs it (the saved calibration says so).

Runs on one shared-memory host can also be fitted with that host's memory link (μ,
``memory=True``) and its cores. The cores are known, not fitted: each run's ``run.json``
records its hosts, ranks and ``machine.cpus``, and a one-host run with more ranks than cpus
has its overhead and reductions stretched by ranks/cpus (:mod:`collbench.sim.analytic`). With μ the
models hold ``max(j·β, k·μ)`` terms: linear once the ratio ρ = μ/β is placed between two of the
values where a term changes side (:func:`collbench.sim.analytic.thresholds`). The fit tries every
such interval (μ free, the sides fixed) and every boundary (μ = ρβ), keeps the fits that
are consistent with their interval, and returns the one of least error: the global
optimum of a piecewise-linear least-squares problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from collbench.sim import analytic
from collbench.sim.analytic import Params

from collbench.errors import CollbenchError, ResultsError

FIT_ALGORITHMS = ("naive", "ring", "rabenseifner")


@dataclass(frozen=True)
class Calibration:
    """Fitted figures and how well they fit."""

    params: Params
    topology: str
    points: int
    rms_relative_error: float
    note: str = ""
    sources: list[str] = field(default_factory=list)
    calibrated_from: list[dict] = field(default_factory=list)
    """A :func:`collbench.lineage.run_ref` of every measured run fitted: the link that lets a
    report set predictions of this system against those measurements."""
    host: dict | None = None
    """The fitted host as a network (:meth:`collbench.sim.network.NetworkSpec.as_dict`) when the fit
    simulated it (:mod:`collbench.sim.calibrate_sim`): predictions then simulate it too."""
    fabric: dict | None = None
    """The fitted multi-node network (:meth:`collbench.sim.network.NetworkSpec.as_dict`) when
    the fit simulated a topology without closed forms (:mod:`collbench.sim.calibrate_network`):
    predictions then simulate it."""

    def network(self, nranks: int):
        """The network these figures describe, with up to *nranks* ranks on one host: the
        fitted multi-node network when the fit simulated one; the simulated host when the fit
        simulated one; a host of the closed-form figures when
        they include its memory or cores; else a network of one rank per node."""
        from collbench.sim.calibrate_sim import host_spec
        from collbench.sim.network import NetworkSpec

        if self.fabric is not None:
            return NetworkSpec.from_dict(self.fabric)
        if self.host is not None:
            return NetworkSpec.from_dict({**self.host, "ranks_per_node": max(nranks, 1)})
        q = self.params
        if q.memory or q.cores:
            figures = {"alpha": q.alpha, "beta": q.beta, "gamma": q.gamma, "overhead": q.overhead,
                       "memory": q.memory}
            return host_spec(figures, self.topology, "static", q.cores, nranks)
        return NetworkSpec(name="calibrated", topology=self.topology, bandwidth=1.0 / q.beta,
                           latency=q.alpha, gamma=q.gamma, overhead=q.overhead)

    def predict(self, algorithm: str, nranks: int, nbytes: float, cores: int = 0) -> float:
        """Predicted seconds of one point, on a host of *cores* cores (0: the fitted one's)."""
        q = self.params
        if self.fabric is not None:
            from collbench.sim.calibrate_sim import simulated_seconds

            return simulated_seconds(self.network(nranks), algorithm, nranks, nbytes)
        if self.host is None:
            return analytic.predict(algorithm, nranks, nbytes, replace(q, cores=int(cores) or q.cores),
                                    self.topology)
        from collbench.sim.calibrate_sim import simulated_seconds

        spec = self.network(nranks)
        return simulated_seconds(replace(spec, cores=int(cores) or spec.cores), algorithm, nranks, nbytes)

    def describe(self) -> str:
        """The fitted figures in one line, in the units people quote."""
        q = self.params
        reduction = f"{1e-9 / q.gamma:.3g} GB/s" if q.gamma > 1e-15 else "free (γ fitted as 0)"
        host = ""
        if q.memory > 0:
            host += f", host memory {1e-9 / q.memory:.2f} GB/s"
        if q.cores:
            host += f", {q.cores} cores"
        if self.host:
            h = self.host
            host += f" ({h['host_model']} host model)"
            if h["cache_size"]:
                host += (f", cache {h['cache_size'] / 2**20:.1f} MiB, "
                         f"misses +{h['beta_miss'] * 1e9:.3f} ns/B copied, "
                         f"+{h['gamma_miss'] * 1e9:.3f} ns/B reduced")
        return (f"latency {q.alpha * 1e6:.2f} us, bandwidth {1e-9 / q.beta:.3g} GB/s, reduction "
                f"{reduction}, overhead {q.overhead * 1e6:.2f} us{host} ({self.topology} model, "
                f"{self.points} points, rms relative error {100 * self.rms_relative_error:.1f}%)")

    def save(self, path: Path | str) -> None:
        """Write this calibration as JSON to *path*."""
        data = {"params": asdict(self.params), **{k: v for k, v in asdict(self).items() if k != "params"}}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        """Read a calibration file; raises CollbenchError naming it if it is not one."""
        try:
            data = json.loads(Path(path).read_text())
            params = Params(**data.pop("params"))
            return cls(params=params, **data)
        except OSError as e:
            raise CollbenchError(f"cannot read calibration file {path}: {e.strerror or e}") from None
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError):
            raise CollbenchError(f"{path} is not a calibration file written by "
                                 "'collbench sim calibrate'") from None


FIT_COLUMNS = ("nranks", "size_bytes", "median_us", "ranks_per_node")
"""Columns a fit reads as numbers."""


def measured_inputs(paths) -> tuple:
    """``(rows, refs, skipped)`` of the results *paths* (run folders, or folders above them
    such as a Slurm sweep): the fit-able measured rows as one DataFrame with ``bytes`` and
    ``time_s``; a :func:`collbench.lineage.run_ref` of every run that gave rows, by its
    ``folder`` column's value; and one
    sentence per run passed over (predictions, runs without fit-able points).

    Only measurements are fitted: a prediction fitted as if measured would calibrate the
    model to itself. Raises ResultsError naming a folder that is unreadable or holds a cell
    that is not a number, or when no measured point is left."""
    import pandas as pd

    from collbench.lineage import results_folders, run_ref
    from collbench.store import SUMMARY_FILE, numeric_columns, read_results

    frames, refs, skipped = [], {}, []
    for folder, _ in results_folders(paths):
        provenance, summary, _ = read_results(folder)
        source = str(provenance.get("source") or "measured")
        if source != "measured":
            skipped.append(f"{folder}: a {source} run, not a measurement; calibration fits measurements only")
            continue
        summary = summary[summary["source"].astype(str) == "measured"].copy()
        numeric_columns(summary, FIT_COLUMNS, Path(folder) / SUMMARY_FILE,
                        purpose="calibration needs numbers there")
        rows = summary[summary["algorithm"].isin(FIT_ALGORITHMS) & (summary["nranks"] >= 2)
                       & (summary["size_bytes"] > 0)]
        rows = rows[np.isfinite(rows["median_us"].astype(float)) & (rows["median_us"] > 0)]
        if rows.empty:
            skipped.append(f"{folder}: no naive, ring or rabenseifner point with 2 or more ranks "
                           "and a positive time")
            continue
        hosts = provenance.get("hosts") or []
        cpus = (provenance.get("machine") or {}).get("cpus") or 0
        one_host = (rows["ranks_per_node"].astype(int) >= rows["nranks"].astype(int)) & (len(hosts) <= 1)
        frames.append(rows.assign(folder=str(folder), one_host=one_host,
                                  cores=one_host.astype(int) * int(cpus)))
        refs[str(folder)] = run_ref(folder, provenance)
    if not frames:
        why = "; ".join(skipped) or "no results folder given"
        raise ResultsError(f"nothing to calibrate on: {why}")
    data = pd.concat(frames, ignore_index=True)
    data["bytes"] = data["size_bytes"].astype(float)
    data["time_s"] = data["median_us"].astype(float) * 1e-6
    return data, refs, skipped


def measured_points(folders):
    """The fit-able measured rows of the results *folders* (see :func:`measured_inputs`)."""
    return measured_inputs(folders)[0]


def fit(data, topology: str = "switch", note_sources: list[str] | None = None, memory: bool = False,
        cores: int | None = None) -> Calibration:
    """Fit (α, β, γ, o), and μ if *memory*, to *data* (from :func:`measured_points`) on
    *topology*. *cores*: the host's cores (0: ignore oversubscription); None takes each
    one-host run's from its provenance (never on ``ideal``, whose ranks have a node each).

    Raises CollbenchError if *memory* is asked of runs that span several hosts."""
    from scipy.optimize import lsq_linear

    if topology not in analytic.MODEL_TOPOLOGIES:
        raise CollbenchError(f"calibration fits the {' or '.join(analytic.MODEL_TOPOLOGIES)} model, "
                             f"not {topology!r}")
    if topology == "ideal" and (memory or cores):
        raise CollbenchError("the one-host model (memory bandwidth, cores) fits on the switch or "
                             "half-duplex topology, not ideal")
    if cores is not None and cores < 0:
        raise CollbenchError(f"cores must be at least 0, got {cores}")
    one_host = data["one_host"] if "one_host" in data else [False] * len(data)
    if memory and not all(one_host):
        raise CollbenchError("the host's memory bandwidth is fitted only on runs of one host; "
                             "some of these runs span several")
    use_cores = topology != "ideal" and cores != 0  # ideal: ranks on separate nodes
    row_cores = [0 if not use_cores or not h else int(c if cores is None else cores)
                 for h, c in zip(one_host, data["cores"] if "cores" in data else [0] * len(data))]
    rows = list(zip(data["algorithm"], data["nranks"].astype(int), data["bytes"], data["time_s"], row_cores))
    if len(rows) < 3:
        raise CollbenchError(f"calibration needs at least 3 measured points, got {len(rows)}")
    times = np.array([r[3] for r in rows])

    def solve(rho: float, mode: str) -> tuple[Params, bool]:
        """Least squares with the sides fixed by *rho*; *mode* ``none`` (no μ), ``free`` or
        ``tied`` (μ = rho·β). Naive's broadcast side is iterated to a fixed point."""
        q: Params | None = None
        for _ in range(10):
            a = np.array([analytic.coefficients(alg, p, n, q and replace(q, cores=c), topology, rho, c)
                          for alg, p, n, _, c in rows])
            if mode == "tied":
                a[:, 1] += rho * a[:, 4]
            a = (a if mode == "free" else a[:, :4]) / times[:, None]
            scale = np.linalg.norm(a, axis=0)
            scale[scale == 0] = 1.0
            scaled = a / scale
            separable = _separable(scaled)
            if not separable:  # o is indistinguishable from α: fit without it
                scaled[:, 3] = 0.0
            x = lsq_linear(scaled, np.ones(len(rows)), bounds=(0, np.inf), method="bvls").x / scale
            mu = float(x[4]) if mode == "free" else rho * float(x[1]) if mode == "tied" else 0.0
            new = Params(alpha=float(x[0]), beta=float(x[1]), gamma=float(x[2]),
                         overhead=float(x[3]) if separable else 0.0, memory=mu)
            if new == q:
                break
            q = new
        return q, separable

    def rms_of(q: Params) -> float:
        predicted = np.array([analytic.predict(alg, p, n, replace(q, cores=c), topology)
                              for alg, p, n, _, c in rows])
        return float(np.sqrt(np.mean(((predicted - times) / times) ** 2)))

    candidates = [solve(0.0, "none")]
    if memory:
        edges = sorted(set().union(*(analytic.thresholds(p) for _, p, _, _, _ in rows)))
        candidates += [solve(rho, "tied") for rho in edges]
        for lo, hi in zip([0.0, *edges], [*edges, math.inf]):
            q, separable = solve(lo + 1 if hi == math.inf else (lo + hi) / 2, "free")
            if hi == math.inf and q.beta == 0 and q.memory > 0 and lo > 0:
                # Memory-bound throughout, so the data hold no β: take the largest one that
                # leaves every step memory-bound (the predictions do not change).
                q = replace(q, beta=q.memory / lo)
            ratio = q.memory / q.beta if q.beta > 0 else math.inf
            if lo * (1 - 1e-9) <= ratio <= hi * (1 + 1e-9):
                candidates.append((q, separable))
    scored = [(rms_of(q), q, separable) for q, separable in candidates]
    rms, q, separable = min(scored, key=lambda c: c[0])
    if q.beta <= 0:
        raise CollbenchError("the measurements do not grow with size, so no bandwidth can be fitted; "
                             "measure a wider range of sizes")
    used = {c for c in row_cores if c}
    q = replace(q, cores=used.pop() if len(used) == 1 else 0)
    notes = [] if separable else ["overhead not separable from latency in these data: fitted as latency"]
    if len(used) > 1:
        notes.append("runs on hosts of different core counts: cores not saved")
    return Calibration(q, topology, len(rows), rms, "; ".join(notes), list(note_sources or []))


def _separable(scaled: np.ndarray) -> bool:
    """False when the α and o columns are (numerically) parallel."""
    a, o = scaled[:, 0], scaled[:, 3]
    if not np.any(o):
        return False
    cos = abs(float(a @ o)) / (np.linalg.norm(a) * np.linalg.norm(o))
    return cos < 1 - 1e-9


def error_table(calibration: Calibration, data) -> list[dict]:
    """Measured vs predicted for every row of *data*, with the relative error in percent; a
    calibration with cores predicts each one-host run with that run's own cores."""
    out = []
    q = calibration.params
    cores = data["cores"] if q.cores and "cores" in data else [q.cores] * len(data)
    for alg, p, n, t, c in zip(data["algorithm"], data["nranks"].astype(int), data["bytes"], data["time_s"],
                               cores):
        pred = calibration.predict(alg, p, n, int(c))
        out.append({"algorithm": alg, "nranks": p, "size_bytes": int(n), "measured_us": t * 1e6,
                    "predicted_us": pred * 1e6, "error_pct": 100.0 * (pred - t) / t if t else math.nan})
    return out
