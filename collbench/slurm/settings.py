"""The ``[slurm]`` settings of a job: where they come from and what values are allowed.

A setting comes from, in order of precedence, the command line, the experiment file's
``[slurm]`` table, a site profile's ``[slurm]`` table, then the defaults below. Every value is
checked here, because every value ends up in a shell script: ``#SBATCH`` values must match a
narrow character set (a newline there would start a new line of shell), command-line words
are quoted later with :func:`shlex.quote`, and the ``setup`` lines, which are shell on purpose
(module loads, venv activation), must each be one line. Setup lines come from the user's own
files and are trusted; nothing else is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from collbench.errors import CollbenchError
from collbench.tomlfile import read_toml

SHAPES = {"cpu": "mpi", "gpu": "nccl", "ib": "verbs"}
"""Cluster shapes (each a template in ``slurm/``) and the transport each one measures."""
LAUNCHERS = ("srun", "mpiexec")
MODES = ("jobs", "array", "chain")
"""``jobs``: one independent job per configuration; ``array``: one job array; ``chain``: jobs
that run one after another (each depends on the previous one ending)."""

WORD = re.compile(r"[A-Za-z0-9_.+-]+")
_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:@+=/-]+")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.,:=&|\[\]*()-]+")
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|\d+-\d+")
PATH_CHARS = re.compile(r"[A-Za-z0-9_.,:@+=/~-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPTION = re.compile(r"--[a-z][a-z0-9-]*(=[A-Za-z0-9_.,:@+=/&|\[\]*()%-]*)?")
_MANAGED_OPTIONS = ("nodes", "ntasks-per-node", "ntasks", "gpus-per-node", "array", "output",
                    "error", "job-name", "dependency", "wrap", "open-mode", "requeue",
                    "no-requeue", "signal", "partition", "account", "qos", "time", "constraint")


@dataclass(frozen=True)
class SlurmSettings:
    """What a job asks Slurm for and how it starts ``collbench run``."""

    nodes: tuple[int, ...] = (1,)
    """Node counts to sweep; with several ntasks_per_node, every combination is a job."""
    ntasks_per_node: tuple[int, ...] = ()
    """Ranks per node; empty means gpus_per_node on GPU nodes, else 1."""
    gpus_per_node: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "00:30:00"
    constraint: str | None = None
    shape: str | None = None
    """``cpu``, ``gpu`` or ``ib``; None means the one that matches ``[run] transport``."""
    template: str | None = None
    """An sbatch template of the user's own instead of ``slurm/<shape>.sbatch``."""
    launcher: str = "srun"
    mpi: str = "pmi2"
    """``srun --mpi=`` plugin: pmi2 for MPICH-based MPIs, pmix for most Open MPI builds."""
    srun_args: tuple[str, ...] = ()
    mpiexec: str = "mpiexec"
    mpiexec_args: tuple[str, ...] = ()
    ppn_flag: str = "-ppn"
    """The launcher's ranks-per-node flag: -ppn (MPICH, Intel MPI) or --npernode (Open MPI)."""
    collbench: tuple[str, ...] = ("collbench",)
    """The command that starts collbench on the nodes, e.g. ["python", "-m", "collbench"]."""
    setup: tuple[str, ...] = ()
    """Shell lines run before the benchmark (module loads, venv activation): trusted."""
    env: dict[str, str] = field(default_factory=dict)
    sbatch: tuple[str, ...] = ()
    """Further sbatch options, each ``--name`` or ``--name=value``."""
    results: str = "results"
    """Folder under which each sweep gets ``<name>-<run_id>/``; resolved at render time."""
    run_id: str | None = None
    """Names the sweep's folder; None means the time of rendering. Same id = resume."""
    mode: str = "jobs"
    requeue: bool = True
    requeue_before_timeout: int = 0
    """Seconds before the time limit at which the job requeues itself (0 = never)."""
    max_restarts: int = 3

    def tasks_per_node(self) -> tuple[int, ...]:
        if self.ntasks_per_node:
            return self.ntasks_per_node
        return (self.gpus_per_node,) if self.gpus_per_node else (1,)

    def configurations(self) -> list[tuple[int, int]]:
        """Every (nodes, ranks per node) to run, in submission order."""
        return [(n, t) for n in self.nodes for t in self.tasks_per_node()]


_KNOWN = {f.name for f in fields(SlurmSettings)}
_TUPLES = {"srun_args", "mpiexec_args", "setup", "sbatch", "collbench"}


def load_profile(path: str | Path) -> dict:
    """The ``[slurm]`` table of a site profile: a file, or the name of one shipped with
    collbench (``localhost``, ``example-site``, ``gpu-site``). Raises CollbenchError naming
    the file."""
    path = Path(path)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        from collbench import templates
        shipped = Path(templates.__file__).parent / "profiles" / f"{path}.toml"
        if shipped.is_file():
            path = shipped
    data = read_toml(path, "site profile")
    table = data.get("slurm")
    if not isinstance(table, dict):
        raise CollbenchError(f"site profile {path} has no [slurm] table")
    return table


def merge(*layers: dict, origin: tuple[str, ...] = ()) -> SlurmSettings:
    """Settings from *layers*, highest precedence first; ``env`` tables merge key by key.

    *origin* names each layer for error messages. Raises CollbenchError on an unknown key or
    a bad value."""
    values: dict = {}
    env: dict = {}
    for i in reversed(range(len(layers))):
        layer = {k: v for k, v in layers[i].items() if v is not None}
        unknown = sorted(set(layer) - _KNOWN)
        if unknown:
            where = origin[i] if i < len(origin) else "[slurm]"
            raise CollbenchError(f"unknown Slurm setting(s) {', '.join(unknown)} in {where}; "
                                 f"known: {', '.join(sorted(_KNOWN))}")
        if "env" in layer:
            if not isinstance(layer["env"], dict):
                raise CollbenchError("slurm env must be a table of NAME = value")
            env.update(layer.pop("env"))
        values.update(layer)
    return check(_coerce({**values, "env": env}))


def _coerce(values: dict) -> SlurmSettings:
    out = dict(values)
    for key in ("nodes", "ntasks_per_node"):
        if key in out:
            out[key] = _int_list(key, out[key])
    for key in ("gpus_per_node", "requeue_before_timeout", "max_restarts"):
        if key in out:
            out[key] = _int(key, out[key])
    for key in _TUPLES & out.keys():
        item = out[key]
        items = [item] if isinstance(item, str) else item
        if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
            raise CollbenchError(f"slurm {key} must be a list of strings")
        out[key] = tuple(items)
    if "requeue" in out and not isinstance(out["requeue"], bool):
        raise CollbenchError("slurm requeue must be true or false")
    for key in ("time", "partition", "account", "qos", "constraint", "shape", "template",
                "launcher", "mpi", "mpiexec", "ppn_flag", "results", "run_id", "mode"):
        if key in out and not isinstance(out[key], str):
            raise CollbenchError(f"slurm {key} must be a string, got {out[key]!r}")
    out["env"] = {str(k): _env_value(k, v) for k, v in out.get("env", {}).items()}
    return SlurmSettings(**out)


def _int(key: str, value) -> int:
    if isinstance(value, bool):
        raise CollbenchError(f"slurm {key} must be a whole number, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise CollbenchError(f"slurm {key} must be a whole number, got {value!r}") from None


def _int_list(key: str, value) -> tuple[int, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    numbers = tuple(_int(key, v) for v in items if str(v).strip())
    if not numbers or min(numbers) < 1:
        raise CollbenchError(f"slurm {key} must be one or more positive whole numbers, "
                             f"got {value!r}")
    return tuple(dict.fromkeys(numbers))


def _env_value(name, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CollbenchError(f"slurm env {name} must be a string or a number")
    return str(value)


def one_line(what: str, value: str) -> str:
    """*value* if it is a single line without NUL; the only check on trusted shell text."""
    if any(c in value for c in "\n\r\0"):
        raise CollbenchError(f"{what} must be a single line without NUL, got {value!r}")
    return value


def _match(what: str, pattern: re.Pattern, value: str, allowed: str) -> None:
    if not pattern.fullmatch(value):
        raise CollbenchError(f"{what} {value!r} is not allowed: use only {allowed}")


def check(s: SlurmSettings) -> SlurmSettings:
    """Return *s* if every value is safe and meaningful; raises CollbenchError otherwise."""
    plain = "letters, digits and . _ , : @ + = / -"
    for key in ("partition", "account", "qos"):
        value = getattr(s, key)
        if value is not None:
            _match(f"slurm {key}", _SBATCH_VALUE, value, plain)
    if s.constraint is not None:
        _match("slurm constraint", _CONSTRAINT, s.constraint,
               "letters, digits, features joined by & | and [ ] * ( )")
    if not _TIME.fullmatch(s.time):
        raise CollbenchError(f"slurm time {s.time!r} is not a Slurm time; write e.g. 30, "
                             "00:30:00 or 1-12:00:00")
    if s.gpus_per_node is not None and s.gpus_per_node < 1:
        raise CollbenchError("slurm gpus_per_node must be at least 1")
    if s.shape is not None and s.shape not in SHAPES:
        raise CollbenchError(f"unknown cluster shape {s.shape!r}; choose from {', '.join(SHAPES)}")
    if s.launcher not in LAUNCHERS:
        raise CollbenchError(f"unknown launcher {s.launcher!r}; choose srun or mpiexec")
    _match("slurm mpi", re.compile(r"[a-z0-9_]+"), s.mpi, "lower-case letters, digits and _ "
           "(e.g. pmi2, pmix)")
    if s.mode not in MODES:
        raise CollbenchError(f"unknown submission mode {s.mode!r}; choose from {', '.join(MODES)}")
    _match("slurm ppn_flag", re.compile(r"-{1,2}[a-z][a-z-]*"), s.ppn_flag, "a flag like -ppn")
    _match("slurm results folder", PATH_CHARS, s.results,
           "letters, digits and . _ , : @ + = / ~ - (it appears on an #SBATCH line)")
    if s.run_id is not None:
        _match("slurm run_id", WORD, s.run_id, "letters, digits and . _ + -")
    if s.template is not None:
        one_line("slurm template", s.template)
    for key in ("srun_args", "mpiexec_args", "collbench", "setup"):
        for item in getattr(s, key):
            one_line(f"slurm {key} entry", item)
    one_line("slurm mpiexec", s.mpiexec)
    if not s.collbench or not s.mpiexec:
        raise CollbenchError("slurm collbench and mpiexec must name a command")
    for name, value in s.env.items():
        _match("environment variable name", _ENV_NAME, name, "letters, digits and _")
        one_line(f"slurm env {name}", value)
    for option in s.sbatch:
        _check_option(option)
    if s.requeue_before_timeout < 0 or s.max_restarts < 0:
        raise CollbenchError("slurm requeue_before_timeout and max_restarts must be 0 or more")
    return s


def _check_option(option: str) -> None:
    if not _OPTION.fullmatch(option):
        raise CollbenchError(f"sbatch option {option!r} is not allowed: write --name or "
                             "--name=value with letters, digits and . _ , : @ + = / & | [ ] * ( ) % -")
    name = option[2:].split("=", 1)[0]
    if name in _MANAGED_OPTIONS:
        raise CollbenchError(f"sbatch option --{name} is set by collbench; use the slurm setting "
                             f"{name.replace('-', '_')} or the --{name} flag instead")

