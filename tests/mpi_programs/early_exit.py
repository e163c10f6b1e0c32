"""Run under mpiexec: rank 1 leaves in the middle of an all-reduce; the others must not hang.

Rank 1 exits cleanly when it reaches its third step (of the first call), or with EXECUTION
dataflow when it posts its third op, as a buggy or crashed program would. The watchdog on
the other ranks must abort the job after ``TIMEOUT`` seconds with a message naming the
algorithm, the step and the peer.
Usage: early_exit.py ALGORITHM TIMEOUT OUT [EXECUTION]
"""

import sys

from mpi4py import MPI

from collbench.config import make_config
from collbench.harness import run_sweep
from collbench.transports.mpi import MpiTransport

algorithm, timeout, out = sys.argv[1:4]
execution = sys.argv[4] if len(sys.argv) > 4 else "step"
if MPI.COMM_WORLD.rank == 1:
    exchange, pair, calls = MpiTransport.exchange, MpiTransport.pair, []

    def leave_at_third_step() -> None:
        calls.append(1)
        if len(calls) == 3:
            sys.exit(0)

    def exchange_then_leave(self, sends, recvs, progress):
        leave_at_third_step()
        yield from exchange(self, sends, recvs, progress)

    def pair_then_leave(self, send, recv, progress):
        leave_at_third_step()
        pair(self, send, recv, progress)

    start = MpiTransport.start

    def start_then_leave(self, message):
        leave_at_third_step()
        return start(self, message)

    MpiTransport.exchange, MpiTransport.pair = exchange_then_leave, pair_then_leave
    MpiTransport.start = start_then_leave
config = make_config({"algorithms": algorithm, "execution": execution, "minbytes": "1K", "maxbytes": "1K",
                      "iters": 2, "warmup_iters": 0, "timeout": timeout, "out": out})
sys.exit(run_sweep(config))
