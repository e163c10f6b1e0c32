"""The ``collbench`` command: one sub-command per job, each registered by the module that
implements it, so that ``sim`` and ``reports`` never load MPI and a CPU-only install works.

Every sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a handler taking the parsed arguments and returning an exit status. A
:class:`~collbench.errors.CollbenchError` anywhere becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "collbench.run_cli",
    "collbench.doctor",
    "collbench.sim.cli",
    "collbench.reports.cli",
    "collbench.slurm.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collbench",
        description="Benchmark and simulate all-reduce: naive, ring and Rabenseifner over MPI, "
        "InfiniBand verbs and NCCL, beside the vendor's own all-reduce.",
    )
    from collbench import __version__
    parser.add_argument("--version", action="version", version=f"collbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # a part of the project not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``collbench`` console script and ``python -m collbench``."""
    from collbench.errors import CollbenchError
    from collbench.pipes import quiet_on_closed_pipe

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with quiet_on_closed_pipe():
            return int(args.func(args) or 0)
    except CollbenchError as e:
        if not (e.shared and _mpi_rank() != 0):
            print(f"collbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("collbench: interrupted", file=sys.stderr)
        return 130


def _mpi_rank() -> int:
    """This process's rank in its job if MPI is running, else 0 (never starts MPI itself). A
    singleton started by another MPI's launcher is rank 0 of its own world; its rank in the
    job is the launcher's, so that the job's shared error is printed once."""
    if "mpi4py.MPI" not in sys.modules:
        return 0
    from mpi4py import MPI

    if not MPI.Is_initialized() or MPI.Is_finalized():
        return 0
    if MPI.COMM_WORLD.size == 1:
        from collbench.launcher import rank_from_env

        return rank_from_env() or 0
    return MPI.COMM_WORLD.rank
