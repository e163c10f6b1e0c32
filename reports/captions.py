"""Captions that say exactly what was measured, from each run's ``run.json``.

A figure in a paper is only as good as its caption: hosts, ranks, ranks per node, transport,
library versions, dtype, op, iterations, date and commit all come from the provenance the
harness stored, so the caption cannot drift from the data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd
from collbench.reports.data import ReportData

from collbench.stats import levels_text

VERSION_ORDER = ("python", "numpy", "mpi4py", "mpi_library", "cupy", "nccl", "rdma_core", "collbench")
VERSION_NAMES = {"python": "Python", "numpy": "numpy", "mpi4py": "mpi4py", "mpi_library": "MPI",
                 "cupy": "CuPy", "nccl": "NCCL", "rdma_core": "rdma-core", "collbench": "collbench",
                 "mpi_standard": "MPI standard"}
_BANNER = re.compile(r"^(.*?\d+(?:\.\d+)+)")


def _listing(values, limit: int = 4) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:limit]))
    return shown if len(values) <= limit else f"{shown}, … ({len(values)} in all)"


def _ranks_per_node(rpn) -> str:
    if isinstance(rpn, dict) and rpn:
        counts = set(rpn.values())
        if len(counts) == 1:
            return f"{counts.pop()} ranks per node"
        return "ranks per node " + _listing(f"{h}: {n}" for h, n in sorted(rpn.items()))
    return f"{rpn} ranks per node" if rpn else "ranks per node not recorded"


def _versions(versions) -> str:
    if not isinstance(versions, dict):
        return ""
    keys = [k for k in VERSION_ORDER if versions.get(k)] + sorted(
        k for k in versions if k not in VERSION_ORDER and versions.get(k))
    return ", ".join(f"{VERSION_NAMES.get(k, k)} {_short(versions[k])}" for k in keys)


def _short(version) -> str:
    """A library banner cut after its version number: "MPICH Version: 4.2 Release date: …"
    becomes "MPICH 4.2", "Open MPI v4.1.5, package: …" becomes "Open MPI v4.1.5"."""
    text = " ".join(str(version).split())
    match = _BANNER.match(text)
    text = match.group(1) if match else text[:40]
    return re.sub(r"\s*\bVersion:?\s*", " ", text).strip()


def _ints(values) -> str:
    return _listing(sorted({int(v) for v in values}), limit=6)


def describe_run(name: str, provenance: dict, rows: pd.DataFrame) -> str:
    """One sentence on run *name*: what, where, with what, when; *rows* are its plotted rows."""
    config = provenance.get("config") or {}
    source = provenance.get("source") or ", ".join(sorted(rows["source"].unique()))
    date = str(provenance.get("start_time") or "date not recorded")[:10]
    commit = str(provenance.get("git_commit") or "unknown")[:10]
    head = f"{source} run “{name}” ({date}, commit {commit})"
    ranks = f"P = {_ints(rows['nranks'])}"
    what = f"{_listing(sorted(rows['dtype'].unique()))} {_listing(sorted(rows['op'].unique()))}"
    transport = _listing(sorted(rows["transport"].unique()))
    if source in ("simulated", "model"):
        network = provenance.get("network")
        net = network.get("name", "") if isinstance(network, dict) else (network or "")
        calibrated = ", calibrated" if provenance.get("calibration") else ""
        where = f"network {net or 'not recorded'}{calibrated}; transport {transport}; {ranks}; {what}"
        return f"{head}: {where}."
    hosts = provenance.get("hosts") or []
    where = (f"{ranks} on {len(hosts)} host{'s' if len(hosts) != 1 else ''} ({_listing(hosts)}), "
             f"{_ranks_per_node(provenance.get('ranks_per_node'))}; transport {transport}; {what}")
    # A resumed run may have changed -n/-w: report what the points hold and every setting used.
    iters = _ints(rows["iters"].dropna()) if rows["iters"].notna().any() else config.get("iters", "?")
    configs = [config, (provenance.get("latest") or {}).get("config") or {}]
    warm = _listing(sorted({c["warmup_iters"] for c in configs if "warmup_iters" in c})) or "?"
    how = f"{iters} timed iterations after {warm} warm-up{'' if warm == '1' else 's'}, time = max over ranks"
    if provenance.get("resumed"):
        how += f" (resumed {len(provenance['resumed'])}×)"
    versions = _versions(provenance.get("versions"))
    slurm = provenance.get("slurm")
    job = f"; Slurm job {slurm['job_id']}" if isinstance(slurm, dict) and slurm.get("job_id") else ""
    return f"{head}: {where}; {how}{job}" + (f"; {versions}." if versions else ".")


def provenance_text(data: ReportData, rows: pd.DataFrame) -> str:
    """The provenance of every run that contributes *rows*, one sentence each."""
    return " ".join(describe_run(run, data.runs[run], part)
                    for run, part in rows.groupby("run", sort=False))


def ci_words(rows: pd.DataFrame, short: bool = False) -> str:
    """"95.8% confidence interval of the median" (or "95.8% CI" when *short*) at the real level
    of *rows*' measured intervals, which depends on their number of samples (75% for 3)."""
    measured = rows[rows["source"] == "measured"] if "source" in rows else rows
    levels = pd.to_numeric(measured["ci_level"], errors="coerce") if "ci_level" in measured else []
    text = levels_text(levels)
    words = "CI" if short else "confidence interval of the median"
    return f"{text} {words}" if text else words


def caption(data: ReportData, what: str, rows: pd.DataFrame, notes: Iterable[str] = ()) -> str:
    """A figure caption: *what* is drawn, then the provenance of the runs in *rows*."""
    extra = " ".join([*data.notes, *notes])
    return " ".join(p for p in (what, extra, "Data: " + provenance_text(data, rows)) if p)
