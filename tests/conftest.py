"""Shared fixtures: how tests start real MPI jobs with the mpich wheel's mpiexec."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "mpi_programs"


def mpiexec_path() -> str | None:
    here = Path(sys.executable).parent
    return shutil.which("mpiexec", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")


def mpi_env(nranks: int) -> dict[str, str]:
    """Environment for an MPI job; more ranks than cores get MPICH's progress throttle so that
    busy-polling ranks leave the cores to the ranks that have work (correctness runs only)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    if nranks > (os.cpu_count() or 1):
        env.setdefault("MPIR_CVAR_CH4_PROGRESS_THROTTLE", "1")
        env.setdefault("MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT", "16")
    return env


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
