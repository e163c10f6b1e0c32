"""Results folders read into one table, with a series label and style for every row.

Folders can come from different clusters, transports and sources, so rows from two of them
may share a point key (two clusters both measured ring at P=8). Each row therefore keeps the
``run`` it came from, and its *series* (one line in a figure) is named by the algorithm plus
only those of transport, source, dtype and op that vary across the inputs, and the run's
lineage when two of the same kind would otherwise merge. Runs that differ only in P (one
campaign, e.g. the run folders of a Slurm sweep) share a lineage and so make one line over P
(see :func:`_lineages`). Series names are fixed once here, so every figure and table names and
draws a series the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from collbench.reports.style import FILLSTYLES, algorithm_order

from collbench import sizes
from collbench.errors import CollbenchError, ResultsError
from collbench.lineage import results_folders, system_of
from collbench.schema import SOURCES
from collbench.store import SAMPLES_FILE, SUMMARY_FILE, numeric_columns, read_provenance, read_results

SERIES_PARTS = ("transport", "source", "dtype", "op")
"""Columns that name a series besides its algorithm, when their value varies."""
NUMERIC_SUMMARY = ("nranks", "size_bytes", "median_us", "ci_low_us", "ci_high_us", "first_us",
                   "busbw_GBps", "algbw_GBps", "n_wrong")
REQUIRED = ("nranks", "size_bytes", "median_us")
REQUIRED_SAMPLE = ("nranks", "size_bytes", "time_us")
PREDICTED = ("simulated", "model")


@dataclass
class ReportData:
    """Everything a report draws from: *summary* and *samples* of all runs, with columns
    ``run``, ``series``, ``variant`` added, and *runs*, the provenance by run name. *samples*
    hold each iteration's time with the ranks combined; *rank_samples* each rank's own."""

    summary: pd.DataFrame
    samples: pd.DataFrame
    runs: dict[str, dict]
    folders: dict[str, Path]
    in_place: bool
    notes: list[str] = field(default_factory=list)
    """Said in every caption (which in-place mode is shown)."""
    left_out: list[str] = field(default_factory=list)
    """Folders found below a given path but not read, each with the reason (for the index)."""
    rank_samples: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def algorithms(self) -> list[str]:
        return algorithm_order(self.summary["algorithm"].unique())

    @property
    def sources(self) -> list[str]:
        present = set(self.summary["source"])
        return [s for s in SOURCES if s in present] + sorted(present - set(SOURCES))

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(self.summary.sort_values("variant")["variant_name"]))

    def series_rows(self, frame: pd.DataFrame):
        """Yield ``(series, rows)`` of *frame* in the fixed order (algorithm, source, variant)."""
        yield from frame.sort_values("series_order", kind="stable").groupby("series", sort=False)


def _read_provenance(folder: Path) -> dict:
    try:
        return read_provenance(folder) or {}
    except ResultsError:
        return {}  # read_results names the problem when the folder is read


def run_names(folders: list[Path], base: dict[Path, str]) -> dict[Path, str]:
    """Each folder's run name: its ``run.json`` name; where folders share it (the runs of a
    Slurm sweep), the name and the folder's own name, as in ``demo (n2-t4)``, or with its
    parent's too (``demo (sweep-b/n2-t4)``) when two sweeps of one name are given."""
    out: dict[Path, str] = {}
    for name in dict.fromkeys(base.values()):
        group = [f for f in folders if base[f] == name]
        choices = ([name for _ in group], [f"{name} ({f.name})" for f in group],
                   [f"{name} ({f.parent.name}/{f.name})" for f in group], [f"{name} ({f})" for f in group])
        labels = next(c for c in choices if len(set(c)) == len(c) or c is choices[-1])
        out.update(zip(group, labels, strict=True))
    return out


def _system(run: str, provenance: dict) -> str:
    """What a run's times describe: the hosts and processor of a measured run (runs on the
    same ones are one system), or the run itself for a prediction and a run that recorded
    no hosts. Speed-ups and winners never cross systems."""
    system = system_of(provenance) if provenance.get("source", "measured") == "measured" else None
    if system is None:
        return f"run:{run}"
    return f"hosts:{','.join(system['hosts'])}|{system['processor']}"


def _campaign(name: str, provenance: dict) -> str:
    """Runs of one campaign (same name, source and processor, as the runs of one Slurm sweep)
    join into one series where their points do not overlap: a scaling line over P."""
    processor = (provenance.get("machine") or {}).get("processor") or ""
    return f"{name}|{provenance.get('source') or ''}|{processor}"


def _bool(column: pd.Series) -> pd.Series:
    return column.astype(str).str.strip().str.lower().isin(("true", "1"))


def load(folders, in_place: bool | None = None) -> ReportData:
    """Read the results *folders* (any mix of sources; a folder above results folders, such
    as a Slurm sweep, stands for every one below it) into one :class:`ReportData`.

    In-place and out-of-place are separate experiments; when both are present the figures use
    *in_place* (default: out-of-place, as nccl-tests reports first). Raises ResultsError naming
    the file that is missing or corrupt, CollbenchError if there is nothing to plot."""
    summaries, samples, runs, paths, left_out = [], [], {}, {}, []
    found = results_folders(folders)
    names = run_names([f for f, _ in found],
                      {f: str(_read_provenance(f).get("name") or f.name) for f, _ in found})
    for folder, below in found:
        if below and not (folder / SUMMARY_FILE).exists():
            left_out.append(f"{folder} holds no points yet (no {SUMMARY_FILE}); it is left out.")
            continue
        provenance, summary, sample = read_results(folder)
        name = names[folder]
        runs[name], paths[name] = provenance, folder
        summary = numeric_columns(summary.copy(), NUMERIC_SUMMARY, folder / SUMMARY_FILE, REQUIRED)
        sample = numeric_columns(sample.copy(), REQUIRED_SAMPLE, folder / SAMPLES_FILE, REQUIRED_SAMPLE)
        for frame in (summary, sample):
            frame["run"] = name
            frame["campaign"] = _campaign(str(provenance.get("name") or folder.name), provenance)
            frame["system"] = _system(name, provenance)
            frame["in_place"] = _bool(frame["in_place"])
            for col in ("source", "transport", "algorithm", "dtype", "op", "phase"):
                if col in frame:
                    frame[col] = frame[col].astype(str)
        summaries.append(summary)
        samples.append(sample)
    if not summaries:
        raise CollbenchError("no results folders given; pass folders written by collbench run or sim")
    summary = pd.concat(summaries, ignore_index=True)
    sample = pd.concat(samples, ignore_index=True)
    if summary.empty:
        raise CollbenchError(f"the results in {', '.join(map(str, paths.values()))} hold no points yet")
    modes = set(summary["in_place"])
    chosen = (False not in modes) if in_place is None else in_place
    if chosen not in modes:
        raise CollbenchError(f"the results hold no {'in-place' if chosen else 'out-of-place'} points")
    summary = summary[summary["in_place"] == chosen].reset_index(drop=True)
    sample = sample[sample["in_place"] == chosen]
    ranks = sample["rank"] >= 0
    data = ReportData(summary, sample[~ranks].reset_index(drop=True), runs, paths, chosen,
                      left_out=left_out, rank_samples=sample[ranks].reset_index(drop=True))
    if len(modes) > 1:
        data.notes.append(f"Both in-place and out-of-place points were given; the figures show "
                          f"{'in-place' if chosen else 'out-of-place'} only.")
    _name_series(data)
    return data


def _name_series(data: ReportData) -> None:
    """Add ``series`` (its label), ``variant`` and ``variant_name`` columns to the summary and
    the samples (see the module docstring for the naming rule)."""
    s = data.summary
    varying = [c for c in SERIES_PARTS if s[c].nunique() > 1]
    kind = ["algorithm", *SERIES_PARTS]
    label = _lineages(s, kind, data.folders)
    for frame in (data.summary, data.samples):
        frame["lineage"] = frame["run"].map(label).fillna(frame["run"]) if not frame.empty else frame["run"]
    need_run = (s.groupby(kind)["lineage"].nunique() > 1).any()
    parts = [c for c in varying if c != "source"] + (["lineage"] if need_run else [])

    def rest(row) -> str:
        return " · ".join(str(row[c]) for c in parts)

    for frame in (data.summary, data.samples):
        if frame.empty:
            for col in ("series", "variant_name"):
                frame[col] = pd.Series(dtype=str)
            frame["variant"] = pd.Series(dtype=int)
            continue
        frame["variant_name"] = frame.apply(rest, axis=1) if parts else ""
        label_parts = [frame["algorithm"]]
        if parts:
            label_parts.append(frame["variant_name"])
        if "source" in varying:
            label_parts.append(frame["source"])
        frame["series"] = label_parts[0].str.cat(label_parts[1:], sep=" · ") if len(label_parts) > 1 \
            else label_parts[0]
    order = {a: i for i, a in enumerate(data.algorithms)}
    src = {v: i for i, v in enumerate(data.sources)}
    keys = data.summary.drop_duplicates("series")
    ranked = sorted(zip(keys["algorithm"].map(order), keys["source"].map(src), keys["variant_name"],
                        keys["series"], strict=True))
    series_order = {name: i for i, (*_, name) in enumerate(ranked)}
    for frame in (data.summary, data.samples):
        frame["series_order"] = frame["series"].map(series_order).fillna(len(series_order)).astype(int)
    names = sorted(data.summary["variant_name"].unique())
    index = {n: i % len(FILLSTYLES) for i, n in enumerate(names)}
    data.summary["variant"] = data.summary["variant_name"].map(index).astype(int)
    if not data.samples.empty:
        data.samples["variant"] = data.samples["variant_name"].map(index).fillna(0).astype(int)


def _lineages(s: pd.DataFrame, kind: list[str], folders: dict[str, Path]) -> dict[str, str]:
    """The name each run goes by in series labels, so that runs differing only in P make one
    line. A campaign's runs go by the first of these that no two of its runs share a point
    of the same kind under: its name; the name and ranks per node (a sweep over nodes × tasks
    per node: one line per tasks per node); the name and the sweep folder (two sweeps of
    one experiment); both; else each run by its own name."""
    runs = s.drop_duplicates("run").set_index("run")
    name_of = {c: c.split("|")[0] for c in runs["campaign"]}
    reused = {n for n, k in Counter(name_of.values()).items() if k > 1}  # one name, two campaigns
    rpn = s.groupby("run")["ranks_per_node"].agg(lambda v: int(v.iloc[0]) if v.nunique() == 1 else None) \
        if "ranks_per_node" in s else pd.Series(dtype=object)

    def overlapping(labels: dict[str, str]) -> bool:
        held = s[s["run"].isin(labels)].assign(label=lambda f: f["run"].map(labels))
        return bool((held.groupby([*kind, "nranks", "size_bytes", "label"])["run"].nunique() > 1).any())

    out: dict[str, str] = {}
    for campaign, members in runs.groupby("campaign"):
        name, members = name_of[campaign], list(members.index)
        sweep = {r: folders[r].parent.name for r in members}
        choices = [] if name in reused else [{r: name for r in members},
                                             {r: f"{name} ({sweep[r]})" for r in members}]
        if name not in reused and all(rpn.get(r) for r in members):
            choices.insert(1, {r: f"{name} ({rpn[r]} per node)" for r in members})
            choices.append({r: f"{name} ({sweep[r]}, {rpn[r]} per node)" for r in members})
        out.update(next((c for c in choices if not overlapping(c)), {r: r for r in members}))
    return out


def parse_size(text: str) -> int:
    """Bytes in ``256M``, ``256MiB``, ``1K`` or ``1048576`` (binary units, as the harness's -b/-e).
    Raises CollbenchError on anything else."""
    try:
        return sizes.parse_size(text)
    except ValueError as e:
        raise CollbenchError(f"cannot read the size: {e}") from None
