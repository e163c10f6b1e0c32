"""What a waiting rank takes from a working rank bound to the same core (a probe of this
host's scheduler; the simulator does not model it).

    mpiexec -bind-to core -n 3 .venv/bin/python benchmarks/core_sharing.py

On a 2-core host, ranks 0 and 2 share core 0. Rank 0 reduces a buffer in a loop while the
other ranks either sleep (they leave the core) or wait for a message from it as collbench's
MPI transport does when ranks outnumber cores (``Testany`` then ``sched_yield``) or as
MPI's own ``Wait`` does. It prints how much longer rank 0's work takes beside waiting
ranks than beside sleeping ones: 1 means a waiting rank takes nothing, 2 an equal share.

Why it matters: MPICH's launcher starts each rank in a session of its own, and with Linux's
autogroup (``/proc/sys/kernel/sched_autogroup_enabled``) each session is a scheduling group
that gets a fair share of the core whenever it is runnable. A polling rank is always
runnable, and ``sched_yield`` gives way only within its own group, so it keeps its share.
Run it as root with autogroup off (``echo 0 > /proc/sys/kernel/sched_autogroup_enabled``)
to see the difference.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from mpi4py import MPI

from collbench.provenance import sched_autogroup
from collbench.transports.mpi import _yielding_waitany

SIZES = (64 * 1024, 1024 * 1024, 4 * 1024 * 1024)
ROUNDS = 7
"""Rounds per way of waiting; the first is dropped and the median of the rest kept."""
WORK_BYTES = 200 * 2**20
"""Bytes rank 0 reduces per round: long enough (~10 ms) for many time slices."""


def reduce_loop(a: np.ndarray, b: np.ndarray) -> float:
    """Seconds to add *b* into *a* WORK_BYTES / a.nbytes times."""
    began = time.perf_counter()
    for _ in range(max(1, WORK_BYTES // a.nbytes)):
        np.add(a, b, out=a)
    return time.perf_counter() - began


def wait_for(comm: MPI.Comm, how: str, tag: int) -> None:
    """Wait for rank 0's token *how*: ``sleep`` first, ``yield`` or ``mpi``."""
    token = np.zeros(1, np.int32)
    if how == "sleep":
        time.sleep(0.5)  # longer than rank 0's round: the rank is off the core meanwhile
        comm.Recv(token, source=0, tag=tag)
    elif how == "yield":
        _yielding_waitany([comm.Irecv(token, source=0, tag=tag)])
    else:
        comm.Recv(token, source=0, tag=tag)


def main() -> None:
    comm = MPI.COMM_WORLD
    if comm.size < 2:
        raise SystemExit("run it with at least 2 ranks, e.g. mpiexec -bind-to core -n 3")
    ways = ("sleep", "yield", "mpi")
    if comm.rank == 0:
        cores = {r: sorted(c) for r, c in enumerate(comm.gather(sorted(os.sched_getaffinity(0))))}
        print(f"# {comm.size} ranks; cores of each rank {cores}; autogroup {sched_autogroup()}")
        print("# rank 0's reduction time beside waiting ranks, over beside sleeping ones")
        print(f"{'bytes':>10} {'sleeping (ms)':>14} {'yield':>8} {'MPI wait':>9}")
    else:
        comm.gather(sorted(os.sched_getaffinity(0)))
    for size in SIZES:
        a = np.ones(size // 4, np.float32)
        b = np.ones(size // 4, np.float32)
        seconds: dict[str, list[float]] = {way: [] for way in ways}
        for round_ in range(ROUNDS * len(ways)):
            way = ways[round_ % len(ways)]
            comm.Barrier()
            if comm.rank == 0:
                seconds[way].append(reduce_loop(a, b))
                for peer in range(1, comm.size):
                    comm.Send(np.zeros(1, np.int32), dest=peer, tag=round_)
            else:
                wait_for(comm, way, round_)
        if comm.rank == 0:
            median = {way: statistics.median(s[1:]) for way, s in seconds.items()}
            print(f"{size:>10} {median['sleep'] * 1e3:>14.2f} {median['yield'] / median['sleep']:>7.2f}x "
                  f"{median['mpi'] / median['sleep']:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
