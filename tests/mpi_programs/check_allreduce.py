"""Run under mpiexec: every algorithm on the real MPI transport against the exact result.

Each rank builds its input, runs the executor (or MPI_Allreduce for ``native``: bfloat16 with
a user-defined operator, avg as a sum then a division) in and out of place, and counts wrong
elements; rank 0 prints one JSON line with every failing case.
Usage: check_allreduce.py [--dtypes a,b] [--ops a,b] [--counts n,m] [--execution dataflow]
[--window N] [--segments N]
"""

import argparse
import json
import sys

from collbench.algorithms import build
from collbench.algorithms.data import expected_output, make_input
from collbench.algorithms.ops import DTYPES, ReduceOp
from mpi4py import MPI

from collbench.config import make_config
from collbench.dataflow import DataflowExecutor
from collbench.executor import Executor
from collbench.transports import open_transport

parser = argparse.ArgumentParser()
parser.add_argument("--dtypes", default=",".join(DTYPES))
parser.add_argument("--ops", default="sum,prod,min,max,avg")
parser.add_argument("--counts", default="")
parser.add_argument("--execution", choices=("step", "dataflow"), default="step")
parser.add_argument("--window", type=int, default=16)
parser.add_argument("--segments", type=int, default=3)
args = parser.parse_args()

comm = MPI.COMM_WORLD
p, rank = comm.size, comm.rank
transport = open_transport("mpi", comm, make_config({}))
counts = [int(c) for c in args.counts.split(",") if c] or sorted({0, 1, max(p - 1, 0), p + 1, 1000})
variants = [("naive", {}), ("ring", {}), ("ring", {"segments": args.segments}), ("rabenseifner", {}),
            ("native", {})]
failures, checked = [], 0
for dtype in args.dtypes.split(","):
    for op in map(ReduceOp.parse, args.ops.split(",")):
        for count in counts:
            expected = expected_output(p, count, dtype, op)
            for name, options in variants:
                run = None
                if name != "native":
                    schedule = build(name, p, count, **options)
                    if args.execution == "dataflow":
                        run = DataflowExecutor(schedule, transport, dtype, op, window=args.window).run
                    else:
                        run = Executor(schedule, transport, dtype, op).run
                for in_place in (False, True):
                    send = make_input(rank, p, count, dtype, op)
                    original = send.copy()
                    recv = send.copy() if in_place else send * 0
                    if run is None:
                        transport.native_allreduce(None if in_place else send, recv, op.value)
                    else:
                        run(recv, None if in_place else send)
                    wrong = int((recv != expected).sum()) + int((send != original).sum())
                    wrong = comm.allreduce(wrong)
                    checked += 1
                    if wrong:
                        failures.append(f"{name}{options or ''} {dtype} {op.value} count={count} "
                                        f"{'in' if in_place else 'out'}-place: {wrong} wrong")
if rank == 0:
    print(json.dumps({"nranks": p, "checked": checked, "failures": failures}), flush=True)
sys.exit(1 if failures else 0)
