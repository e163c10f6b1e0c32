"""Run under mpiexec: one point under each timing, counting the harness's barriers.

Per-call timing puts a barrier before every iteration; aggregate timing one before the first
call, one before the warm-ups and one before the timed iterations. Rank 0 prints one JSON
line: the barriers each timing took and the folders it wrote.
Usage: count_barriers.py OUT"""

import json
import sys
from pathlib import Path

from mpi4py import MPI

from collbench.config import make_config
from collbench.harness import run_sweep
from collbench.transports.mpi import MpiTransport

barrier, calls = MpiTransport.barrier, []


def counted_barrier(self, comm) -> None:
    calls.append(1)
    barrier(self, comm)


MpiTransport.barrier = counted_barrier
out, counts = Path(sys.argv[1]), {}
for timing in ("per-call", "aggregate"):
    calls.clear()
    config = make_config({"algorithms": "ring", "minbytes": "1K", "maxbytes": "1K", "modes": "out",
                          "iters": 5, "warmup_iters": 2, "timing": timing, "out": str(out / timing)})
    status = run_sweep(config)
    counts[timing] = len(calls)
if MPI.COMM_WORLD.rank == 0:
    print(json.dumps({"barriers": counts, "status": status}), flush=True)
