"""Speed of the simulator: an all-reduce (ring by default) of 256 MiB on a single switch.

Prints, per rank count, the messages, the time to build the schedule (``algorithms.build``:
since schedules are built per rank on demand, this only sets up the generator), the
simulation's wall time (which includes building every rank's steps as its SimPy process
streams them), their sum, the SimPy events processed and their rate (ranks whose steps end
at the same instant share one wake-up, so a symmetric ring needs about one event per step),
the messages simulated per second, the total wall time per message (linear growth in the
number of messages shows as a constant column), and the peak memory of the process so far.

    .venv/bin/python benchmarks/sim_speed.py --ranks 64,256,1024,4096
    .venv/bin/python benchmarks/sim_speed.py --ranks 1024 --repeat 5
    .venv/bin/python benchmarks/sim_speed.py --algorithm naive --size 1MiB --ranks 1024,2048,4096

Naive's root shares its links with all P-1 messages, which join one overhead apart: the
case where the flow model itself, not the executor, sets the cost.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import time

from collbench.algorithms import build
from collbench.sim import predict
from collbench.sim.executor import simulate
from collbench.sim.network import NetworkSpec
from collbench.sim.units import parse_ranks, parse_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="64,256,1024,4096")
    parser.add_argument("--algorithm", default="ring", choices=("naive", "ring", "rabenseifner"))
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--max-messages", type=float, default=1e8,
                        help="skip rank counts with more messages (P = 4096 has 33.5M and takes minutes)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per rank count; more than one adds a line with the fastest and the median "
                        "(a shared host moves wall times by up to 2x from minute to minute)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    size = parse_sizes(args.size)[0]
    spec = NetworkSpec(topology="switch", bandwidth=12.5e9, latency=1e-6, gamma=1e-10, overhead=5e-7)
    print(f"# {platform.node()} {os.cpu_count()} cpus, Python {platform.python_version()}, "
          f"{datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.1f}; "
          f"{args.algorithm}, {args.size}, single switch, 100 Gb/s, overhead 0.5 us")
    print(f"{'P':>6} {'messages':>10} {'build(s)':>9} {'sim(s)':>8} {'total(s)':>9} {'events':>10} "
          f"{'events/s':>9} {'msgs/s':>9} {'us/msg':>7} {'simulated(s)':>13} {'peak MB':>8}")
    for p in parse_ranks(args.ranks):
        messages = predict.messages(args.algorithm, p)
        if messages > args.max_messages:
            print(f"{p:>6} {messages:>10} skipped: more than --max-messages {args.max_messages:g}")
            continue
        totals = [_run(args.algorithm, p, size, spec) for _ in range(args.repeat)]
        if args.repeat > 1:
            print(f"# P = {p}: total {min(totals):.2f} s fastest, {statistics.median(totals):.2f} s median, "
                  f"{max(totals):.2f} s slowest of {args.repeat} runs", flush=True)


def _run(algorithm: str, p: int, size: int, spec: NetworkSpec) -> float:
    """Build and simulate *algorithm* once, print its line, and return its total wall time."""
    began = time.perf_counter()
    schedule = build(algorithm, p, size // 4)
    built = time.perf_counter() - began
    result = simulate(schedule, spec, 4)
    total = built + result.wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{p:>6} {result.messages:>10} {built:>9.3f} {result.wall:>8.2f} {total:>9.2f} "
          f"{result.events:>10} {result.events / result.wall:>9.0f} "
          f"{result.messages / result.wall:>9.0f} "
          f"{1e6 * total / result.messages:>7.2f} {result.time:>13.6f} {peak:>8.0f}", flush=True)
    return total

if __name__ == "__main__":
    main()
