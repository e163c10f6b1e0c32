"""Run under mpiexec: rank 1 alone raises in the middle of an all-reduce; the job must end at
once with that rank's one-line message, not when the watchdog gives up on it.

Rank 1 raises *KIND* (an unexpected RuntimeError, or a CollbenchError raised on that rank
only) when it reaches its third step of the first call; the watchdog's timeout is 300 s.
Usage: fail_on_rank.py KIND OUT
"""

import sys

from mpi4py import MPI

from collbench.config import make_config
from collbench.errors import CollbenchError
from collbench.harness import run_sweep
from collbench.transports.mpi import MpiTransport

kind, out = sys.argv[1:3]
if MPI.COMM_WORLD.rank == 1:
    pair, calls = MpiTransport.pair, []

    def pair_then_fail(self, send, recv, progress):
        calls.append(1)
        if len(calls) == 3:
            raise (RuntimeError if kind == "RuntimeError" else CollbenchError)("planted  failure\non rank 1")
        pair(self, send, recv, progress)

    MpiTransport.pair = pair_then_fail
config = make_config({"algorithms": "ring", "minbytes": "1K", "maxbytes": "1K", "iters": 2,
                      "warmup_iters": 0, "timeout": 300, "out": out})
sys.exit(run_sweep(config))
