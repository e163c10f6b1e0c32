"""The results store: one folder per run, written point by point by one writer at a time.

- ``run.json`` is rewritten through a temporary file and a rename when provenance changes.
- ``samples.csv`` and ``summary.csv`` only grow: storing a point appends its sample rows, then
  its summary row, so it costs the same however many points came before. The summary row
  commits the point. Sample rows without one (a job killed between the two appends) and a last
  line without its newline (a job killed mid-write, a truncated copy) are not points: readers
  leave them out and the next writer removes them before it appends, so a rerun measures those
  points again and never mixes old samples with new.
- ``.collbench.lock`` is held (``flock``) by the writer, so a second run into the same folder
  is refused instead of interleaving its points with the first one's.

Every file honours the umask. A rerun into the same folder reads it back and skips the points
already there (see :data:`collbench.schema.POINT_KEY`). Only rank 0 writes.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from collbench.errors import ResultsError
from collbench.schema import (
    ADDED_COLUMNS,
    OPTIONAL_SAMPLE_COLUMNS,
    OPTIONAL_SUMMARY_COLUMNS,
    POINT_KEY,
    SAMPLE_COLUMNS,
    SCHEMA_VERSION,
    SUMMARY_COLUMNS,
)

RUN_FILE, SAMPLES_FILE, SUMMARY_FILE = "run.json", "samples.csv", "summary.csv"
LOCK_FILE = ".collbench.lock"
VERSION_KEY = "schema_version"
UNVERSIONED = 1
"""The schema of folders written before files carried a version."""
_OPTIONAL = {SAMPLE_COLUMNS: OPTIONAL_SAMPLE_COLUMNS, SUMMARY_COLUMNS: OPTIONAL_SUMMARY_COLUMNS}
"""Per file, the columns older schemas lack (:func:`_fill_optional` reads them in)."""


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, text: str) -> None:
    """Write *text* to *path* through a temporary file and a rename; the file gets the mode a
    plain ``open`` would give it (0666 less the umask), not the temporary file's 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _append(path: Path, text: str) -> None:
    """Append *text* to *path* and make it durable before the caller's next step."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _csv_text(columns: Iterable[str], rows: Iterable[Mapping], header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    if header:
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


class FolderLock:
    """An exclusive ``flock`` on *folder*'s lock file, held until :meth:`release` or exit.

    Raises ResultsError naming the holder if another process has it. Where the file system
    cannot lock (some parallel file systems without their flock option) a note says so and the
    folder is used unlocked."""

    fd: int | None

    def __init__(self, folder: Path) -> None:
        import fcntl

        path, self.fd = folder / LOCK_FILE, None
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ResultsError(f"cannot create the lock file {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 200).decode(errors="replace").strip() or "unknown process"
            self.release()
            raise ResultsError(f"results folder {folder} is in use by another run ({holder}); wait "
                               "for it to finish or choose another --out") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            print(f"collbench: note: {folder} cannot be locked ({e.strerror}); do not run another "
                  "job into it at the same time", file=sys.stderr)
            return
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:  # a writer dropped after an error frees its folder in-process too
        self.release()


def set_aside(folder: Path | str) -> Path | None:
    """Rename the results folder *folder* to ``<folder>.<UTC time>`` so that a new run can
    start afresh under its name; returns the new name, or None if *folder* holds no results.
    Nothing is deleted; a folder in use by another run is refused (ResultsError)."""
    from collbench.provenance import timestamp

    folder = Path(folder)
    if not any((folder / name).exists() for name in (RUN_FILE, SUMMARY_FILE, SAMPLES_FILE)):
        return None
    lock = FolderLock(folder)
    try:
        target, n = folder.with_name(f"{folder.name}.{timestamp()}"), 1
        while target.exists():
            n += 1
            target = folder.with_name(f"{folder.name}.{timestamp()}-{n}")
        try:
            folder.rename(target)
        except OSError as e:
            raise ResultsError(f"cannot move {folder} aside to {target}: {e.strerror or e}") from None
    finally:
        lock.release()
    return target


def _committed_lines(path: Path) -> tuple[list[str], bool]:
    """The complete (newline-ended) lines of *path*, and whether a cut-short last line was
    left out."""
    try:
        text = path.read_bytes().decode()
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path} is not a readable CSV file ({e})") from None
    lines = text.split("\n")
    tail = lines.pop()
    return lines, bool(tail)


def _parse(path: Path, lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of *lines*; raises ResultsError at a row whose field count is wrong."""
    try:
        rows = list(csv.reader(lines))
    except csv.Error as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    if not rows:
        return [], []
    header, body = rows[0], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header) and row:
            raise ResultsError(f"{path} is corrupt: line {number} has {len(row)} fields, the header "
                               f"{len(header)}")
    return header, [row for row in body if row]


def _check_columns(path: Path, header: list[str], columns: tuple[str, ...]) -> None:
    missing = set(columns) - set(header) - {VERSION_KEY} - set(ADDED_COLUMNS)
    if missing:
        raise ResultsError(f"{path} lacks the columns {', '.join(sorted(missing))}")


class ResultsWriter:
    """Store points in the results folder *folder*, appending each one (see the module text).

    Opening an existing folder resumes it: its provenance gains a ``resumed`` entry and a
    ``latest`` copy of *provenance*, uncommitted rows are removed and files of an older schema
    are rewritten once to the current one. *may_resume*, given the folder's provenance under
    the lock before anything changes, raises to refuse the resume. Holds the folder's lock
    until :meth:`close`."""

    def __init__(self, folder: Path | str, provenance: Mapping,
                 may_resume: Callable[[dict], None] | None = None) -> None:
        self.folder = Path(folder)
        ensure_writable(self.folder)
        self._lock = FolderLock(self.folder)
        self.provenance = {**provenance, VERSION_KEY: SCHEMA_VERSION}
        self.done: set[tuple] = set()
        run_path = self.folder / RUN_FILE
        if run_path.exists():
            previous = _read_json(run_path)
            version = previous.get(VERSION_KEY, UNVERSIONED)
            if not isinstance(version, int) or version > SCHEMA_VERSION:
                raise ResultsError(f"{self.folder} was written with results schema {version!r}, newer "
                                   f"than this collbench's {SCHEMA_VERSION}; resume it with that "
                                   "version or choose another --out")
            if may_resume:
                may_resume(previous)
            self.done = self._recover()
            resumes = previous.get("resumed", []) + [provenance.get("start_time")]
            self.provenance = {**previous, "resumed": resumes, "latest": dict(provenance),
                               VERSION_KEY: SCHEMA_VERSION}
        elif any((self.folder / f).exists() for f in (SUMMARY_FILE, SAMPLES_FILE)):
            raise ResultsError(f"{self.folder} holds results files but no {RUN_FILE}; choose another "
                               "--out")
        self.write_provenance()

    def _recover(self) -> set[tuple]:
        """Bring the CSV files to committed points in the current schema; their keys."""
        summary_path, samples_path = self.folder / SUMMARY_FILE, self.folder / SAMPLES_FILE
        done: set[tuple] = set()
        if summary_path.exists():
            done = self._rewrite_committed(summary_path, SUMMARY_COLUMNS, None)
        if samples_path.exists():
            self._rewrite_committed(samples_path, SAMPLE_COLUMNS, done)
        return done

    def _rewrite_committed(self, path: Path, columns: tuple[str, ...], keep: set | None) -> set[tuple]:
        """Rewrite *path* if it has a cut-short line, rows whose key is not in *keep* (None: all
        kept) or another header than *columns*; returns the keys of the rows it keeps."""
        lines, torn = _committed_lines(path)
        header, rows = _parse(path, lines)
        if not header:
            path.unlink()
            return set()
        _check_columns(path, header, columns)
        records = [dict(zip(header, row)) for row in rows]
        kept = [r for r in records if keep is None or point_key(r) in keep]
        if torn or len(kept) != len(records) or header != list(columns):
            for r in kept:
                r.setdefault(VERSION_KEY, str(UNVERSIONED))
                for column in ADDED_COLUMNS:
                    if column in columns:
                        r.setdefault(column, "")
            extra = set(header) - set(columns)
            if extra:
                raise ResultsError(f"{path} has columns this collbench does not know "
                                   f"({', '.join(sorted(extra))}); choose another --out")
            atomic_write(path, _csv_text(columns, kept))
        return {point_key(r) for r in kept}

    def has(self, key_row: Mapping) -> bool:
        """True if the point identified by *key_row* is already stored."""
        return point_key(key_row) in self.done

    def add_point(self, summary_row: Mapping, sample_rows: Iterable[Mapping] = ()) -> None:
        """Store one finished point durably: its samples, then its summary row (the commit).
        Raises ResultsError if the point is already stored."""
        key = point_key(summary_row)
        if key in self.done:
            raise ResultsError(f"{self.folder} already holds the point {', '.join(key)}; a point is "
                               "stored once: choose another --out")
        samples = [{**r, VERSION_KEY: SCHEMA_VERSION} for r in sample_rows]
        if samples:
            self._append_rows(self.folder / SAMPLES_FILE, SAMPLE_COLUMNS, samples)
        self._append_rows(self.folder / SUMMARY_FILE, SUMMARY_COLUMNS,
                          [{**summary_row, VERSION_KEY: SCHEMA_VERSION}])
        self.done.add(key)

    @staticmethod
    def _append_rows(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
        if path.exists():
            _append(path, _csv_text(columns, rows, header=False))
        else:
            atomic_write(path, _csv_text(columns, rows))

    def write_provenance(self, **updates) -> None:
        """Merge *updates* into run.json and rewrite it."""
        self.provenance.update(updates)
        atomic_write(self.folder / RUN_FILE, json.dumps(self.provenance, indent=2, default=str) + "\n")

    def close(self) -> None:
        """Release the folder's lock (also released when the process ends)."""
        self._lock.release()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path} should hold a JSON object")
    return data


def read_provenance(folder: Path | str) -> dict | None:
    """The ``run.json`` of *folder*, or None if it has none."""
    path = Path(folder) / RUN_FILE
    return _read_json(path) if path.exists() else None


def _read_frame(path: Path, columns: tuple[str, ...]):
    """The committed rows of the CSV file *path* as a DataFrame (schema 1 rows get
    ``schema_version`` 1); raises ResultsError naming the file if it is damaged."""
    import pandas as pd

    lines, _ = _committed_lines(path)
    header, _rows = _parse(path, lines)
    if not header:
        raise ResultsError(f"{path} is not a readable CSV file (no complete header line)")
    try:
        frame = pd.read_csv(io.StringIO("\n".join(lines) + "\n"))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ResultsError(f"{path} is not a readable CSV file ({e})") from None
    _check_columns(path, header, columns)
    if VERSION_KEY not in frame:
        frame[VERSION_KEY] = UNVERSIONED
    for column in ADDED_COLUMNS:
        if column in columns and column not in frame:
            frame[column] = float("nan")
    return _fill_optional(frame, columns)


def _keys(frame) -> list[tuple]:
    return list(zip(*(frame[c].astype(str) for c in POINT_KEY)))


def _first_of_each_point(folder: Path, summary, samples):
    """Keep the first measurement of a point stored more than once (folders written before
    repeated algorithms were merged): its summary row and its first block of samples (a block
    ends where the key changes or an iteration repeats)."""
    repeated = summary.duplicated(list(POINT_KEY))
    if not repeated.any():
        return summary, samples
    print(f"collbench: note: {folder / SUMMARY_FILE} holds {int(repeated.sum())} repeated point(s); "
          "the first measurement of each is used", file=sys.stderr)
    summary = summary[~repeated].reset_index(drop=True)
    if len(samples):
        block, first_block, keep, previous, in_block = 0, {}, [], None, set()
        steps = zip(samples["phase"].astype(str), samples["iter"].astype(str))
        for key, step in zip(_keys(samples), steps):
            if key != previous or step in in_block:  # a new point's samples start
                block, previous, in_block = block + 1, key, set()
            in_block.add(step)
            keep.append(first_block.setdefault(key, block) == block)
        samples = samples[keep].reset_index(drop=True)
    return summary, samples


def _fill_optional(frame, columns: tuple[str, ...]):
    """Give rows written before an optional column existed the value it stands for."""
    for name, default in _OPTIONAL[columns].items():
        if name not in frame.columns:
            frame[name] = float("nan") if default is None else default
        if name == "reported_us":
            frame[name] = frame[name].where(frame[name].notna(), frame["median_us"])
        elif name == "timing":
            column = frame[name].astype(object)
            frame[name] = column.where(column.notna() | (frame["source"] != "measured"), default)
        else:
            frame[name] = frame[name].fillna(default).astype(type(default))
    return frame


def read_results(folder: Path | str):
    """Read a results folder: returns ``(provenance, summary, samples)``, the last two as
    pandas DataFrames of committed points only (samples empty for predictions). Raises
    ResultsError naming the file that is missing or malformed."""
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise ResultsError(f"results folder {folder} does not exist")
    provenance = read_provenance(folder)
    if provenance is None:
        raise ResultsError(f"{folder} is not a results folder: {RUN_FILE} is missing")
    provenance.setdefault(VERSION_KEY, UNVERSIONED)
    if not (folder / SUMMARY_FILE).exists():
        raise ResultsError(f"{folder / SUMMARY_FILE} is missing")
    summary = _read_frame(folder / SUMMARY_FILE, SUMMARY_COLUMNS)
    if (folder / SAMPLES_FILE).exists():
        samples = _read_frame(folder / SAMPLES_FILE, SAMPLE_COLUMNS)
        committed = set(_keys(summary))
        samples = samples[[k in committed for k in _keys(samples)]].reset_index(drop=True)
    else:
        samples = pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    summary, samples = _first_of_each_point(folder, summary, samples)
    return provenance, summary, samples


def numeric_columns(frame, columns, path: Path, required=(), purpose: str = ""):
    """Coerce *columns* of the DataFrame *frame* to numbers in place and return it; raises
    ResultsError naming *path*, the column and the line of a value that is not a number, or of
    an empty cell in a *required* column (*purpose* ends the sentence: what needs the numbers)."""
    import pandas as pd

    tail = f"; {purpose}" if purpose else ""
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            line = int(bad.to_numpy().argmax()) + 2  # the header is line 1
            raise ResultsError(f"{path} holds {frame[col][bad].iloc[0]!r} in column {col} on line {line}, "
                               f"not a number{tail}")
        if col in required and values.isna().any():
            line = int(values.isna().to_numpy().argmax()) + 2
            raise ResultsError(f"{path} is corrupt: line {line} has no value in column {col}{tail}")
        frame[col] = values
    return frame
