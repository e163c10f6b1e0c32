"""Run under mpiexec: the Python heap peak (tracemalloc, which numpy reports its buffers to)
of each point's buffers on this rank, from allocation through one timed call and one check.
Rank 0 prints one JSON line: per rank, {algorithm/place: [peak bytes, scratch bytes, wrong]}.
Usage: footprint.py SIZE_BYTES [step|dataflow]"""

import json
import sys
import tracemalloc

from mpi4py import MPI

from collbench.config import make_config
from collbench.harness import Point, PointRunner
from collbench.transports.base import Progress
from collbench.transports.mpi import MpiTransport

size = int(sys.argv[1])
execution = sys.argv[2] if len(sys.argv) > 2 else "step"
config = make_config({"minbytes": size, "maxbytes": size, "execution": execution})
transport = MpiTransport(MPI.COMM_WORLD, config)
found = {}
for algorithm in ("ring", "rabenseifner", "naive", "native"):
    for in_place in (False, True):
        tracemalloc.start()
        runner = PointRunner(config, transport, Point(algorithm, size, in_place), Progress())
        runner.prepare()
        runner.call()
        wrong = runner.count_wrong(seed=1)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        executor = runner._executor
        scratch = 0 if executor is None else executor._scratch.nbytes
        found[f"{algorithm}/{'in' if in_place else 'out'}"] = [peak, scratch, wrong]
        del runner, executor
ranks = MPI.COMM_WORLD.gather(found, root=0)
if MPI.COMM_WORLD.rank == 0:
    print(json.dumps(ranks), flush=True)
transport.close()
