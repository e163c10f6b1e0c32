"""collbench: the harness that runs all-reduce schedules on real transports and measures them.

The Python API mirrors the CLI: :func:`collbench.api.run` runs a sweep (under
``mpiexec``), :func:`collbench.api.read` reads a results folder back.
"""

__version__ = "0.1.0"
