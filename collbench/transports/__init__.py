"""Transports: how bytes move between ranks. Each is imported only when asked for, so a
machine without CuPy or pyverbs still runs the MPI path and says clearly what is missing."""

from __future__ import annotations

import importlib

from collbench.errors import CollbenchError

_MODULES = {"mpi": "collbench.transports.mpi", "nccl": "collbench.transports.nccl",
            "verbs": "collbench.transports.verbs"}


def open_transport(name: str, comm, config):
    """Create transport *name* over the MPI communicator *comm* (used for bootstrap)."""
    try:
        module = importlib.import_module(_MODULES[name])
    except KeyError:
        raise CollbenchError(f"unknown transport {name!r}; choose from {', '.join(_MODULES)}") from None
    except ModuleNotFoundError as e:
        raise CollbenchError(f"the {name} transport needs the Python module {e.name!r}, which is "
                             "not installed; run 'collbench doctor' for details") from None
    return module.open(comm, config)
