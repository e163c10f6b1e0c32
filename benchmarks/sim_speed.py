"""Speed of the simulator: ring all-reduce of 256 MiB on a single switch.

Prints, per rank count, the messages, the time to build the schedule (``algorithms.ring``),
the simulation's wall time, the SimPy events processed per second and the wall time per
message, so that linear growth in the number of messages shows as a constant last column.

    .venv/bin/python benchmarks/sim_speed.py --ranks 64,256,1024
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time

from algorithms import build
from sim.executor import simulate
from sim.network import NetworkSpec
from sim.units import parse_ranks, parse_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="64,256,1024,4096")
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--max-messages", type=float, default=3e6,
                        help="skip rank counts with more messages (the schedule of 4096 ranks holds "
                        "33.5M messages and needs about 20 GB)")
    args = parser.parse_args()
    size = parse_sizes(args.size)[0]
    spec = NetworkSpec(topology="switch", bandwidth=12.5e9, latency=1e-6, gamma=1e-10, overhead=5e-7)
    print(f"# {platform.node()} {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; "
          f"ring, {args.size}, single switch, 100 Gb/s")
    print(f"{'P':>6} {'messages':>10} {'build(s)':>9} {'sim(s)':>8} {'events':>10} {'events/s':>10} "
          f"{'us/msg':>7} {'simulated(s)':>13}")
    for p in parse_ranks(args.ranks):
        messages = 2 * (p - 1) * p
        if messages > args.max_messages:
            print(f"{p:>6} {messages:>10} skipped: more than --max-messages {args.max_messages:g}")
            continue
        gc.disable()  # the builder allocates millions of objects; see Simulation.run
        began = time.perf_counter()
        schedule = build("ring", p, size // 4)
        built = time.perf_counter() - began
        gc.enable()
        result = simulate(schedule, spec, 4)
        print(f"{p:>6} {result.messages:>10} {built:>9.2f} {result.wall:>8.2f} {result.events:>10} "
              f"{result.events / result.wall:>10.0f} {1e6 * result.wall / result.messages:>7.2f} "
              f"{result.time:>13.6f}", flush=True)
        del schedule, result


if __name__ == "__main__":
    main()
