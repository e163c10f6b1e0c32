"""Op traces in Chrome's format, from the simulator and from real runs: loadable JSON whose
events keep the order every op goes through."""

import json
import subprocess
import sys

import pytest

from collbench.trace import summary
from tests.conftest import ROOT


def check_trace(path) -> dict:
    """Assert the structure and ordering invariants of a trace file; return its otherData."""
    document = json.loads(path.read_text())
    events = document["traceEvents"]
    assert events and all(e["ph"] in ("M", "i", "b", "e", "X") for e in events)
    timed = [e for e in events if e["ph"] != "M"]
    assert all(isinstance(e["ts"], (int, float)) and isinstance(e["pid"], int) for e in timed)
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {f"rank {pid}" for pid in {e["pid"] for e in timed}}
    # Every op: posted once, then landed or done once, in that order.
    spans: dict = {}
    for e in timed:
        if e["ph"] in ("b", "e"):
            spans.setdefault((e["pid"], e["id"]), {})[e["ph"]] = e["ts"]
    assert spans and all(set(s) == {"b", "e"} and s["b"] <= s["e"] for s in spans.values())
    instants: dict = {}
    for e in timed:
        if e["ph"] == "i":
            instants.setdefault((e["pid"], e["args"]["call"], e["args"]["op"]), {})[e["name"]] = e["ts"]
    for (_, _, _), seen in instants.items():
        assert seen["post"] <= seen.get("land", seen.get("send done"))
        if "reduce start" in seen:
            assert seen["land"] <= seen["reduce start"] <= seen["reduce end"]
    # A rank's reductions run one at a time on its CPU thread.
    for pid in {e["pid"] for e in timed}:
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in timed if e["ph"] == "X" and e["pid"] == pid)
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(runs, runs[1:]))
    other = document["otherData"]
    assert other == {**other, **summary(events)}
    return other


def test_summary_counts_reductions_with_a_transfer_completing_during_them_by_hand():
    events = [
        {"ph": "b", "pid": 0, "id": "0.1", "ts": 0.0}, {"ph": "e", "pid": 0, "id": "0.1", "ts": 5.0},
        {"ph": "b", "pid": 0, "id": "0.2", "ts": 0.0}, {"ph": "e", "pid": 0, "id": "0.2", "ts": 20.0},
        {"ph": "b", "pid": 1, "id": "1.1", "ts": 0.0}, {"ph": "e", "pid": 1, "id": "1.1", "ts": 12.0},
        {"ph": "X", "pid": 0, "ts": 10.0, "dur": 5.0},  # nothing of rank 0 ends in (10, 15); rank 1's does
        {"ph": "X", "pid": 0, "ts": 15.0, "dur": 10.0},  # op 0.2 ends at 20
    ]
    assert summary(events) == {"transfers": 3, "reductions": 2, "overlapped_reductions": 1}


@pytest.mark.parametrize(("segments", "overlapped"), [(1, False), (4, True)])
def test_simulated_trace_shows_overlap_only_when_pipelined(collbench_cmd, tmp_path, segments, overlapped):
    path = tmp_path / "trace.json"
    done = subprocess.run([*collbench_cmd, "sim", "--algorithms", "ring,naive", "--ranks", "4", "--sizes",
                           "1MiB", "--network", "ib-fdr", "--gamma", "3e-10", "-s", str(segments),
                           "--execution", "dataflow", "--no-save", "--trace", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    other = check_trace(path)
    assert other["execution"] == "dataflow" and other["segments"] == segments
    ring_reductions = 3 * 4 * segments  # P-1 per rank and segment; naive's root adds 3
    assert other["reductions"] == ring_reductions + 3
    assert (other["overlapped_reductions"] > 0) == overlapped
    assert f"# trace: {path}" in done.stdout


def test_simulated_trace_needs_dataflow(collbench_cmd, tmp_path):
    done = subprocess.run([*collbench_cmd, "sim", "--no-save", "--trace", str(tmp_path / "t.json")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2 and "--execution dataflow" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.mpi
@pytest.mark.parametrize("execution", ["step", "dataflow"])
def test_measured_trace_has_every_rank_s_ops_in_order(mpiexec, tmp_path, execution):
    path = tmp_path / "trace.json"
    done = mpiexec(3, sys.executable, "-m", "collbench", "run", "--algorithms", "ring,rabenseifner,native",
                   "-b", "1M", "-e", "1M", "-n", "2", "-w", "0", "--modes", "out", "--segments", "4",
                   "--execution", execution,
                   "--trace", path, "--out", tmp_path / "results", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    other = check_trace(path)
    assert other["source"] == "measured" and other["nranks"] == 3 and other["execution"] == execution
    # ring: P-1 per rank and segment; Rabenseifner at P = 3: two in the fold, one per core rank;
    # native: not a schedule, not traced
    assert other["reductions"] == 3 * (2 * 4) + 4
    assert f"# trace: {path}" in done.stdout


def test_a_folder_resumes_with_or_without_a_trace_but_not_with_another_execution():
    from collbench.config import make_config, resume_mismatches

    traced = make_config({"execution": "dataflow", "trace": "t.json"}).as_dict()
    assert resume_mismatches(traced, make_config({"execution": "dataflow"}).as_dict()) == []
    assert resume_mismatches(traced, make_config({}).as_dict()) == ["execution 'dataflow' -> 'step'"]
