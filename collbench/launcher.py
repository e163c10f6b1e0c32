"""What the launcher says the job's size is, to catch ranks that MPI started as singletons.

A launcher that does not speak the MPI library's process-management interface (Open MPI's
``mpirun`` with an MPICH build, ``srun`` with the wrong ``--mpi`` plugin) starts N processes
that each initialise MPI alone, as rank 0 of 1: every one would measure and store P = 1 points
into the same folder. Each launcher leaves its task count in the environment; a world size
that differs from it stops the run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from collbench.errors import CollbenchError

SIZE_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "Open MPI's mpirun"),
    ("PMI_SIZE", "a PMI launcher (MPICH or Intel MPI mpiexec, srun --mpi=pmi2)"),
    ("MV2_COMM_WORLD_SIZE", "MVAPICH's mpirun"),
    ("SLURM_STEP_NUM_TASKS", "srun"),
)
"""Variables a launcher sets to the number of processes it started, innermost launcher first:
MPICH's mpiexec inside a Slurm job starts its proxies with srun, so ``PMI_SIZE`` (the ranks)
wins over ``SLURM_STEP_NUM_TASKS`` (the proxies)."""


def launcher_size(env: Mapping[str, str] | None = None) -> tuple[int, str, str] | None:
    """``(tasks, variable, launcher)`` from the first of :data:`SIZE_VARIABLES` set to a whole
    number, or None outside any launcher."""
    env = os.environ if env is None else env
    for variable, launcher in SIZE_VARIABLES:
        value = env.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), variable, launcher
    return None


def check_world_size(size: int, env: Mapping[str, str] | None = None) -> None:
    """Raise CollbenchError if the MPI world size *size* is not the launcher's task count."""
    found = launcher_size(env)
    if found is None or found[0] == size:
        return
    tasks, variable, launcher = found
    raise CollbenchError(
        f"MPI sees {size} process(es) but {launcher} started {tasks} ({variable}={tasks}): the "
        "launcher does not match the MPI library mpi4py uses, so the processes run unconnected; "
        "start collbench with that MPI's own mpiexec, or srun with the --mpi plugin it needs",
        shared=size > 1)
