"""The MPI thread level a run asks for, and what it got.

mpi4py initialises MPI when ``mpi4py.MPI`` is first imported, asking for THREAD_MULTIPLE
unless told otherwise (``mpi4py.rc.thread_level``, or the ``MPI4PY_RC_THREAD_LEVEL``
variable, which wins over ``rc``). Under THREAD_MULTIPLE, MPICH takes a lock on every call and
leaves out its shared-memory collectives, so ``native`` would not be the MPI_Allreduce an
application gets. Applications call MPI_Init (THREAD_SINGLE) or, with threads of their own
such as OpenMP, ask for THREAD_FUNNELED.

The default here is FUNNELED: this process has a second thread (the watchdog), so SINGLE
would misstate it, and only the main thread calls MPI. The one exception is the watchdog's
MPI_Abort when a rank has hung, which ends the job anyway. Nothing else calls MPI from
another thread: the verbs transport uses MPI only to exchange connection details from the
main thread and runs no progress thread, NCCL gets its id by a broadcast from the main
thread, and mpi4py itself starts no threads.
"""

from __future__ import annotations

import os
import sys

from collbench.errors import CollbenchError

LEVELS = ("single", "funneled", "serialized", "multiple")
"""MPI's thread levels in increasing order (MPI_THREAD_SINGLE .. MPI_THREAD_MULTIPLE)."""

DEFAULT = "funneled"
ENV = "MPI4PY_RC_THREAD_LEVEL"


def resolve(requested: str | None, environ: dict[str, str] | None = None) -> str:
    """The level to ask for: *requested* (``--mpi-thread-level``), else ``MPI4PY_RC_THREAD_LEVEL``,
    else :data:`DEFAULT`. Raises CollbenchError for an unknown level, or when the flag and the
    variable disagree (mpi4py would silently follow the variable)."""
    environ = os.environ if environ is None else environ
    from_env = environ.get(ENV)
    for where, level in (("--mpi-thread-level", requested), (ENV, from_env)):
        if level is not None and level not in LEVELS:
            raise CollbenchError(f"{where} must be one of {', '.join(LEVELS)}, not {level!r}")
    if requested is not None and from_env is not None and requested != from_env:
        raise CollbenchError(f"--mpi-thread-level {requested} contradicts {ENV}={from_env}, which "
                             "mpi4py would follow; unset the variable or drop the flag")
    return requested or from_env or DEFAULT


def request(level: str) -> None:
    """Ask mpi4py for *level* when it initialises MPI; no effect once ``mpi4py.MPI`` has been
    imported (the caller of the Python API started MPI itself: :func:`provided` tells)."""
    if "mpi4py.MPI" in sys.modules:
        return
    import mpi4py

    mpi4py.rc.thread_level = level


def provided() -> str:
    """The level MPI granted (MPI_Query_thread), by name."""
    from mpi4py import MPI

    names = {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled",
             MPI.THREAD_SERIALIZED: "serialized", MPI.THREAD_MULTIPLE: "multiple"}
    return names[MPI.Query_thread()]


def record(level: str) -> dict:
    """For run.json: the level asked for, the level granted, and every ``MPI4PY_RC_*`` variable."""
    rc = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MPI4PY_RC_")}
    return {"requested": level, "provided": provided(), "mpi4py_rc_environment": rc}
