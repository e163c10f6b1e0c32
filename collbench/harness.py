"""The measurement harness: the same timing and checking for every algorithm and transport.

For each point (algorithm, size, in/out of place) the harness runs one *first* call (kept
on its own: the seed study saw a first run 7.5x the median), ``warmup_iters`` warm-ups and
``iters`` timed iterations of ``agg_iters`` calls each. Two timings:

- ``per-call``: each iteration is ``barrier, clock, call(s), device sync, clock``; the ranks'
  times of one iteration are combined (by default their maximum) and the point's time is
  the median over iterations.
- ``aggregate``: one barrier, then the iterations back to back with a clock reading between
  them; the point's time is each rank's mean per call combined over ranks (by default their
  mean): what nccl-tests' all_reduce_perf reports. An in-place call then starts from the
  previous call's output, as there.

Every rank's own times are kept with the combined ones. Then ``check_iters`` separate calls
on fresh inputs whose exact result is known count wrong elements, summed over ranks into
``#wrong`` (nccl-tests keeps timing and checking apart the same way). Every point is stored
as soon as it is done.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collbench import mpi_threads, provenance
from collbench.algorithms import build
from collbench.algorithms.data import (
    count_mismatches,
    expected_period,
    fill_periodic,
    input_period,
    make_input,
)
from collbench.algorithms.ops import ReduceOp
from collbench.config import NATIVE, RunConfig, resume_mismatches
from collbench.dataflow import DataflowExecutor
from collbench.errors import CollbenchError
from collbench.executor import Executor
from collbench.footprint import check_fits, point_bytes
from collbench.launcher import check_world_size
from collbench.output import PointPrinter
from collbench.schema import COMBINED_RANKS
from collbench.sizes import format_size
from collbench.stats import summarise
from collbench.store import ResultsWriter, set_aside
from collbench.transports import open_transport
from collbench.transports.base import Progress
from collbench.watchdog import Watchdog, abort_on_failure


@dataclass(frozen=True)
class Point:
    algorithm: str
    size_bytes: int
    in_place: bool


def plan_points(config: RunConfig) -> list[Point]:
    """Every point of the sweep, in run order: size, then algorithm, then out- and in-place.

    Size-major, as nccl-tests and OSU print: the algorithms compared at one size are measured
    back to back, so a machine whose speed drifts during a sweep (shared hosts, clocks,
    neighbours' memory traffic) moves them together instead of skewing their ratio."""
    return [Point(alg, size, mode == "in") for size in config.sizes()
            for alg in config.algorithms for mode in config.modes]


def _schedule_options(config: RunConfig, algorithm: str) -> dict:
    return {"segments": config.segments} if algorithm == "ring" and config.segments > 1 else {}


class PointRunner:
    """Buffers and the callable for one point on this rank; allocates before timing."""

    def __init__(self, config: RunConfig, transport, point: Point, progress: Progress) -> None:
        self.config, self.transport, self.point = config, transport, point
        self.xp = transport.xp
        self.op = ReduceOp.parse(config.op)
        self.count = point.size_bytes // config.itemsize
        self.send = self._input(seed=0)
        self.recv = self.xp.empty_like(self.send)
        if point.algorithm == NATIVE:
            self._executor = None
        else:
            schedule = build(point.algorithm, transport.size, self.count,
                             **_schedule_options(config, point.algorithm))
            make = DataflowExecutor if config.execution == "dataflow" else Executor
            self._executor = make(schedule, transport, config.datatype, self.op, progress)

    def _input(self, seed: int):
        return make_input(self.transport.rank, self.transport.size, self.count,
                          self.config.datatype, self.op, seed, self.xp)

    def prepare(self) -> None:
        """Untimed: restore the input of an in-place call, so every call sees the same data."""
        if self.point.in_place:
            self.recv[...] = self.send

    def call(self, sync: bool = True) -> None:
        """The timed operation; *sync* waits for the device to finish it."""
        send = None if self.point.in_place else self.send
        if self._executor is None:
            self.transport.native_allreduce(send, self.recv, self.config.op)
        else:
            self._executor.run(self.recv, send)
        if sync:
            self.transport.synchronize()

    def count_wrong(self, seed: int) -> int:
        """Run once on fresh inputs and count wrong elements on this rank (an out-of-place
        call that changes its input counts those elements as wrong too). The inputs go into
        the send buffer and both buffers are compared with one period of what they must hold
        (:func:`~collbench.algorithms.data.period`), a chunk at a time: checking allocates
        nothing of the message's size."""
        rank, nranks, dtype = self.transport.rank, self.transport.size, self.config.datatype
        given = input_period(rank, nranks, dtype, self.op, seed, self.xp)
        fill_periodic(self.send, given)
        self.prepare()
        self.call()
        expected = expected_period(nranks, dtype, self.op, seed, self.xp)
        wrong = count_mismatches(self.recv, expected, self._differs(expected), self.xp)
        if not self.point.in_place:
            wrong += count_mismatches(self.send, given, xp=self.xp)
        return wrong

    def _differs(self, expected):
        """The elementwise test of a wrong result: None (exact), except for a native average
        that scales before summing (see ``native_avg_prescaled``): within P+2 units in the last
        place of the largest expected magnitude."""
        if not (self.op is ReduceOp.AVG and self._executor is None
                and self.transport.native_avg_prescaled and expected.dtype.kind == "f"):
            return None
        scale = float(abs(expected[:self.count]).max()) if self.count else 0.0
        tolerance = (self.transport.size + 2) * float(np.finfo(expected.dtype).eps) * max(scale, 1.0)
        return lambda got, want: abs(got - want) > tolerance

    def traced_events(self, comm, offset_us: float) -> list[dict]:
        """Untimed: one more call with every op's events recorded (not for ``native``), as this
        rank's Chrome trace events (:mod:`collbench.trace`), shifted by *offset_us*. The ranks
        start together after a barrier; their clocks agree on one host only."""
        from collbench.trace import Trace, chrome_events

        executor = self._executor
        if executor is None:
            return []
        executor.trace = trace = Trace()
        self.prepare()
        comm.Barrier()
        trace.start()
        self.call()
        executor.trace = None
        name = f"{self.point.algorithm} {self.point.size_bytes} B {'in' if self.point.in_place else 'out'}"
        ops, steps = ((executor.plan.ops, executor.plan.steps) if isinstance(executor, DataflowExecutor)
                      else (executor.ops, executor.op_steps))
        return chrome_events(self.transport.rank, ops, steps, trace.records, offset_us, name)


COUNTERS = ("registrations", "hits", "misses")
"""The transport counters recorded per call (:meth:`~collbench.transports.base.Transport.counters`)."""


def _calls(runner: PointRunner, agg_iters: int) -> None:
    """One iteration: *agg_iters* calls back to back, the device synchronised after the last."""
    for i in range(agg_iters):
        runner.call(sync=i == agg_iters - 1)


def _per_call(runner: PointRunner, comm, iterations: int, agg_iters: int, progress: Progress,
              counts: np.ndarray | None = None) -> np.ndarray:
    """Seconds per call of each iteration, each started by a barrier on restored inputs.
    *counts* (iterations x COUNTERS), if given, receives what each iteration added to the
    transport's counters, read outside the clock."""
    local = np.empty(iterations)
    counters = runner.transport.counters
    for i in range(iterations):
        runner.prepare()
        runner.transport.synchronize()  # a device-side restore must not leak into the timing
        progress.waiting("barrier before an iteration")
        runner.transport.barrier(comm)
        progress.waiting(runner.point.algorithm)
        before = counters() if counts is not None else None
        start = time.perf_counter()
        _calls(runner, agg_iters)
        local[i] = (time.perf_counter() - start) / agg_iters
        if before:
            after = counters()
            counts[i] = [after[k] - before[k] for k in COUNTERS]
    return local


def _back_to_back(runner: PointRunner, comm, iterations: int, agg_iters: int, progress: Progress,
                  counts: np.ndarray | None = None) -> np.ndarray:
    """Seconds per call of each iteration, after one barrier, with no barrier or input
    restore between iterations: their sum is the block's wall time on this rank. Counters
    are read between iterations, so their cost lands in the next one's time."""
    if iterations == 0:
        return np.empty(0)
    runner.prepare()
    runner.transport.synchronize()
    progress.waiting("barrier before the iterations")
    runner.transport.barrier(comm)
    progress.waiting(runner.point.algorithm)
    counters = runner.transport.counters
    before = counters() if counts is not None else None
    stamps = np.empty(iterations + 1)
    stamps[0] = time.perf_counter()
    for i in range(iterations):
        _calls(runner, agg_iters)
        stamps[i + 1] = time.perf_counter()
        if before:
            after = counters()
            counts[i], before = [after[k] - before[k] for k in COUNTERS], after
    return np.diff(stamps) / agg_iters


def time_point(runner: PointRunner, comm, config: RunConfig, progress: Progress,
               counts: np.ndarray | None = None) -> np.ndarray:
    """Local seconds per call of every iteration: first (one call), warm-ups, timed. *counts*
    (iterations x COUNTERS), if given, receives what each iteration added to the transport's
    counters."""
    block = _back_to_back if config.timing == "aggregate" else _per_call
    warm = 1 + config.warmup_iters
    parts = (None, None, None) if counts is None else (counts[:1], counts[1:warm], counts[warm:])
    return np.concatenate([_per_call(runner, comm, 1, 1, progress, parts[0]),
                           block(runner, comm, config.warmup_iters, config.agg_iters, progress, parts[1]),
                           block(runner, comm, config.iters, config.agg_iters, progress, parts[2])])


_COMBINE = {0: lambda t, axis: np.take(t, 0, axis=axis), 1: np.mean, 2: np.min, 3: np.max}
"""nccl-tests' ``-a`` codes as functions over the ranks' axis of a times array."""


def point_time(rank_times: np.ndarray, config: RunConfig) -> float:
    """The point's reported time from the timed part of ``rank_times[rank, iteration]``:
    per-call, the median over iterations of the combined time; aggregate, each rank's mean
    combined over ranks (nccl-tests' all_reduce_perf)."""
    combine = _COMBINE[config.average]
    if config.timing == "aggregate":
        return float(combine(rank_times.mean(axis=1), axis=0))
    return float(np.median(combine(rank_times, axis=0)))


def _phases(config: RunConfig) -> list[tuple[str, int]]:
    phases = [("first", 0)] + [("warmup", i) for i in range(config.warmup_iters)]
    return phases + [("timed", i) for i in range(config.iters)]


class Sweep:
    """One ``collbench run``: a transport, a results folder and the points still to do."""

    def __init__(self, config: RunConfig, comm, progress: Progress,
                 argv: list[str] | None = None, force_new: bool = False) -> None:
        self.config, self.comm, self.progress = config, comm, progress
        self.rank, self.nranks = comm.rank, comm.size
        self.argv = argv or sys.argv
        self.force_new = force_new
        progress.waiting("agreeing on the results folder")
        self.folder = self._agree_on_folder()
        progress.waiting(f"opening the {config.transport} transport")
        self.transport = open_transport(config.transport, comm, config)

    def _agree_on_folder(self) -> Path:
        """Rank 0 picks and creates the folder; every rank learns it or the same error."""
        answer: tuple[str, str | None] = ("", None)
        if self.rank == 0:
            try:
                out = self.config.out or f"results/{provenance.timestamp()}-{self.config.name}"
                if self.force_new and (moved := set_aside(out)):
                    print(f"collbench: note: moved the earlier results in {out} to {moved}",
                          file=sys.stderr)
                self.out = out
                self.writer = ResultsWriter(out, self._provenance_stub(), self._refuse_other_settings)
                answer = (out, None)
            except CollbenchError as e:
                answer = ("", str(e))
        folder, error = self.comm.bcast(answer, root=0)
        if error:
            raise CollbenchError(error, shared=True)
        return Path(folder)

    def _refuse_other_settings(self, previous: dict) -> None:
        """Refuse to resume a folder measured with other settings: its points would be skipped
        as if measured with these."""
        recorded = {**previous.get("config", {}), "nranks": previous.get("nranks"),
                    "source": previous.get("source")}
        current = {**self.config.as_dict(), "nranks": self.nranks, "source": "measured"}
        differ = resume_mismatches({k: v for k, v in recorded.items() if v is not None}, current)
        if differ:
            raise CollbenchError(f"results folder {self.out} was measured with other settings "
                                 f"({'; '.join(differ)}): rerun with its settings to resume it, or "
                                 "pass --force-new to move it aside and start afresh")

    def _provenance_stub(self) -> dict:
        return {"name": self.config.name, "source": "measured", "command": self.argv,
                "config": self.config.as_dict(), "nranks": self.nranks, "start_time": provenance.now()}

    def _record_provenance(self) -> None:
        names = self.comm.allgather(_hostname())
        if self.rank != 0:
            return
        hosts, per_node = provenance.hosts_and_placement(names)
        slurm = provenance.slurm()
        history = self.writer.provenance.get("slurm_history", []) + ([slurm] if slurm else [])
        self.writer.write_provenance(
            hosts=hosts, ranks_per_node=per_node, rank_hosts=names, transport=self._describe(),
            versions=provenance.versions(), environment=provenance.environment(),
            slurm=slurm, slurm_history=history, git_commit=provenance.git_commit(),
            mpi_threads=mpi_threads.record(self.config.mpi_thread_level),
            machine=provenance.machine())

    def _describe(self) -> dict:
        """The transport's facts and how schedules run on it, for run.json and the table."""
        return {**self.transport.describe(), "execution": self.config.execution}

    def _key(self, point: Point) -> dict:
        c = self.config
        return {"source": "measured", "transport": c.transport, "algorithm": point.algorithm,
                "nranks": self.nranks, "size_bytes": point.size_bytes, "dtype": c.datatype,
                "op": c.op, "in_place": point.in_place}

    def run(self, output_format: str = "table", show_progress: bool = False,
            min_busbw: float | None = None) -> int:
        """Run every point not already stored; return 0, 1 if any element was wrong, or
        :data:`collbench.output.BELOW_MIN_BUSBW` if the average bus bandwidth is below *min_busbw* (GB/s)."""
        self._record_provenance()
        points = plan_points(self.config)
        todo = None
        if self.rank == 0:
            todo = [not self.writer.has(self._key(p)) for p in points]
        todo = self.comm.bcast(todo, root=0)
        printer = PointPrinter(output_format, self.folder, enabled=self.rank == 0)
        skipped = len(points) - sum(todo)
        printer.header(self.config, self.nranks, self._describe(), skipped)
        self.trace_events = []
        wrong_points = 0
        try:
            with printer.progress(sum(todo), show_progress) as bar:
                for point, needed in zip(points, todo):
                    if not needed:
                        continue
                    row = self._measure(point)
                    if self.rank == 0:
                        wrong_points += row["n_wrong"] > 0
                        printer.row(row)
                    bar()
        finally:
            self.progress.waiting("finishing")
            self.transport.close()  # queue pairs and registrations, also when a point failed
        status = 0
        if self.rank == 0:
            self.writer.write_provenance(end_time=provenance.now())
            self.writer.close()
            printer.footer(wrong_points)
            if self.config.trace:
                from collbench import trace

                counts = trace.write(self.config.trace, self.trace_events,
                                     {"source": "measured", "execution": self.config.execution,
                                      "nranks": self.nranks, "results": str(self.folder)})
                if output_format == "table":
                    print(trace.describe(self.config.trace, counts), flush=True)
            status = 1 if wrong_points else printer.check_min_busbw(min_busbw)
        return self.comm.bcast(status, root=0)

    where = ""
    """The point being measured, for the watchdog's message."""
    trace_events: list[dict]
    """With ``--trace``: the Chrome trace events of every point so far (rank 0)."""
    trace_end = 0.0
    """Where the next point's trace begins, in microseconds: the points follow each other."""

    def _allocate(self, point: Point) -> PointRunner:
        """The point's runner; if any rank could not allocate its buffers, the same one sentence
        on every rank instead of a traceback from each. Collective."""
        try:
            runner, failed = PointRunner(self.config, self.transport, point, self.progress), None
        except MemoryError:
            runner, failed = None, self.rank
        failures = [r for r in self.comm.allgather(failed) if r is not None]
        if failures:
            need = point_bytes(self.config, point.algorithm, self.nranks, failures[0], point.size_bytes)
            raise CollbenchError(f"rank {failures[0]} could not allocate the buffers of {self.where} "
                                 f"(about {format_size(need)}): choose a smaller -e", shared=True)
        return runner

    def _measure(self, point: Point) -> dict:
        c = self.config
        self.where = (f"{point.algorithm}, {point.size_bytes} B, "
                       f"{'in' if point.in_place else 'out-of'}-place")
        runner = self._allocate(point)
        counts = np.zeros((1 + c.warmup_iters + c.iters, len(COUNTERS)), dtype=np.int64)
        local = time_point(runner, self.comm, c, self.progress, counts)
        counted = bool(self.transport.counters())
        wrong = sum(runner.count_wrong(seed) for seed in range(1, c.check_iters + 1))
        if c.trace:
            self.progress.waiting("tracing")
            events = self.comm.gather(runner.traced_events(self.comm, self.trace_end), root=0)
            if self.rank == 0:
                self.trace_events += [e for rank_events in events for e in rank_events]
                self.trace_end = max((e["ts"] + e.get("dur", 0) for e in self.trace_events if "ts" in e),
                                     default=self.trace_end)
            self.trace_end = self.comm.bcast(self.trace_end, root=0)
        self.progress.waiting("collecting results")
        gathered = self.comm.gather((local, counts, wrong), root=0)
        if self.rank != 0:
            return {}
        n_wrong = sum(w for _, _, w in gathered) if c.check_iters else -1
        rank_us = np.stack([t for t, _, _ in gathered]) * 1e6  # [rank, iteration]
        per_iter_us = _COMBINE[c.average](rank_us, axis=0)
        rank_counts = np.stack([n for _, n, _ in gathered])  # [rank, iteration, counter]
        per_iter_counts = rank_counts.sum(axis=0)

        def registrations(counts: np.ndarray) -> list:
            return [int(n) if counted else "" for n in counts[:, 0]]

        key = self._key(point)
        rows = [(COMBINED_RANKS, per_iter_us, registrations(per_iter_counts))]
        if c.rank_samples == "all":
            rows += [(r, rank_us[r], registrations(rank_counts[r])) for r in range(len(gathered))]
        samples = [{**key, "count": runner.count, "phase": phase, "iter": i, "time_us": t,
                    "registrations": reg, "rank": rank}
                   for rank, times, regs in rows for (phase, i), t, reg in zip(_phases(c), times, regs)]
        timed = slice(1 + c.warmup_iters, None)
        counted_timed = per_iter_counts[timed].sum(axis=0)
        registration = (dict(zip(("reg_timed", "reg_hits", "reg_misses"), map(int, counted_timed)))
                        if counted else {"reg_timed": "", "reg_hits": "", "reg_misses": ""})
        stats = summarise(per_iter_us[timed], point.size_bytes, self.nranks,
                          reported_us=point_time(rank_us[:, timed], c))
        hosts = self.writer.provenance.get("ranks_per_node", {}) or {}
        row = {**key, "count": runner.count,
               "ranks_per_node": max(hosts.values()) if hosts else self.nranks,
               "first_us": per_iter_us[0], **stats.as_dict(), "n_wrong": n_wrong, **registration,
               "timing": c.timing}
        self.writer.add_point(row, samples)
        return row


def _library_name() -> str:
    """The MPI library's first line, spaces squeezed (Open MPI's string ends in a NUL)."""
    from mpi4py import MPI

    return " ".join(MPI.Get_library_version().replace("\0", "").strip().splitlines()[0].split())


def _hostname() -> str:
    from mpi4py import MPI

    return MPI.Get_processor_name()


def run_sweep(config: RunConfig, comm=None, output_format: str = "table",
              show_progress: bool = False, argv: list[str] | None = None,
              force_new: bool = False, min_busbw: float | None = None) -> int:
    """Python API: run *config* on *comm* (default MPI.COMM_WORLD); returns the exit status
    (see :meth:`Sweep.run`). *force_new* moves an existing results folder aside (see
    :func:`collbench.store.set_aside`) instead of resuming it."""
    mpi_threads.request(config.mpi_thread_level)  # before mpi4py.MPI initialises MPI
    from mpi4py import MPI

    check_world_size(MPI.COMM_WORLD.size, _library_name())
    if comm is None:
        comm = MPI.COMM_WORLD
    progress, sweep = Progress(), None

    def where() -> str:
        return sweep.where if sweep else ""

    with (abort_on_failure(comm.rank, comm.size, comm.Abort),
          Watchdog(progress, config.timeout, comm.rank, comm.Abort, context=where)):
        progress.waiting("checking that the buffers fit in memory")
        check_fits(config, comm, _hostname())
        sweep = Sweep(config, comm, progress, argv, force_new)
        return sweep.run(output_format, show_progress, min_busbw)


