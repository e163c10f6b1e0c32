"""Run under mpiexec: rank 0 corrupts one element after every ring all-reduce, so the
harness's check must count it in #wrong and the command must exit non-zero.
Usage: plant_error.py OUT"""

import sys

from mpi4py import MPI

from collbench.config import make_config
from collbench.executor import Executor
from collbench.harness import run_sweep

if MPI.COMM_WORLD.rank == 0:
    run = Executor.run

    def run_then_corrupt(self, recvbuf, sendbuf=None):
        run(self, recvbuf, sendbuf)
        recvbuf[0] += 1

    Executor.run = run_then_corrupt
config = make_config({"algorithms": "ring,native", "minbytes": "64", "maxbytes": "64", "iters": 2,
                      "warmup_iters": 0, "out": sys.argv[1]})
sys.exit(run_sweep(config))
