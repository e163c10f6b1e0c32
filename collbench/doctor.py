"""``collbench doctor``: what this node offers, and why a missing part is missing.

Each probe returns a list of ``(ok, label, detail)`` lines; the optional stacks (GPU, RDMA)
are probed by their own modules, imported lazily so a CPU-only install still runs this."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

Line = tuple[bool, str, str]


def probe_mpi() -> list[Line]:
    try:
        from mpi4py import MPI
    except ImportError as e:
        return [(False, "mpi", f"mpi4py is not importable ({e}); pip install 'collbench[mpi]'")]
    except RuntimeError as e:  # the MPI library failed to load
        return [(False, "mpi", f"mpi4py found no working MPI library: {e}")]
    library = " ".join(MPI.Get_library_version().replace("\0", "").split())  # Open MPI ends in NUL
    here = str(Path(sys.executable).parent)  # the mpich wheel puts mpiexec beside python
    launcher = shutil.which("mpiexec", path=f"{here}:{os.environ.get('PATH', '')}") or "none found"
    return [(True, "mpi", f"{library[:120]} (MPI {MPI.Get_version()[0]}.{MPI.Get_version()[1]}, "
                          f"mpi4py {importlib.import_module('mpi4py').__version__}, launcher {launcher})")]


def _optional(module: str) -> list[Line]:
    try:
        return importlib.import_module(module).probe()
    except ModuleNotFoundError as e:
        if e.name == module:
            return []
        raise


def probe_all() -> list[Line]:
    import numpy

    lines: list[Line] = [(True, "python", f"{sys.version.split()[0]}, numpy {numpy.__version__}")]
    lines += probe_mpi()
    lines += _optional("collbench.gpu")
    lines += _optional("collbench.rdma")
    return lines


def register(sub) -> None:
    p = sub.add_parser("doctor", help="what this node offers: MPI, GPUs, NCCL, RDMA devices",
                       description="Report the MPI library, GPUs and NCCL, RDMA devices and which "
                       "transports can run here, with the reason for each one that cannot.")
    p.set_defaults(func=doctor_command)


def doctor_command(args) -> int:
    for ok, label, detail in probe_all():
        print(f"{'ok ' if ok else 'no '} {label:<12} {detail}")
    return 0
