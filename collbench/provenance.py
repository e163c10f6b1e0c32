"""What ``run.json`` records so that a number can be traced to the machine and code that
produced it: versions, hosts, environment, Slurm job and git commit."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path

ENV_PREFIXES = ("MPICH_", "MPIR_", "HYDRA_", "PMI_", "OMPI_", "PMIX_", "UCX_", "I_MPI_", "FI_",
                "NCCL_", "CUDA_", "MV2_", "SLURM_", "OMP_", "RDMAV_", "IBV_", "COLLBENCH_",
                "MPI4PY_")
"""Environment variables that change how MPI, NCCL, UCX or verbs behave, kept verbatim."""

_SLURM_FIELDS = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID",
                 "array_task_id": "SLURM_ARRAY_TASK_ID", "job_name": "SLURM_JOB_NAME",
                 "nodelist": "SLURM_JOB_NODELIST", "nnodes": "SLURM_JOB_NUM_NODES",
                 "partition": "SLURM_JOB_PARTITION", "account": "SLURM_JOB_ACCOUNT",
                 "ntasks": "SLURM_NTASKS", "ntasks_per_node": "SLURM_NTASKS_PER_NODE",
                 "tasks_per_node": "SLURM_TASKS_PER_NODE", "cluster": "SLURM_CLUSTER_NAME",
                 "restart_count": "SLURM_RESTART_COUNT"}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def timestamp() -> str:
    """UTC time for folder names: sortable and free of ':'."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def environment() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}


def slurm() -> dict[str, str] | None:
    """The Slurm job this process runs in, or None outside Slurm."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    return {key: os.environ[var] for key, var in _SLURM_FIELDS.items() if var in os.environ}


def git_commit() -> str:
    """The project's commit (with ``-dirty`` if the tree has changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("COLLBENCH_GIT_COMMIT", "unknown")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(extra: dict[str, str] | None = None) -> dict[str, str | None]:
    """Versions of Python and the numerical and communication stack."""
    import numpy

    found = {"python": sys.version.split()[0], "numpy": numpy.__version__,
             "collbench": package_version("collbench"), "mpi4py": package_version("mpi4py"),
             "mpich": package_version("mpich"), "simpy": package_version("simpy")}
    if "mpi4py.MPI" in sys.modules:
        from mpi4py import MPI

        # Open MPI's string ends in a NUL, which json writes as \u0000
        found["mpi_library"] = " ".join(MPI.Get_library_version().replace("\0", " ").split())[:200]
        found["mpi_standard"] = "{}.{}".format(*MPI.Get_version())
    found.update(extra or {})
    return found


def sched_autogroup() -> bool | None:
    """Whether Linux's autogroup is on (None where there is no such setting). With it, each
    session is a scheduling group with a fair share of a core whenever it is runnable;
    MPICH's launcher gives each rank its own session, so a rank that waits by polling keeps
    its share of a core it shares with a working rank, ``sched_yield`` or not."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "processor": cpu, "cpus": os.cpu_count(),
            "sched_autogroup": sched_autogroup()}


def hosts_and_placement(hostnames: list[str]) -> tuple[list[str], dict[str, int]]:
    """Unique hosts and ranks per host from every rank's host name."""
    counts = Counter(hostnames)
    return sorted(counts), dict(sorted(counts.items()))
