"""The executor's cost per step on device buffers, with the network taken out.

A loopback transport posts nothing and reports every receive as landed at once, so a schedule
of many tiny reducing steps measures what the executor itself adds per step: its bookkeeping
in Python plus one reduction kernel launch. The same schedule on numpy buffers, and the bare
``cupy.add(a, b, out=a)`` launch, are printed beside it. With NCCL available, one step of a
real NCCL send/receive to self (one rank, one GPU) plus its reduction is timed too.

    python benchmarks/gpu_executor.py [--steps 2000] [--elements 64]
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np
from collbench.algorithms.ops import ReduceOp
from collbench.algorithms.schedule import ScheduleBuilder

from collbench.executor import Executor
from collbench.transports.base import Progress, Transfer, Transport


class Loopback(Transport):
    """Rank 0 of 2 whose messages cost nothing: every receive lands as it is posted."""

    name = "loopback"

    def __init__(self, xp) -> None:
        self.rank, self.size, self.xp = 0, 2, xp

    def exchange(self, sends, recvs, progress):
        return iter(range(len(recvs)))

    def native_allreduce(self, sendbuf, recvbuf, op):
        raise NotImplementedError

    def synchronize(self) -> None:
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()


def tiny_steps(steps: int, elements: int):
    """Rank 0 receives-and-reduces one tiny range per step and sends another."""
    build = ScheduleBuilder("tiny-steps", 2, 2 * steps * elements)
    for s in range(steps):
        mine = (s * elements, (s + 1) * elements)
        theirs = ((steps + s) * elements, (steps + s + 1) * elements)
        build.transfer(s, 1, 0, *mine, reduce=True)
        build.transfer(s, 0, 1, *theirs, reduce=True)
    return build.build()


def best_of(fn, trials: int = 7) -> float:
    fn()
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--elements", type=int, default=64, help="float32 elements per message")
    args = parser.parse_args(argv)
    from collbench import gpu

    cp = gpu.cupy_module()
    steps, n = args.steps, args.elements
    print(f"# {gpu.device_name(cp)}, CuPy {cp.__version__}, {datetime.date.today().isoformat()}; "
          f"{steps} steps of {n} float32 elements, best of 7")
    schedule = tiny_steps(steps, n)
    for label, xp in (("numpy", np), ("cupy", cp), ("cupy+collbench.gpu.reducer", cp)):
        transport = Loopback(xp)
        executor = Executor(schedule, transport, "float32", ReduceOp.SUM)
        if label.endswith("reducer"):  # what the executor would do with the transport's reducer
            executor._reduce = gpu.reducer(cp, "add", "float32")
        buf = xp.ones(schedule.count, dtype=xp.float32)

        def run(executor=executor, buf=buf, transport=transport):
            executor.run(buf)
            transport.synchronize()

        print(f"executor, loopback transport, {label:>26}: {best_of(run) / steps * 1e6:7.2f} us/step")
    a, b = cp.ones(n, dtype=cp.float32), cp.ones(n, dtype=cp.float32)

    def launches():
        for _ in range(steps):
            cp.add(a, b, out=a)
        cp.cuda.get_current_stream().synchronize()

    per_launch = best_of(launches) / steps * 1e6
    print(f"bare cupy.add(a, b, out=a) launch on {n} elements:       {per_launch:7.2f} us")
    fast = gpu.reducer(cp, "add", "float32")

    def fast_launches():
        for _ in range(steps):
            fast(a, b, out=a)
        cp.cuda.get_current_stream().synchronize()

    per_launch = best_of(fast_launches) / steps * 1e6
    print(f"bare collbench.gpu.reducer launch on {n} elements:     {per_launch:7.2f} us")
    _nccl_self_step(cp, steps, n)
    return 0


def _nccl_self_step(cp, steps: int, n: int) -> None:
    try:
        from mpi4py import MPI

        from collbench.config import make_config
        from collbench.transports import open_transport

        t = open_transport("nccl", MPI.COMM_SELF, make_config({"transport": "nccl"}))
    except Exception as e:  # no NCCL: say so and stop
        print(f"NCCL self send/recv step: not measured ({e})")
        return
    src, dst = cp.ones(n, dtype=cp.float32), cp.empty(n, dtype=cp.float32)
    acc = cp.zeros(n, dtype=cp.float32)
    sends = [Transfer(src, 0, 0, t.message(src, 0, 0, send=True))]
    recvs = [Transfer(dst, 0, 0, t.message(dst, 0, 0, send=False))]
    progress = Progress()

    def loop():
        for _ in range(steps):
            for _i in t.exchange(sends, recvs, progress):
                cp.add(acc, dst, out=acc)
        t.synchronize()

    per_step = best_of(loop) / steps * 1e6
    print(f"NCCL send+recv to self, group, then reduce, one rank:  {per_step:7.2f} us/step")
    t.close()


if __name__ == "__main__":
    raise SystemExit(main())
