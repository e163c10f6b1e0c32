"""Which predictions may be set against which measurements.

A prediction is compared with a measurement only when its ``run.json`` links it to that
measurement's system (:func:`collbench.lineage.links_to`): it was calibrated from that run,
or from a run on the same hosts and processor, and it predicts the calibrated system itself.
Uncalibrated predictions (a preset network), calibrated ones moved to another network, and
folders written before the link existed are predictions of *other systems*: the report
draws them in figures of their own, never beside this machine's measurements.
"""

from __future__ import annotations

from dataclasses import replace

from collbench.reports.data import PREDICTED, ReportData

from collbench.lineage import CALIBRATED_FROM, links_to


def measured_runs(data: ReportData) -> list[str]:
    return [r for r, p in data.runs.items() if (p.get("source") or "measured") == "measured"]


def predicted_runs(data: ReportData) -> list[str]:
    return [r for r, p in data.runs.items() if p.get("source") in PREDICTED]


def linked_pairs(data: ReportData) -> set[tuple[str, str]]:
    """Every (measured run, predicted run) whose prediction models the measured run's system."""
    return {(m, p) for p in predicted_runs(data) for m in measured_runs(data)
            if links_to(data.runs[p], data.runs[m])}


def why_unlinked(provenance: dict) -> str:
    """Why a prediction models no measured system given, in a few words."""
    refs = provenance.get(CALIBRATED_FROM)
    if refs is None:
        if provenance.get("calibration"):
            return "its folder predates the calibration link in run.json, so its inputs are unknown"
        return "it is not calibrated to a measurement (a preset or described network)"
    if not refs:
        return "it was calibrated here but predicts another network or settings"
    return ("it was calibrated from " + ", ".join(str(r.get("name")) for r in refs if isinstance(r, dict))
            + ", which were not given")


def unlinked(data: ReportData) -> dict[str, str]:
    """Predicted runs linked to no measured run given, with the reason for each."""
    linked = {p for _, p in linked_pairs(data)}
    return {p: why_unlinked(data.runs[p]) for p in predicted_runs(data) if p not in linked}


def subset(data: ReportData, runs) -> ReportData:
    """*data* restricted to *runs* (series names and styles kept as named over all runs)."""
    runs = [r for r in data.runs if r in set(runs)]
    return replace(data, summary=data.summary[data.summary["run"].isin(runs)].reset_index(drop=True),
                   samples=data.samples[data.samples["run"].isin(runs)].reset_index(drop=True),
                   runs={r: data.runs[r] for r in runs}, folders={r: data.folders[r] for r in runs},
                   notes=list(data.notes))


def groups(data: ReportData) -> list[tuple[str, ReportData]]:
    """The report's figure groups as ``(label, data)``: the measurements with the predictions
    linked to them (label ""), then the predictions of other systems; one group when either
    side is empty."""
    measured = measured_runs(data)
    others = list(unlinked(data))
    if not measured or not others:
        return [("", data)]
    mine = [r for r in data.runs if r not in set(others)]
    return [("", subset(data, mine)), ("other systems", subset(data, others))]
