"""Which results folders a path holds, and where a prediction came from.

A path given to ``report`` or ``sim calibrate`` is a results folder (it holds ``run.json``)
or any folder above some, such as a Slurm sweep (``<name>-<run_id>/n<N>-t<T>/``): the folders
below it that hold ``run.json`` are its runs. Links (the sweep's ``job-<id>``) are not
followed, so a run is never read twice.

A prediction is comparable with a measurement only through an explicit link:
``sim calibrate`` stores a :func:`run_ref` of every measured run it fitted, and ``sim
predict`` copies those refs into the prediction's ``run.json`` under :data:`CALIBRATED_FROM`
when it predicts the calibrated system itself. A prediction of another network (``--network``
or any override) stores an empty list, and folders written before the link existed have no
key at all: neither is ever set against a measurement.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from collbench.errors import ResultsError
from collbench.store import RUN_FILE

CALIBRATED_FROM = "calibrated_from"
"""Key of a prediction's ``run.json``: refs of the measured runs whose system it predicts."""


def results_folders(paths) -> list[tuple[Path, bool]]:
    """``(folder, found_below)`` for every results folder in *paths*, in order, each once.

    A path holding ``run.json`` is itself a results folder (``found_below`` False); any other
    folder is searched for results folders below it, sorted by path. Raises ResultsError
    naming a path that does not exist or holds no results folder."""
    out: list[tuple[Path, bool]] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file() and path.parent.joinpath(RUN_FILE).is_file():
            path = path.parent  # a file of a results folder, from shell completion
        if not path.exists():
            raise ResultsError(f"results folder {path} does not exist")
        if (path / RUN_FILE).is_file():
            found = [(path, False)]
        else:
            found = [(Path(root), True) for root, _, files in os.walk(path) if RUN_FILE in files]
            if not found:
                raise ResultsError(f"{path} holds no results folder: no {RUN_FILE} in it or below it")
        for folder, below in sorted(found, key=lambda f: str(f[0])):
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                out.append((folder, below))
    return out


def system_of(provenance: dict) -> dict | None:
    """The system a measured run ran on: its hosts and processor, or None if not recorded."""
    hosts = provenance.get("hosts") or []
    if not hosts:
        return None
    machine = provenance.get("machine") or {}
    return {"hosts": sorted(map(str, hosts)), "processor": str(machine.get("processor") or "")}


def run_id(provenance: dict) -> str:
    """A stable id of a run: a hash of its name, start time, hosts and command (kept on resume)."""
    key = {k: provenance.get(k) for k in ("name", "source", "start_time", "hosts", "command")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_ref(folder: Path | str, provenance: dict) -> dict:
    """What a calibration records of one measured input run."""
    return {"id": run_id(provenance), "name": str(provenance.get("name") or Path(folder).name),
            "path": str(Path(folder).resolve()), "start_time": provenance.get("start_time"),
            "system": system_of(provenance)}


def links_to(prediction: dict, measured: dict) -> bool:
    """True if the prediction with provenance *prediction* models the system of the measured
    run *measured*: that run was one of its calibration inputs, or ran on the same hosts with
    the same processor as one of them."""
    refs = prediction.get(CALIBRATED_FROM)
    if not isinstance(refs, list):
        return False
    ident, system = run_id(measured), system_of(measured)
    return any(isinstance(r, dict) and (r.get("id") == ident or (system and r.get("system") == system))
               for r in refs)
