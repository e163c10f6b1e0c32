"""Submit a rendered sweep with ``sbatch``, or show exactly what would be submitted.

The scripts are first written to ``<sweep folder>/jobs/``, and ``sbatch`` submits those files,
so the script that ran is kept beside its results and can be resubmitted by hand to resume.
``sbatch`` is called with an argument list, never through a shell.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from collbench.errors import CollbenchError
from collbench.slurm.render import Job, Sweep


@dataclass(frozen=True)
class Submitted:
    job_id: str
    script: Path


def script_path(sweep: Sweep, job: Job) -> Path:
    return sweep.folder / "jobs" / f"{job.name}.sbatch"


def sbatch_command(script: Path, after: str | None = None) -> list[str]:
    """The ``sbatch`` call for *script*; a chain link waits for job *after* to end."""
    dependency = [f"--dependency=afterany:{after}"] if after else []
    return ["sbatch", "--parsable", *dependency, str(script)]


def dry_run(sweep: Sweep) -> str:
    """The commands and scripts that :func:`submit` would submit, as text; writes nothing."""
    parts = []
    for i, job in enumerate(sweep.jobs):
        after = f"JOB{i}" if job.after_previous else None
        command = shlex.join(sbatch_command(script_path(sweep, job), after))
        if after:
            command = command.replace(after, f"<job id of {sweep.jobs[i - 1].name}>")
        parts.append(f"# {command}\n# --- {script_path(sweep, job)} ---\n{job.script}")
    return "\n".join(parts)


def write_scripts(sweep: Sweep) -> list[Path]:
    """Write every script of *sweep* into its ``jobs/`` folder (the log folder too)."""
    paths = []
    for job in sweep.jobs:
        path = script_path(sweep, job)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(job.script)
        except OSError as e:
            raise CollbenchError(f"cannot write {path}: {e.strerror or e}") from None
        paths.append(path)
    return paths


def submit(sweep: Sweep) -> list[Submitted]:
    """Submit every job of *sweep*, chaining them where asked; returns the job ids.

    Raises CollbenchError if sbatch is missing or refuses a job (jobs already submitted are
    named in the message, so they can be cancelled)."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise CollbenchError("sbatch not found: submit from a Slurm login node, or use --dry-run "
                             "or 'collbench slurm render' to see the scripts")
    done: list[Submitted] = []
    for job, path in zip(sweep.jobs, write_scripts(sweep)):
        after = done[-1].job_id if job.after_previous and done else None
        command = [sbatch, *sbatch_command(path, after)[1:]]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            message = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
            already = ", ".join(s.job_id for s in done)
            raise CollbenchError(f"sbatch refused {path}: {message}"
                                 + (f" (already submitted: {already})" if already else ""))
        job_id = result.stdout.strip().split(";")[0]
        done.append(Submitted(job_id, path))
    return done
