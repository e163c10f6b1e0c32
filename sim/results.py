"""Predictions as results: rows in the measured results' schema, so reports can put measured
and predicted side by side.

A predicted point has one time, so every statistic (min, median, mean, p95, max, the
confidence interval) is that time; ``iters`` is 0, ``first_us`` and ``ci_level`` are NaN and
``n_wrong`` is -1 (nothing was checked). ``source`` is ``simulated`` (the SimPy executor) or
``model`` (a closed form); ``transport`` is the network's name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from collbench.config import resume_mismatches
from collbench.errors import CollbenchError
from collbench.lineage import CALIBRATED_FROM
from collbench.stats import busbw_factor


def summary_row(*, source: str, network: str, algorithm: str, nranks: int, size_bytes: int,
                dtype: str, itemsize: int, seconds: float, ranks_per_node: int, op: str = "sum",
                in_place: bool = False) -> dict:
    """One summary row, with every column of :data:`collbench.schema.SUMMARY_COLUMNS`."""
    us = seconds * 1e6
    algbw = size_bytes / seconds / 1e9 if seconds > 0 else math.nan
    return {
        "source": source, "transport": network, "algorithm": algorithm, "nranks": nranks,
        "size_bytes": size_bytes, "dtype": dtype, "op": op, "in_place": in_place,
        "count": size_bytes // itemsize, "ranks_per_node": ranks_per_node, "iters": 0,
        "first_us": math.nan, "min_us": us, "median_us": us, "mean_us": us, "p95_us": us,
        "max_us": us, "cv": 0.0, "ci_low_us": us, "ci_high_us": us, "ci_level": math.nan,
        "algbw_GBps": algbw, "busbw_GBps": algbw * busbw_factor(nranks), "n_wrong": -1,
    }


def point_identity(*, source: str, network: str, algorithm: str, nranks: int, size_bytes: int,
                   dtype: str) -> dict:
    """The :data:`collbench.schema.POINT_KEY` columns of the row :func:`summary_row` gives
    that point, so a resumed folder can skip it before it is predicted."""
    return {"source": source, "transport": network, "algorithm": algorithm, "nranks": nranks,
            "size_bytes": size_bytes, "dtype": dtype, "op": "sum", "in_place": False}


_POINT_CHOICE = ("algorithms", "ranks", "sizes", "jobs")
"""Prediction settings that only choose points: a resumed folder may differ in these."""


def prediction_settings(info: dict) -> dict:
    """The settings in a prediction's ``run.json`` *info* that decide its numbers or its lineage,
    flat (``network.bandwidth``), as JSON stores them; settings *info* lacks are left out."""
    info = json.loads(json.dumps(info, default=str))
    flat = {key: info[key] for key in ("source",) if key in info}
    flat.update({k: v for k, v in info.get("config", {}).items() if k not in _POINT_CHOICE})
    flat.update({f"network.{k}": v for k, v in info.get("network", {}).items()})
    if CALIBRATED_FROM in info:
        flat["calibrated_from"] = [ref.get("id") for ref in info[CALIBRATED_FROM]]
    elif "network" in info and "calibration" not in info:
        flat["calibrated_from"] = []
    return flat


def refuse_other_settings(folder: Path, info: dict, previous: dict) -> None:
    """Raise CollbenchError naming each setting in which the folder's ``run.json`` *previous*
    differs from *info*: its points would be skipped as if predicted with these."""
    differ = resume_mismatches(prediction_settings(previous), prediction_settings(info))
    if differ:
        raise CollbenchError(f"results folder {folder} was written with other settings "
                             f"({'; '.join(differ)}): rerun with its settings to resume it, or pass "
                             "--force-new to move it aside and start afresh")
