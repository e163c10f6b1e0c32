"""Memory a sweep's buffers take on each node, checked before anything is allocated.

A point's buffers are allocated when it starts and freed when it ends, so a sweep's peak is
its largest size. A sweep whose largest size does not fit in a node's available memory is
refused with one sentence instead of meeting the OOM killer or numpy tracebacks halfway.
Device (CuPy) buffers are not checked: their memory is the GPU's, not the host's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from collbench.algorithms import build
from collbench.algorithms.data import COMPARE_CHUNK
from collbench.algorithms.dataflow import WINDOW, DataflowPlan
from collbench.algorithms.schedule import Kind, Step
from collbench.config import NATIVE, RunConfig
from collbench.errors import CollbenchError
from collbench.sizes import format_size


def scratch_elements(steps: Sequence[Step], execution: str, window: int = WINDOW) -> int:
    """Elements of the scratch area an executor allocates for a rank's *steps*: step by step
    (:class:`~collbench.executor.Executor`), the most that one step's reducing receives take;
    as a dataflow (:class:`~collbench.dataflow.DataflowExecutor`), its plan's scratch area
    (:meth:`~collbench.algorithms.dataflow.DataflowPlan.scratch_slots`)."""
    if execution == "step":
        return max((sum(op.length for op in step if op.kind is Kind.RECV_REDUCE) for step in steps),
                   default=0)
    return DataflowPlan(steps, window).scratch_slots()[1]


def rank_bytes(message_bytes: int, itemsize: int, scratch: int) -> int:
    """Bytes one rank allocates for a point of *message_bytes* whose scratch area holds
    *scratch* elements of *itemsize* bytes: the send and receive buffers (the message each,
    in place or not), the scratch area, and the check's reference chunk with its comparison
    temporaries (:func:`~collbench.algorithms.data.count_mismatches`). An upper bound to
    within a chunk; MPI's own buffers are not in it."""
    check = COMPARE_CHUNK * (3 * itemsize + 1)
    return 2 * message_bytes + scratch * itemsize + check


def point_bytes(config: RunConfig, algorithm: str, nranks: int, rank: int, size_bytes: int) -> int:
    """:func:`rank_bytes` of *rank* for one point. A schedule's scratch is its executor's
    (naive's root holds P-1 messages); ``native`` counts one message for the MPI library's
    temporary buffer (its large-message all-reduces allocate one)."""
    count = size_bytes // config.itemsize
    if algorithm == NATIVE:
        scratch = count
    else:
        options = {"segments": config.segments} if algorithm == "ring" and config.segments > 1 else {}
        steps = build(algorithm, nranks, count, **options).steps[rank]
        scratch = scratch_elements(steps, config.execution)
    return rank_bytes(count * config.itemsize, config.itemsize, scratch)


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's estimate of memory available to new allocations without swapping
    (``MemAvailable``), or None where there is no such file."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _size(nbytes: int) -> str:
    return f"{nbytes / (1 << 40):.3g} TiB" if nbytes >= 1 << 40 else format_size(nbytes)


def check_fits(config: RunConfig, comm, host: str) -> None:
    """Raise the same CollbenchError on every rank of *comm* if the sweep's largest size does
    not fit, for some algorithm, in a node's available memory: the bytes of the ranks on one
    host (:func:`point_bytes`) against the least MemAvailable they read. Collective."""
    sizes = config.sizes()
    if config.buffers != "numpy" or config.transport == "nccl" or not sizes:
        return
    largest = max(sizes)
    mine = {a: point_bytes(config, a, comm.size, comm.rank, largest) for a in config.algorithms}
    needed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    available: dict[str, int] = {}
    for name, free, per_algorithm in comm.allgather((host, available_bytes(), mine)):
        for algorithm, nbytes in per_algorithm.items():
            needed[name][algorithm] += nbytes
        if free is not None:
            available[name] = min(free, available.get(name, free))
    for name, free in sorted(available.items()):
        for algorithm in config.algorithms:
            if needed[name][algorithm] > free:
                raise CollbenchError(
                    f"the largest size, {_size(largest)}, needs {_size(needed[name][algorithm])} "
                    f"per node for {algorithm} (send, receive and scratch buffers of the ranks on {name}) "
                    f"but {name} has {_size(free)} available: choose a smaller -e", shared=True)
