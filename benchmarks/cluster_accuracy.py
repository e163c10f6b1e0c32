"""The simulator against a real network: build an emulated cluster (network namespaces, tbf-shaped
links, Linux bridges; ``scripts/netns-cluster.sh``), measure naive, ring and Rabenseifner with one
rank per node over TCP on 2 and 3 nodes of one switch, calibrate the network's four figures
(α, β, γ, o) on those, then predict 4 and 8 nodes on one switch and on two-level trees with
oversubscribed uplinks, measure those too, and print the error of every held-out point.

    sudo .venv/bin/python benchmarks/cluster_accuracy.py [--mbit 100] [--out DIR]

Target: every held-out point of 1 MiB or more within 10%, their median within 5%. Measuring
takes about 15 minutes at 100 Mbit/s; the folders stay in --out, and a second run with the same
--out measures only what is missing (``collbench run`` resumes), so ``--no-measure`` re-fits
and re-predicts at once. Keep the rate low enough (100-200 Mbit/s on a 2-core host) that the
shaped links, not the CPUs that all the nodes share, set the pace.

Two settings of the rig keep what the flow model leaves out from swamping what it models, and
each has a flag to measure without it: TCP's slow start after idle is off on every node (a
connection idle for longer than its RTO would start again from its initial window, which
Rabenseifner's changing partners meet at every step), and MPICH's progress throttle is on
(8 ranks that busy-poll on 2 cores would take the CPU from the ranks and the TCP stack that
have work).

The calibration is the closed-form switch model (:func:`collbench.sim.calibrate.fit`) on points
of ``--min-size`` (1 MiB) or more, above what the shapers' token buckets let through at once;
the predictions simulate the calibrated network (the SimPy flow
model, max-min sharing) with the held-out topology described: ``fat-tree`` with the leaves'
hosts and ``oversubscription = hosts_per_leaf x rate / uplink``, as ``collbench sim predict
--calibration FILE --topology fat-tree --hosts-per-leaf H --oversubscription X --against DIR``
does from the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collbench.sim.calibrate import fit, measured_points  # noqa: E402
from collbench.sim.heldout import compare, score  # noqa: E402

from tests.netns_cluster import VENV, emulated_cluster, skip_reason  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """One measured configuration: *nodes* nodes on one switch, or in leaves of
    *hosts_per_leaf* under uplinks *uplink_factor* times the node rate."""

    name: str
    nodes: int
    hosts_per_leaf: int = 0
    uplink_factor: float = 1.0

    def oversubscription(self) -> float:
        return self.hosts_per_leaf / self.uplink_factor if self.hosts_per_leaf else 1.0

    def describe(self, rate: str) -> str:
        if not self.hosts_per_leaf:
            return f"{self.nodes} nodes, one switch, {rate}"
        leaves = -(-self.nodes // self.hosts_per_leaf)
        return (f"{self.nodes} nodes, {leaves} leaves of {self.hosts_per_leaf}, uplinks "
                f"{self.uplink_factor:g} x {rate} ({self.oversubscription():g}:1)")


FIT = [Setup("switch-2", 2), Setup("switch-3", 3)]
HELD_OUT = [Setup("switch-4", 4), Setup("switch-8", 8),
            Setup("tree-4-2x2", 4, hosts_per_leaf=2, uplink_factor=0.5),
            Setup("tree-8-2x4", 8, hosts_per_leaf=4, uplink_factor=1.0),
            Setup("tree-8-4x2", 8, hosts_per_leaf=2, uplink_factor=0.5)]
ALGORITHMS = "naive,ring,rabenseifner"


def measure(setup: Setup, args: argparse.Namespace, sizes: str, out: Path) -> None:
    """``collbench run`` with one rank per node of *setup*'s cluster, as *args* say, into *out*."""
    rate, uplink = f"{args.mbit}mbit", f"{round(args.mbit * 1000 * setup.uplink_factor)}kbit"
    with emulated_cluster(setup.nodes, rate, setup.hosts_per_leaf, uplink, burst=args.burst,
                          tcp_cc=args.tcp_cc) as cluster:
        cluster.sysctl("net.ipv4.tcp_slow_start_after_idle", "1" if args.slow_start_after_idle else "0")
        if not args.no_throttle:  # ranks that find nothing to do yield their share of the cores
            cluster.env.update(MPIR_CVAR_CH4_PROGRESS_THROTTLE="1",
                               MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT="16")
        low, high = sizes.split(",")
        print(f"# measuring {setup.name}: {setup.describe(rate)}, TCP {cluster.congestion_control()[0]}",
              file=sys.stderr, flush=True)
        done = cluster.mpiexec(setup.nodes, VENV / "bin" / "collbench", "run", "-b", low,
                               "-e", high, "-f", "2", "--algorithms", ALGORITHMS, "-n", str(args.iters),
                               "-w", "1", "--modes", "out", "--out", out, "--no-progress", timeout=3600)
        tcp = cluster.tcp_counters()
    print(f"# {setup.name}: TCP sent {tcp['sent']} segments, retransmitted {tcp['retransmitted']}, "
          f"{tcp['timeouts']} retransmission timeouts", file=sys.stderr, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"collbench run on {setup.name} failed: {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbit", type=int, default=100, help="node link rate in Mbit/s (default 100)")
    parser.add_argument("--out", default=None,
                        help="folder of the measured runs (default results/<time>-cluster)")
    parser.add_argument("--burst", default="256kb",
                        help="each shaper's token bucket (tc units, default 256kb): what an idle link "
                        "sends at once, above its rate (smaller buckets cost TCP goodput)")
    parser.add_argument("--slow-start-after-idle", action="store_true",
                        help="keep Linux's default: a TCP connection idle for longer than its RTO starts "
                        "again from the initial window (the flow model has no slow start; default: off)")
    parser.add_argument("--no-throttle", action="store_true",
                        help="let MPICH ranks busy-poll (default: MPICH's progress throttle, so that 8 ranks "
                        "waiting on 2 cores yield them to the ranks and the TCP stack that have work)")
    parser.add_argument("--tcp-cc", default=None,
                        help="the nodes' TCP congestion control (default: the rig's, cubic or reno; bbr, "
                        "this VM's own, misreads the shapers' bursts and slows Rabenseifner's exchanges)")
    parser.add_argument("--no-measure", action="store_true", help="use the runs already in --out")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per point (default 5)")
    parser.add_argument("--fit-sizes", default="256K,4M", help="smallest and largest fitted size")
    parser.add_argument("--sizes", default="512K,4M", help="smallest and largest held-out size")
    parser.add_argument("--min-size", type=int, default=2**20,
                        help="fit points of this many bytes or more")
    parser.add_argument("--only", default="", help="held-out setups to measure, e.g. switch-4,tree-8-2x4")
    args = parser.parse_args()
    out = Path(args.out or ROOT / "results" / f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-cluster")
    held = [s for s in HELD_OUT if not args.only or s.name in args.only.split(",")]
    if not args.no_measure:
        reason = skip_reason()
        if reason:
            raise SystemExit(f"cannot build the emulated cluster: {reason}")
        for setups, sizes in ((FIT, args.fit_sizes), (held, args.sizes)):
            for setup in setups:
                measure(setup, args, sizes, out / setup.name)

    data = measured_points([out / s.name for s in FIT])
    calibration = fit(data[data["size_bytes"] >= args.min_size], "switch")
    rate_bps = args.mbit * 1e6
    print(f"# {dt.date.today()} on {platform.node()} ({platform.machine()}, {_cpus()} cpus); "
          f"node links {args.mbit} Mbit/s, tbf, one rank per node, MPICH over TCP")
    print(f"# fitted on {', '.join(s.name for s in FIT)}: {calibration.describe()}")
    goodput = 100 * 8 / calibration.params.beta / rate_bps
    print(f"# fitted bandwidth is {goodput:.1f}% of the shaped rate")
    if calibration.note:
        print(f"# note: {calibration.note}")
    print("| setup | algorithm | P | size (B) | measured (ms) | predicted (ms) | error |")
    print("|---|---|---|---|---|---|---|")
    everything = []
    for setup in held:
        spec = calibration.network(1)
        if setup.hosts_per_leaf:
            spec = spec.with_overrides(topology="fat-tree", hosts_per_leaf=setup.hosts_per_leaf,
                                       oversubscription=setup.oversubscription())
        rows = compare(spec, measured_points([out / setup.name]))
        for r in sorted(rows, key=lambda r: (r["algorithm"], r["size_bytes"])):
            print(f"| {setup.name} | {r['algorithm']} | {r['nranks']} | {r['size_bytes']} | "
                  f"{r['measured_us'] / 1e3:.1f} | {r['predicted_us'] / 1e3:.1f} | {r['error_pct']:+.1f}% |")
        print(f"# {setup.name} ({setup.describe(f'{args.mbit} Mbit/s')}): {score(rows).describe()}")
        everything += rows
    print(f"# all held-out: {score(everything).describe()}; target: all within 10%, median within 5%")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
