"""A run's configuration, from command-line flags and an optional experiment file (TOML).

The experiment file holds the same settings as the flags, under ``[run]``, so that a sweep
can be repeated exactly; a flag given on the command line wins over the file. Everything is
checked here, before MPI starts, so bad input costs one sentence and no job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from collbench import mpi_threads
from collbench.algorithms import ALGORITHMS
from collbench.algorithms.ops import ReduceOp, canonical_dtype, numpy_dtype
from collbench.errors import CollbenchError
from collbench.sizes import parse_size, sweep
from collbench.tomlfile import read_toml

NATIVE = "native"
TRANSPORTS = ("mpi", "nccl", "verbs")
MODES = ("out", "in")
TIMINGS = ("per-call", "aggregate")
AVERAGES = {0: "rank 0", 1: "mean", 2: "min", 3: "max"}
"""nccl-tests' ``-a`` codes: how one iteration's times on the ranks become one number."""
DEFAULT_AVERAGE = {"per-call": 3, "aggregate": 1}
EXECUTIONS = ("step", "dataflow")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a measured sweep; stored verbatim in ``run.json``."""

    algorithms: tuple[str, ...] = ("naive", "ring", "rabenseifner", NATIVE)
    transport: str = "mpi"
    minbytes: int = 8
    maxbytes: int = 64 << 20
    stepfactor: int = 4
    iters: int = 20
    warmup_iters: int = 5
    check_iters: int = 1
    datatype: str = "float32"
    op: str = "sum"
    modes: tuple[str, ...] = MODES
    """``out`` (out-of-place) and/or ``in`` (in-place), run in that order as nccl-tests does."""
    segments: int = 1
    """Pipeline segments per ring chunk (1 = not pipelined)."""
    timing: str = "per-call"
    """``per-call``: a barrier before each timed call; ``aggregate``: one barrier, then the
    timed calls back to back, as nccl-tests' all_reduce_perf times them."""
    average: int | None = None
    """How the ranks' times combine (:data:`AVERAGES`); None = max for per-call, mean for
    aggregate."""
    agg_iters: int = 1
    """Calls per timed iteration, run back to back; the iteration's time is their mean."""
    rank_samples: str = "all"
    """``all``: samples.csv keeps each rank's own time of every iteration beside the combined
    one; ``none``: the combined ones only (P+1 times fewer rows, for runs of many ranks)."""
    trace: str | None = None
    """A file to write every op's events to, in Chrome trace format: one untimed call per
    point, after the timed ones."""
    execution: str = "step"
    """How a schedule runs: ``step`` (post a step, wait for all of it, reduce) or ``dataflow``
    (each op as soon as what it waits for is done; :mod:`collbench.dataflow`)."""
    timeout: float = 300.0
    """Seconds a rank may wait without progress before the job is aborted."""
    name: str = "run"
    out: str | None = None
    buffers: str = "numpy"
    """Array module of the buffers: ``numpy`` (host) or ``cupy`` (device)."""
    device: str | None = None
    """RDMA device for the verbs transport (e.g. mlx5_0); None = the first one found."""
    mpi_thread_level: str = "funneled"
    """MPI thread level to ask for (:mod:`collbench.mpi_threads`): single, funneled, serialized
    or multiple; the native baseline depends on it."""
    extra: dict = field(default_factory=dict)
    """Tables of the experiment file other than ``[run]`` (``[slurm]``...), kept for provenance."""

    @property
    def itemsize(self) -> int:
        return numpy_dtype(self.datatype).itemsize

    def sizes(self) -> list[int]:
        return sweep(self.minbytes, self.maxbytes, self.stepfactor, self.itemsize)

    def as_dict(self) -> dict:
        return asdict(self)


_LIST_FIELDS = {"algorithms", "modes"}

POINT_CHOICE = frozenset({"algorithms", "minbytes", "maxbytes", "stepfactor", "modes", "timeout", "name",
                          "out", "extra", "trace", "rank_samples"})
"""Settings that choose which points run, or that do not change a measurement: a resumed
folder may differ in these (a rerun with more sizes extends it). Every other setting, and the
number of ranks, must match the folder's for its points to be comparable."""


def resume_mismatches(recorded: dict, current: dict) -> list[str]:
    """``name recorded -> current`` for every measurement setting in which the ``run.json``
    settings *recorded* differ from *current* (both: config fields plus ``nranks``); settings
    an older run.json lacks are not compared."""
    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    return [f"{key} {recorded[key]!r} -> {plain(value)!r}" for key, value in current.items()
            if key not in POINT_CHOICE and key in recorded and recorded[key] != plain(value)]


def _split(value) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(v).strip() for v in items if str(v).strip())


EXPERIMENT_KEYS = frozenset({"name", "run", "slurm"})
"""Top-level keys of an experiment file: anything else is a typo that would change the sweep."""


def load_experiment(path: str | Path) -> dict:
    """Read an experiment file; raises CollbenchError naming the file and the problem."""
    path = Path(path)
    data = read_toml(path, "experiment file")
    unknown = sorted(set(data) - EXPERIMENT_KEYS)
    if unknown:
        raise CollbenchError(f"experiment file {path}: unknown table or key(s) {', '.join(unknown)}; "
                             "an experiment file holds name, [run] and [slurm]")
    if "run" not in data:
        raise CollbenchError(f"experiment file {path} has no [run] table; put the sweep's settings "
                             "under [run] (an empty [run] means the default sweep)")
    run = data.pop("run")
    if not isinstance(run, dict):
        raise CollbenchError(f"experiment file {path}: [run] must be a table")
    known = {f.name for f in fields(RunConfig)} - {"extra"}
    unknown = sorted(set(run) - known)
    if unknown:
        raise CollbenchError(f"experiment file {path}: unknown setting(s) {', '.join(unknown)} "
                             f"in [run]; known: {', '.join(sorted(known))}")
    if "name" in data and "name" not in run:
        run["name"] = data.pop("name")
    return {**run, "extra": data}


def make_config(settings: dict) -> RunConfig:
    """Build and check a RunConfig from raw *settings* (strings or typed values)."""
    values = {k: v for k, v in settings.items() if v is not None}
    try:
        for key in _LIST_FIELDS & values.keys():
            values[key] = tuple(dict.fromkeys(_split(values[key])))  # a repeat would be one point twice
        for key in ("minbytes", "maxbytes"):
            if key in values:
                values[key] = parse_size(values[key])
        for key in ("stepfactor", "iters", "warmup_iters", "check_iters", "segments", "average",
                    "agg_iters"):
            if key in values:
                values[key] = _int(key, values[key])
        if "timeout" in values:
            values["timeout"] = float(values["timeout"])
        if "datatype" in values:
            values["datatype"] = canonical_dtype(str(values["datatype"]))
    except ValueError as e:
        raise CollbenchError(str(e)) from None
    if values.get("timing", "per-call") not in TIMINGS:
        raise CollbenchError(f"unknown timing {values['timing']!r}; choose per-call or aggregate")
    if values.get("average") is None:
        values["average"] = DEFAULT_AVERAGE[values.get("timing", "per-call")]
    values["mpi_thread_level"] = mpi_threads.resolve(values.get("mpi_thread_level"))
    if values.get("transport") == "verbs" and "algorithms" not in values:
        values["algorithms"] = tuple(a for a in RunConfig.algorithms if a != NATIVE)
    config = RunConfig(**values)
    _check(config)
    return config


_MOVED = {"average": "-a is nccl-tests' --average (0, 1, 2 or 3); choose algorithms with --algorithms",
          "agg_iters": "-m is nccl-tests' --agg_iters (a count); choose out/in-place with --modes"}
"""What a whole-number flag that once had another meaning says when given a word."""


def _int(key: str, value) -> int:
    try:
        return int(str(value))
    except ValueError:
        hint = f" ({_MOVED[key]})" if key in _MOVED and not str(value).lstrip("-").isdigit() else ""
        raise ValueError(f"{key} must be a whole number, got {value!r}{hint}") from None


def _check(c: RunConfig) -> None:
    known = (*ALGORITHMS, NATIVE)
    for name in c.algorithms:
        if name not in known:
            raise CollbenchError(f"unknown algorithm {name!r}; choose from {', '.join(known)}")
    if not c.algorithms:
        raise CollbenchError("no algorithm given; choose from " + ", ".join(known))
    if not c.name or "/" in c.name or "\\" in c.name or ".." in c.name or "\0" in c.name:
        raise CollbenchError(f"run name {c.name!r} becomes a folder name under results/: use no "
                             "'/', '\\' or '..' (choose the folder itself with --out)")
    if c.transport not in TRANSPORTS:
        raise CollbenchError(f"unknown transport {c.transport!r}; choose from {', '.join(TRANSPORTS)}")
    if c.transport == "verbs" and NATIVE in c.algorithms:
        raise CollbenchError("the verbs transport has no native all-reduce; leave 'native' out, or "
                             "use --transport mpi for the MPI_Allreduce baseline")
    if c.datatype == "bfloat16" and (c.buffers == "cupy" or c.transport == "nccl"):
        raise CollbenchError("bfloat16 needs host buffers (CuPy has no bfloat16 arrays); use "
                             "--buffers numpy with the mpi or verbs transport")
    if c.average not in AVERAGES:
        raise CollbenchError(f"-a/--average must be 0 (rank 0), 1 (mean), 2 (min) or 3 (max), "
                             f"got {c.average}")
    if c.rank_samples not in ("all", "none"):
        raise CollbenchError(f"--rank-samples must be all or none, got {c.rank_samples!r}")
    if c.agg_iters < 1:
        raise CollbenchError(f"-m/--agg_iters must be at least 1, got {c.agg_iters}")
    try:
        ReduceOp.parse(c.op)
    except ValueError as e:
        raise CollbenchError(str(e)) from None
    for mode in c.modes:
        if mode not in MODES:
            raise CollbenchError(f"unknown mode {mode!r}; choose out (out-of-place) and/or in (in-place)")
    for flag, value, least in (("-n/--iters", c.iters, 1), ("-w/--warmup_iters", c.warmup_iters, 0),
                               ("-c/--check_iters", c.check_iters, 0), ("--segments", c.segments, 1)):
        if value < least:
            raise CollbenchError(f"{flag} must be at least {least}, got {value}")
    if c.execution not in EXECUTIONS:
        raise CollbenchError(f"unknown execution {c.execution!r}; choose step or dataflow")
    if c.execution == "dataflow" and (c.transport not in ("mpi", "verbs") or c.buffers != "numpy"):
        raise CollbenchError("--execution dataflow runs on the mpi and verbs transports with numpy "
                             "buffers only; use --execution step")
    if c.timeout <= 0:
        raise CollbenchError(f"the timeout must be positive, got {c.timeout}")
    if c.buffers not in ("numpy", "cupy"):
        raise CollbenchError(f"unknown buffer kind {c.buffers!r}; choose numpy or cupy")
    try:
        c.sizes()
    except ValueError as e:
        raise CollbenchError(str(e)) from None
