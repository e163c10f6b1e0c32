"""Op traces in Chrome's trace format (chrome://tracing, https://ui.perfetto.dev), for real
runs and for the simulator alike, so that a user sees the pipeline and the overlap.

A rank records ``(seconds, event, op)`` for every op event: ``post``, ``land`` (a receive's
message is in), ``send done``, ``reduce start`` and ``reduce end``; *op* numbers the rank's
ops as :func:`~collbench.algorithms.dependencies.flat_ops` does. :func:`chrome_events` turns a
rank's records into trace events, one process per rank:

- every record as an instant event (``ph`` ``i``) named for its event, with the op's kind,
  peer, element range, step and lane in ``args``;
- every transfer as an async span (``ph`` ``b``/``e``, one ``id`` per op) from its post to
  its landing or its send's completion, on the thread ``transfers``;
- every reduction as a complete event (``ph`` ``X``) on the thread ``cpu``.

:func:`summary` counts the reductions during which a transfer of their rank completed: the
overlap pipelining is for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from collbench.algorithms.schedule import Kind, Op
from collbench.errors import CollbenchError

EVENTS = ("post", "land", "send done", "reduce start", "reduce end")

Record = tuple[float, str, int]
"""(seconds since the call began, event, op number)."""


class Trace:
    """One rank's records during one call; :meth:`start` begins a call (clock at zero)."""

    __slots__ = ("t0", "records")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self.records.clear()
        self.t0 = time.perf_counter()

    def event(self, name: str, op: int) -> None:
        self.records.append((time.perf_counter() - self.t0, name, op))


def _label(op: Op) -> str:
    where = f"[{op.start},{op.stop})"
    if op.kind is Kind.SEND:
        return f"send {where} to {op.peer}"
    return f"{'reduce' if op.kind is Kind.RECV_REDUCE else 'copy'} {where} from {op.peer}"


def chrome_events(rank: int, ops: Sequence[Op], steps: Sequence[int], records: Iterable[Record],
                  offset_us: float = 0.0, name: str = "") -> list[dict]:
    """Trace events of *rank* from its *records*, its *ops* and their *steps*, times shifted by
    *offset_us*; *name* labels the call (e.g. the point)."""
    events: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": f"rank {rank}"}},
        {"ph": "M", "name": "thread_name", "pid": rank, "tid": 0, "args": {"name": "transfers"}},
        {"ph": "M", "name": "thread_name", "pid": rank, "tid": 1, "args": {"name": "cpu"}},
    ]
    reduce_began: dict[int, float] = {}
    for seconds, event, i in records:
        op, ts = ops[i], offset_us + seconds * 1e6
        args = {"op": i, "kind": op.kind.value, "peer": op.peer, "start": op.start, "stop": op.stop,
                "step": steps[i], "lane": op.lane, "call": name}
        events.append({"ph": "i", "s": "t", "name": event, "cat": "op", "ts": ts, "pid": rank, "tid": 0,
                       "args": args})
        span = {"cat": "transfer", "name": _label(op), "id": f"{rank}.{i}", "pid": rank, "tid": 0,
                "ts": ts}
        if event == "post":
            events.append({**span, "ph": "b", "args": args})
        elif event in ("land", "send done"):
            events.append({**span, "ph": "e"})
        elif event == "reduce start":
            reduce_began[i] = ts
        elif event == "reduce end":
            began = reduce_began.pop(i)
            events.append({"ph": "X", "cat": "reduce", "name": f"reduce [{op.start},{op.stop})",
                           "ts": began, "dur": ts - began, "pid": rank, "tid": 1, "args": args})
    return events


def summary(events: Sequence[dict]) -> dict:
    """Transfers, reductions, and the reductions during which a transfer of the same rank
    completed (landed or its send was done): data moved while the rank reduced. A transfer
    merely posted does not count, since a receive posted early waits without moving data."""
    ends: dict[int, list[float]] = {}
    for e in events:
        if e["ph"] == "e":
            ends.setdefault(e["pid"], []).append(e["ts"])
    reductions = [e for e in events if e["ph"] == "X"]
    overlapped = sum(any(e["ts"] < t < e["ts"] + e["dur"] for t in ends.get(e["pid"], ()))
                     for e in reductions)
    return {"transfers": sum(map(len, ends.values())), "reductions": len(reductions),
            "overlapped_reductions": overlapped}


def write(path: str | Path, events: list[dict], info: dict | None = None) -> dict:
    """Write *events* as a Chrome trace JSON object to *path*, with :func:`summary` and *info*
    under ``otherData``; return the summary. Raises CollbenchError naming the path if it
    cannot be written."""
    counts = summary(events)
    document = {"traceEvents": events, "displayTimeUnit": "ns",
                "otherData": {**(info or {}), **counts}}
    try:
        Path(path).write_text(json.dumps(document))
    except OSError as e:
        raise CollbenchError(f"cannot write the trace {path}: {e.strerror or e}") from None
    return counts


def describe(path: str | Path, counts: dict) -> str:
    """The one line the commands print about a written trace."""
    return (f"# trace: {path} ({counts['transfers']} transfers, {counts['reductions']} reductions, "
            f"{counts['overlapped_reductions']} with a transfer completing meanwhile)")
