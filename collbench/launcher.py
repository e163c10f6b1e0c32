"""What the launcher (mpiexec, mpirun, srun) told this process about its job, read from the
environment, so a job whose MPI library disagrees with its launcher stops before it measures;
and whether the CPU masks it gave the ranks of a node leave each rank a core of its own.

A launcher of one MPI starting ranks linked against another MPI's library does not fail: each
rank finds no launcher it understands and runs as a singleton, MPI size 1, and the job would
store P = 1 rows, as many times as there are ranks. The launcher's own variables still say
how many tasks it started.
"""

from __future__ import annotations

import os

from collbench.errors import CollbenchError

SIZE_VARIABLES = (
    ("PMI_SIZE", "PMI_RANK"),  # Hydra (MPICH, Intel MPI, MVAPICH) and Slurm's pmi/pmi2 plugins
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),  # Open MPI's mpirun/prterun
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"),  # MVAPICH's mpirun_rsh
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID"),  # any srun step (srun --mpi=pmix sets no size)
)
"""(task count, task rank) variable pairs, most specific launcher first: a launcher started
inside another (Hydra's proxies under srun) sets its own count beside the outer one's, and
the inner one is the job's."""


def expected_size_from_env(environ: dict[str, str] | None = None) -> tuple[int, str] | None:
    """The number of tasks the launcher started and the variable that says so, or None when
    no launcher variable is set (a singleton started by hand). A value that is not a positive
    integer counts as unset."""
    environ = os.environ if environ is None else environ
    for size_var, _ in SIZE_VARIABLES:
        value = environ.get(size_var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), size_var
    return None


def rank_from_env(environ: dict[str, str] | None = None) -> int | None:
    """This task's rank as the launcher numbered it (the variable paired with the size that
    :func:`expected_size_from_env` chose), or None."""
    environ = os.environ if environ is None else environ
    for size_var, rank_var in SIZE_VARIABLES:
        if environ.get(size_var, "").strip().isdigit():
            value = environ.get(rank_var, "").strip()
            return int(value) if value.isdigit() else None
    return None


def check_world_size(size: int, library: str, environ: dict[str, str] | None = None) -> None:
    """Raise CollbenchError when MPI's world has *size* ranks but the launcher started a
    different number of tasks; *library* is the MPI library's name for the message.

    The error is marked shared on every task but the launcher's rank 0, so that the job
    prints the sentence once although each singleton is its own rank 0."""
    expected = expected_size_from_env(environ)
    if expected is None or expected[0] == size:
        return
    count, variable = expected
    raise CollbenchError(
        f"the launcher started {count} tasks ({variable}={count}) but MPI sees {size} "
        f"rank{'s' if size != 1 else ''}: mpiexec and the MPI library mpi4py loaded ({library}) "
        "belong to different MPI installations; start the job with that library's own launcher "
        "(e.g. the mpiexec in the virtual environment's bin folder)",
        shared=(rank_from_env(environ) or 0) != 0)


def each_has_a_cpu(masks: list[list[int]]) -> bool:
    """Whether every rank can run on a CPU of its own mask with no CPU given to two ranks: a
    perfect matching of ranks to CPUs (Kuhn's augmenting paths; a node holds few ranks).
    Comparing the rank count with one rank's mask is wrong both ways: bound ranks each see one
    CPU, and two ranks bound to the same CPU see one between them."""
    owner: dict[int, int] = {}

    def place(rank: int, seen: set[int]) -> bool:
        for cpu in masks[rank]:
            if cpu not in seen:
                seen.add(cpu)
                if cpu not in owner or place(owner[cpu], seen):
                    owner[cpu] = rank
                    return True
        return False

    return all(place(rank, set()) for rank in range(len(masks)))
