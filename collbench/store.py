"""The results store: one folder per run, written point by point and atomically.

Every file is written to a temporary name in the same folder and renamed over the old one,
so a job killed at any moment leaves complete files holding every finished point; a rerun
into the same folder reads them back and skips the points already there (see
:data:`collbench.schema.POINT_KEY`). Only rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from collbench.errors import ResultsError
from collbench.schema import (
    OPTIONAL_SAMPLE_COLUMNS,
    OPTIONAL_SUMMARY_COLUMNS,
    POINT_KEY,
    SAMPLE_COLUMNS,
    SUMMARY_COLUMNS,
)

_OPTIONAL = {SAMPLE_COLUMNS: OPTIONAL_SAMPLE_COLUMNS, SUMMARY_COLUMNS: OPTIONAL_SUMMARY_COLUMNS}

RUN_FILE, SAMPLES_FILE, SUMMARY_FILE = "run.json", "samples.csv", "summary.csv"


def atomic_write(path: Path, text: str) -> None:
    """Write *text* to *path* through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv_text(columns: Iterable[str], rows: Iterable[Mapping]) -> str:
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def point_key(row: Mapping) -> tuple:
    """The identity of a point, normalised so rows read back from CSV compare equal."""
    return tuple(str(row[c]) for c in POINT_KEY)


def ensure_writable(folder: Path) -> None:
    """Create *folder* and prove it writable; raises ResultsError saying which folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", delete=True)
        probe.close()
    except OSError as e:
        raise ResultsError(f"cannot write to results folder {folder}: {e.strerror or e}; "
                           "choose another with --out") from None


class ResultsWriter:
    """Append points to the results folder *folder*, rewriting each file atomically."""

    def __init__(self, folder: Path | str, provenance: Mapping) -> None:
        self.folder = Path(folder)
        ensure_writable(self.folder)
        self.samples: list[dict] = []
        self.summary: list[dict] = []
        run_path = self.folder / RUN_FILE
        self.provenance = dict(provenance)
        if run_path.exists():
            previous = _read_json(run_path)
            self.samples = _read_csv(self.folder / SAMPLES_FILE, SAMPLE_COLUMNS)
            self.summary = _read_csv(self.folder / SUMMARY_FILE, SUMMARY_COLUMNS)
            resumes = previous.get("resumed", []) + [self.provenance.get("start_time")]
            self.provenance = {**previous, "resumed": resumes, "latest": dict(provenance)}
        self.done = {point_key(row) for row in self.summary}
        self.write_provenance()

    def has(self, key_row: Mapping) -> bool:
        """True if the point identified by *key_row* is already stored."""
        return point_key(key_row) in self.done

    def add_point(self, summary_row: Mapping, sample_rows: Iterable[Mapping] = ()) -> None:
        """Store one finished point (its summary and its samples) durably."""
        self.samples.extend(dict(r) for r in sample_rows)
        self.summary.append(dict(summary_row))
        self.done.add(point_key(summary_row))
        if self.samples:
            atomic_write(self.folder / SAMPLES_FILE, _csv_text(SAMPLE_COLUMNS, self.samples))
        atomic_write(self.folder / SUMMARY_FILE, _csv_text(SUMMARY_COLUMNS, self.summary))

    def write_provenance(self, **updates) -> None:
        """Merge *updates* into run.json and rewrite it."""
        self.provenance.update(updates)
        atomic_write(self.folder / RUN_FILE, json.dumps(self.provenance, indent=2, default=str) + "\n")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path} should hold a JSON object")
    return data


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    if not path.exists():
        return []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = set(columns) - set(reader.fieldnames or ()) - set(_OPTIONAL[columns])
            if missing:
                raise ResultsError(f"{path} lacks the columns {', '.join(sorted(missing))}")
            return [dict(row) for row in reader]
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ResultsError(f"cannot read {path}: {e}") from None


def _fill_optional(frame, columns: tuple[str, ...]):
    """Give rows written before an optional column existed the value it stands for."""
    for name, default in _OPTIONAL[columns].items():
        if name not in frame.columns:
            frame[name] = float("nan") if default is None else default
        if name == "time_us":
            frame[name] = frame[name].fillna(frame["median_us"])
        elif name == "timing":
            measured = frame["source"] == "measured"
            frame.loc[measured, name] = frame.loc[measured, name].fillna(default)
        else:
            frame[name] = frame[name].fillna(default).astype(type(default))
    return frame


def read_results(folder: Path | str):
    """Read a results folder: returns ``(provenance, summary, samples)``, the last two as
    pandas DataFrames (samples empty for predictions). Raises ResultsError naming the file
    that is missing or malformed."""
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise ResultsError(f"results folder {folder} does not exist")
    provenance = _read_json(folder / RUN_FILE) if (folder / RUN_FILE).exists() else None
    if provenance is None:
        raise ResultsError(f"{folder} is not a results folder: {RUN_FILE} is missing")
    frames = []
    for name, columns in ((SUMMARY_FILE, SUMMARY_COLUMNS), (SAMPLES_FILE, SAMPLE_COLUMNS)):
        path = folder / name
        if not path.exists():
            if name == SUMMARY_FILE:
                raise ResultsError(f"{path} is missing")
            frames.append(pd.DataFrame(columns=list(columns)))
            continue
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ResultsError(f"{path} is not a readable CSV file ({e})") from None
        missing = set(columns) - set(frame.columns) - set(_OPTIONAL[columns])
        if missing:
            raise ResultsError(f"{path} lacks the columns {', '.join(sorted(missing))}")
        frames.append(_fill_optional(frame, columns))
    summary, samples = frames
    return provenance, summary, samples
