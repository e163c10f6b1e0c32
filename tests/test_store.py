"""The results store as a specification: what a point costs to store, what a folder holds
after a crash at any step, who may write into it, and what older folders read as."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from collbench.cli import main
from collbench.errors import ResultsError
from collbench.schema import ADDED_COLUMNS, SAMPLE_COLUMNS, SCHEMA_VERSION, SUMMARY_COLUMNS
from collbench.store import LOCK_FILE, SAMPLES_FILE, SUMMARY_FILE, ResultsWriter, read_results, set_aside

ITERS = 4


def key(size: int, algorithm: str = "ring") -> dict:
    return {"source": "measured", "transport": "mpi", "algorithm": algorithm, "nranks": 2,
            "size_bytes": size, "dtype": "float32", "op": "sum", "in_place": False}


def summary(size: int, algorithm: str = "ring") -> dict:
    row = dict.fromkeys(SUMMARY_COLUMNS[8:-1], 1.5)
    return {**row, **key(size, algorithm), "count": size // 4, "iters": ITERS, "n_wrong": 0}


def samples(size: int, algorithm: str = "ring") -> list[dict]:
    return [{**key(size, algorithm), "count": size // 4, "phase": "timed", "iter": i,
             "time_us": 10.0 + i, "registrations": 0, "rank": -1} for i in range(ITERS)]


def store(writer: ResultsWriter, size: int, algorithm: str = "ring") -> None:
    writer.add_point(summary(size, algorithm), samples(size, algorithm))


def written_bytes() -> int:
    """Bytes this process has handed to write(2) so far (Linux /proc/self/io ``wchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def folder_bytes(folder: Path) -> int:
    return sum((folder / f).stat().st_size for f in (SUMMARY_FILE, SAMPLES_FILE))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io to count bytes")
def test_storing_a_point_writes_only_that_point_however_many_came_before(tmp_path):
    writer = ResultsWriter(tmp_path / "r", {"name": "r"})
    store(writer, 1 << 20)  # the first point also writes the headers
    costs = []
    for k in range(300):
        before, grown = written_bytes(), folder_bytes(writer.folder)
        store(writer, (1 << 20) + 4 * k + 4)
        costs.append((written_bytes() - before, folder_bytes(writer.folder) - grown))
    # every byte written is a byte the folder grew by: nothing is rewritten ...
    assert all(written == grown for written, grown in costs)
    # ... so point 300 costs what point 2 cost (the sizes have the same number of digits)
    assert costs[-1][0] == costs[0][0]


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        writer = ResultsWriter(tmp_path / "r", {"name": "r"})
        store(writer, 8)
        store(writer, 16)
    finally:
        os.umask(old)
    for name in ("run.json", SUMMARY_FILE, SAMPLES_FILE, LOCK_FILE):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o640, name


def test_every_file_carries_the_schema_version(tmp_path):
    writer = ResultsWriter(tmp_path / "r", {"name": "r"})
    store(writer, 8)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["schema_version"] == SCHEMA_VERSION
    for name, columns in ((SUMMARY_FILE, SUMMARY_COLUMNS), (SAMPLES_FILE, SAMPLE_COLUMNS)):
        frame = pd.read_csv(tmp_path / "r" / name)
        assert list(frame.columns) == list(columns)
        assert (frame.schema_version == SCHEMA_VERSION).all()


def write_unversioned(folder: Path, sizes=(8, 16)) -> None:
    """A folder as collbench wrote it before files carried a schema version."""
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"name": "old", "config": {"iters": ITERS}, "nranks": 2}))
    old_columns = [c for c in SUMMARY_COLUMNS[:-1] if c not in ADDED_COLUMNS]
    pd.DataFrame([summary(s) for s in sizes])[old_columns].to_csv(folder / SUMMARY_FILE, index=False)
    old_samples = [{k: v for k, v in r.items() if k not in ADDED_COLUMNS} for s in sizes for r in samples(s)]
    pd.DataFrame(old_samples).to_csv(folder / SAMPLES_FILE, index=False)


def test_a_folder_from_before_versioning_reads_as_schema_1_and_resumes(tmp_path):
    old = tmp_path / "old"
    write_unversioned(old)
    provenance, summary_frame, sample_frame = read_results(old)
    assert provenance["schema_version"] == 1
    assert list(summary_frame.size_bytes) == [8, 16] and (summary_frame.schema_version == 1).all()
    assert len(sample_frame) == 2 * ITERS and (sample_frame.schema_version == 1).all()

    writer = ResultsWriter(old, {"name": "old"})
    assert writer.has(key(8)) and not writer.has(key(32))
    store(writer, 32)
    _, summary_frame, sample_frame = read_results(old)
    assert list(summary_frame.schema_version) == [1, 1, SCHEMA_VERSION]
    assert list(sample_frame.groupby("size_bytes").schema_version.first()) == [1, 1, SCHEMA_VERSION]
    assert summary_frame.reg_timed.isna().tolist() == [True, True, False]  # added in schema 3
    assert sample_frame.registrations.isna().sum() == 2 * ITERS


def test_a_kill_between_the_samples_and_the_summary_leaves_no_half_point(tmp_path):
    folder = tmp_path / "r"
    writer = ResultsWriter(folder, {"name": "r"})
    store(writer, 8)
    store(writer, 16)
    writer.close()
    # what a kill after the samples append and before the summary append leaves behind
    stale = pd.DataFrame([{**r, "time_us": 999.0, "schema_version": SCHEMA_VERSION} for r in samples(32)])
    with open(folder / SAMPLES_FILE, "a") as f:
        stale.to_csv(f, header=False, index=False)

    _, summary_frame, sample_frame = read_results(folder)
    assert list(summary_frame.size_bytes) == [8, 16]
    assert set(sample_frame.size_bytes) == {8, 16}  # the uncommitted samples are not a point
    assert main(["report", str(folder), "--out", str(tmp_path / "report"), "--formats", "png"]) == 0

    writer = ResultsWriter(folder, {"name": "r"})  # the rerun measures the point again
    assert not writer.has(key(32))
    store(writer, 32)
    _, summary_frame, sample_frame = read_results(folder)
    remeasured = sample_frame[sample_frame.size_bytes == 32]
    assert len(remeasured) == ITERS and 999.0 not in set(remeasured.time_us)


def test_a_truncated_summary_is_not_taken_as_finished_points(tmp_path):
    folder = tmp_path / "r"
    writer = ResultsWriter(folder, {"name": "r"})
    for size in (8, 16, 32):
        store(writer, size)
    writer.close()
    text = (folder / SUMMARY_FILE).read_text()
    (folder / SUMMARY_FILE).write_text(text[: text.rindex("\n", 0, -1) + 20])  # 32 B row cut short

    _, summary_frame, sample_frame = read_results(folder)
    assert list(summary_frame.size_bytes) == [8, 16]
    assert set(sample_frame.size_bytes) == {8, 16}
    writer = ResultsWriter(folder, {"name": "r"})
    assert writer.has(key(16)) and not writer.has(key(32))
    store(writer, 32)
    _, summary_frame, sample_frame = read_results(folder)
    assert list(summary_frame.size_bytes) == [8, 16, 32] and len(sample_frame) == 3 * ITERS


def test_a_damaged_row_in_the_middle_is_named(tmp_path):
    folder = tmp_path / "r"
    writer = ResultsWriter(folder, {"name": "r"})
    store(writer, 8)
    store(writer, 16)
    writer.close()
    lines = (folder / SUMMARY_FILE).read_text().splitlines(keepends=True)
    lines[1] = lines[1][:30] + "\n"
    (folder / SUMMARY_FILE).write_text("".join(lines))
    with pytest.raises(ResultsError, match=r"summary.csv is corrupt: line 2 has \d+ fields"):
        read_results(folder)
    with pytest.raises(ResultsError, match=r"summary.csv is corrupt: line 2"):
        ResultsWriter(folder, {"name": "r"})


def test_one_writer_at_a_time(tmp_path):
    first = ResultsWriter(tmp_path / "r", {"name": "r"})
    with pytest.raises(ResultsError, match=rf"results folder {tmp_path / 'r'} is in use by another run "
                                           rf"\(pid {os.getpid()} on "):
        ResultsWriter(tmp_path / "r", {"name": "r"})
    first.close()
    ResultsWriter(tmp_path / "r", {"name": "r"}).close()


def test_a_point_is_stored_once(tmp_path):
    writer = ResultsWriter(tmp_path / "r", {"name": "r"})
    store(writer, 8)
    with pytest.raises(ResultsError, match="already holds the point"):
        store(writer, 8)


def test_a_folder_holding_a_point_twice_reads_its_first_measurement(tmp_path, capsys):
    """Folders written before repeated algorithms (-a ring,ring) were merged hold points twice."""
    folder = tmp_path / "dup"
    write_unversioned(folder, sizes=(8, 8, 16))
    with open(folder / SAMPLES_FILE) as f:
        lines = f.readlines()
    second = slice(1 + ITERS, 1 + 2 * ITERS)  # the second measurement of the 8 B point
    lines[second] = [line.replace(",10.0", ",77.0") for line in lines[second]]
    (folder / SAMPLES_FILE).write_text("".join(lines))
    _, summary_frame, sample_frame = read_results(folder)
    assert list(summary_frame.size_bytes) == [8, 16]
    assert len(sample_frame) == 2 * ITERS and 77.0 not in set(sample_frame.time_us)
    assert "holds 1 repeated point(s)" in capsys.readouterr().err
    assert main(["report", str(folder), "--out", str(tmp_path / "report"), "--formats", "png"]) == 0


def test_setting_aside_moves_a_folder_and_deletes_nothing(tmp_path):
    folder = tmp_path / "r"
    writer = ResultsWriter(folder, {"name": "r"})
    store(writer, 8)
    with pytest.raises(ResultsError, match="in use by another run"):
        set_aside(folder)
    writer.close()
    moved = set_aside(folder)
    assert moved is not None and moved.name.startswith("r.") and not folder.exists()
    assert list(read_results(moved)[1].size_bytes) == [8]
    assert set_aside(tmp_path / "absent") is None


def test_rows_from_before_per_rank_samples_read_with_their_meaning(tmp_path):
    """Schema 3 and older kept only the max over ranks, and the median was the reported time."""
    old = tmp_path / "old"
    write_unversioned(old)
    _, summary_frame, sample_frame = read_results(old)
    assert (sample_frame["rank"] == -1).all()
    assert (summary_frame.reported_us == summary_frame.median_us).all()
    assert (summary_frame.timing == "per-call").all()
