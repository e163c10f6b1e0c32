"""Turn an experiment file into ready-to-submit sbatch scripts.

A *sweep* is one rendering: it owns the folder ``<results>/<name>-<run_id>/``, and each
configuration (nodes, ranks per node) measures into ``n<N>-t<T>/`` inside it. The folder is
fixed when the script is rendered, not when the job starts, so a job that is requeued
(same script, same job id) or resubmitted after a cancel or a time limit (same script, new
job id) finds its folder again and the harness skips every point already stored. Job ids
live beside the points: ``slurm-jobs.tsv`` gets one line per start, ``job-<id>`` links to
the folder, the Slurm log is ``slurm-<job name>-<id>.out`` and ``run.json`` records the job.

Templates (``slurm/<shape>.sbatch``) are shell with ``{{ block }}`` placeholders. Each block
is generated here from checked settings, with every value in a command line passed through
:func:`shlex.quote`, so a template never has to quote anything.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from collbench import provenance, templates
from collbench.config import RunConfig, load_experiment, make_config
from collbench.errors import CollbenchError
from collbench.slurm.settings import PATH_CHARS, SHAPES, WORD, SlurmSettings, load_profile, merge

TEMPLATE_DIR = Path(templates.__file__).parent
"""The shipped templates (the repository's ``slurm/`` folder, installed as
``collbench.templates``): one per cluster shape, and site profiles in ``profiles/``."""
JOURNAL = "slurm-jobs.tsv"
BLOCKS = ("sbatch", "about", "setup", "env", "select", "journal", "launch")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_RUN_FLAGS = {"algorithms": "--algorithms", "transport": "--transport", "minbytes": "-b",
              "maxbytes": "-e", "stepfactor": "-f", "iters": "-n", "warmup_iters": "-w",
              "agg_iters": "-m", "average": "-a", "timing": "--timing", "check_iters": "-c",
              "datatype": "-d", "op": "-o", "modes": "--modes", "segments": "--segments",
              "timeout": "--timeout", "buffers": "--buffers", "device": "--device",
              "rank_samples": "--rank-samples"}


@dataclass(frozen=True)
class Job:
    """One script to submit, and the configurations it measures."""

    name: str
    """The job name, also the script's file name without ``.sbatch``."""
    script: str
    configurations: tuple[tuple[int, int], ...]
    after_previous: bool = False
    """True in a chain: submit with a dependency on the job before it."""


@dataclass(frozen=True)
class Sweep:
    """Everything one rendering produces."""

    folder: Path
    jobs: tuple[Job, ...]
    settings: SlurmSettings
    config: RunConfig

    def results_folder(self, nodes: int, tasks: int) -> Path:
        return self.folder / f"n{nodes}-t{tasks}"


def plan(experiment: str | Path, overrides: dict | None = None, profile: str | Path | None = None,
         template: str | Path | None = None) -> Sweep:
    """Render the sweep of the experiment file *experiment*.

    *overrides* are command-line settings (highest precedence), *profile* a site profile
    (lowest). Raises CollbenchError naming the first bad value."""
    run = load_experiment(experiment)
    extra = run.pop("extra", {})
    table = extra.get("slurm", {})
    if not isinstance(table, dict):
        raise CollbenchError(f"experiment file {experiment}: [slurm] must be a table")
    layers, origin = [overrides or {}, table], ["the command line", f"[slurm] of {experiment}"]
    if profile:
        layers.append(load_profile(profile))
        origin.append(f"[slurm] of {profile}")
    settings = merge(*layers, origin=tuple(origin))
    run.pop("out", None)  # the sweep folder decides where results go
    config = make_config(run)
    if not WORD.fullmatch(config.name):
        raise CollbenchError(f"run name {config.name!r} names Slurm jobs and folders: use only "
                             "letters, digits and . _ + -")
    folder = _sweep_folder(settings, config)
    text = _template_text(template or settings.template, settings.shape or _shape(config))
    return Sweep(folder, _jobs(text, settings, config, folder, run), settings, config)


def _shape(config: RunConfig) -> str:
    return next(shape for shape, transport in SHAPES.items() if transport == config.transport)


def _sweep_folder(s: SlurmSettings, config: RunConfig) -> Path:
    run_id = s.run_id or provenance.timestamp()
    folder = Path(s.results).expanduser().resolve() / f"{config.name}-{run_id}"
    if not PATH_CHARS.fullmatch(str(folder)):
        raise CollbenchError(f"the results folder {str(folder)!r} appears on an #SBATCH line, so "
                             "it may hold only letters, digits and . _ , : @ + = / -; choose "
                             "another with --results")
    return folder


def _template_text(template: str | Path | None, shape: str) -> str:
    path = Path(template) if template else TEMPLATE_DIR / f"{shape}.sbatch"
    try:
        text = path.read_text()
    except OSError as e:
        raise CollbenchError(f"cannot read sbatch template {path}: {e.strerror or e}") from None
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(BLOCKS))
    if unknown:
        raise CollbenchError(f"template {path} has unknown placeholder(s) {', '.join(unknown)}; "
                             f"known: {', '.join(BLOCKS)}")
    for needed in ("sbatch", "select", "launch"):
        if not re.search(r"\{\{\s*" + needed + r"\s*\}\}", text):
            raise CollbenchError(f"template {path} lacks the {{{{ {needed} }}}} placeholder")
    return text


def _jobs(text: str, s: SlurmSettings, config: RunConfig, folder: Path,
          run: dict) -> tuple[Job, ...]:
    configurations = s.configurations()
    if s.mode == "array":
        name = f"cb-{config.name}"
        return (Job(name, _render(text, s, config, folder, run, name, configurations),
                    tuple(configurations)),)
    jobs = []
    for i, (n, t) in enumerate(configurations):
        name = f"cb-{config.name}-n{n}-t{t}"
        jobs.append(Job(name, _render(text, s, config, folder, run, name, [(n, t)]), ((n, t),),
                        after_previous=s.mode == "chain" and i > 0))
    return tuple(jobs)


def _render(text: str, s: SlurmSettings, config: RunConfig, folder: Path, run: dict, name: str,
            configurations: list[tuple[int, int]]) -> str:
    blocks = {"sbatch": _sbatch(s, folder, name, configurations),
              "about": _about(config, folder, configurations),
              "setup": _setup(s), "env": _env(s),
              "select": _select(folder, configurations),
              "journal": _journal(), "launch": _launch(s, config, run)}
    script = _PLACEHOLDER.sub(lambda m: blocks[m.group(1)], text)
    return re.sub(r"\n{3,}", "\n\n", script)


def _sbatch(s: SlurmSettings, folder: Path, name: str,
            configurations: list[tuple[int, int]]) -> str:
    array = len(configurations) > 1
    log = "slurm-%x-%A_%a.out" if array else "slurm-%x-%j.out"
    options = [f"--job-name={name}",
               f"--nodes={max(n for n, _ in configurations)}",
               f"--ntasks-per-node={max(t for _, t in configurations)}"]
    options += [f"--{key.replace('_', '-')}={value}" for key, value in (
        ("gpus_per_node", s.gpus_per_node), ("partition", s.partition), ("account", s.account),
        ("qos", s.qos), ("constraint", s.constraint), ("time", s.time)) if value is not None]
    options += [f"--output={folder}/{log}", "--open-mode=append",
                "--requeue" if s.requeue else "--no-requeue"]
    if s.requeue_before_timeout:
        options.append(f"--signal=B:USR1@{s.requeue_before_timeout}")
    if array:
        options.append(f"--array=0-{len(configurations) - 1}")
    options += s.sbatch
    return "\n".join(f"#SBATCH {option}" for option in options)


def _about(config: RunConfig, folder: Path, configurations: list[tuple[int, int]]) -> str:
    shapes = ", ".join(f"{n} node(s) x {t} rank(s)" for n, t in configurations)
    return (f"# Rendered by 'collbench slurm render' for run {config.name!r}: {shapes}.\n"
            f"# Results: {folder}/n<nodes>-t<ranks>/ (resubmit this script to resume).")


def _setup(s: SlurmSettings) -> str:
    if not s.setup:
        return ""
    return "# site setup, from the experiment file or site profile (trusted shell)\n" + \
        "\n".join(s.setup)


def _env(s: SlurmSettings) -> str:
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in s.env.items())


def _select(folder: Path, configurations: list[tuple[int, int]]) -> str:
    sweep = shlex.quote(str(folder))
    if len(configurations) == 1:
        (n, t), = configurations
        pick = f"N={n} T={t}"
    else:
        nodes = " ".join(str(n) for n, _ in configurations)
        tasks = " ".join(str(t) for _, t in configurations)
        pick = (f"NODES=({nodes}) TASKS=({tasks})\n"
                'N=${NODES[$SLURM_ARRAY_TASK_ID]} T=${TASKS[$SLURM_ARRAY_TASK_ID]}')
    return f"SWEEP={sweep}\n{pick}\nRESULTS=\"$SWEEP/n$N-t$T\""


def _journal() -> str:
    return ("mkdir -p -- \"$RESULTS\"\n"
            f"[ -s \"$RESULTS/{JOURNAL}\" ] || printf 'time\\tjob_id\\tarray_job_id\\tarray_task_id"
            f"\\trestart_count\\tnodelist\\n' > \"$RESULTS/{JOURNAL}\"\n"
            "printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" "
            "\"${SLURM_JOB_ID:-}\" \"${SLURM_ARRAY_JOB_ID:-}\" \"${SLURM_ARRAY_TASK_ID:-}\" "
            f"\"${{SLURM_RESTART_COUNT:-0}}\" \"${{SLURM_JOB_NODELIST:-}}\" >> \"$RESULTS/{JOURNAL}\"\n"
            "ln -sfn -- \"n$N-t$T\" \"$SWEEP/job-${SLURM_JOB_ID:-none}\"")


def run_arguments(config: RunConfig, run: dict) -> list[str]:
    """``collbench run`` flags for the settings the experiment's ``[run]`` table gives."""
    words = []
    for key, flag in _RUN_FLAGS.items():
        if key in run and getattr(config, key) is not None:
            value = getattr(config, key)
            words += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
    return words + ["--name", config.name]


_FRESH_STEP = (
    "# A requeued job numbers its steps from 0 again, and MPICH names its shared memory after\n"
    "# the step: use up one step per restart so the benchmark never meets a killed run's segments.\n"
    "for _ in $(seq \"${SLURM_RESTART_COUNT:-0}\"); do srun --nodes=\"$N\" --ntasks-per-node=1 true; done\n")


def _launch(s: SlurmSettings, config: RunConfig, run: dict) -> str:
    command = [*s.collbench, "run", *run_arguments(config, run)]
    tail = " ".join(shlex.quote(w) for w in command) + ' --out "$RESULTS" --no-progress'
    if s.launcher == "srun":
        head = (f"srun --mpi={s.mpi} --nodes=\"$N\" --ntasks-per-node=\"$T\" --kill-on-bad-exit=1"
                + "".join(" " + shlex.quote(a) for a in s.srun_args))
    else:
        head = (shlex.quote(s.mpiexec) + "".join(" " + shlex.quote(a) for a in s.mpiexec_args)
                + f" -n \"$((N * T))\" {s.ppn_flag} \"$T\"")
    if s.launcher == "srun":
        head = _FRESH_STEP + head
    if not s.requeue_before_timeout:
        return f"{head} {tail}"
    return ("requeue_before_timeout() {\n"
            f"  if [ \"${{SLURM_RESTART_COUNT:-0}}\" -lt {s.max_restarts} ]; then\n"
            "    echo \"collbench: time limit near; requeueing job $SLURM_JOB_ID to resume\" >&2\n"
            "    scontrol requeue \"$SLURM_JOB_ID\"\n"
            "  fi\n"
            "}\n"
            "trap requeue_before_timeout USR1\n"
            f"{head} {tail} &\n"
            "wait $!")
