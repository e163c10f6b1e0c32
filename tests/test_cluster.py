"""collbench on an emulated multi-node cluster: one rank per node, real TCP through shaped links.

Each test builds its own cluster (``tests/netns_cluster.py``: network namespaces, veth pairs
shaped by tbf, Linux bridges as switches) and tears it down, also when it fails. The runs are
small (1 Gbit/s, up to 1 MiB, 3 timed iterations). Skipped, with the reason printed, where the
host is not root or its kernel lacks namespaces, veth, bridges or tbf.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.netns_cluster import VENV, emulated_cluster, skip_reason, slurm_skip_reason

pytestmark = pytest.mark.cluster

RATE_BPS = 1e9
ALGORITHMS = "naive,ring,rabenseifner,native"
SWEEP = ["-b", "1K", "-e", "1M", "-f", "32", "--algorithms", ALGORITHMS, "-n", "3", "-w", "1",
         "--no-progress"]
NODES = [f"node{i}" for i in range(4)]


@pytest.fixture(scope="module", autouse=True)
def _can_build():
    reason = skip_reason()
    if reason:
        print(f"skipping the emulated cluster tests: {reason}", file=sys.stderr)
        pytest.skip(reason)


def collbench_run(cluster, out: Path) -> pd.DataFrame:
    """``collbench run`` of SWEEP on every node; the summary, every point verified."""
    done = cluster.mpiexec(cluster.nodes, VENV / "bin" / "collbench", "run", *SWEEP, "--out", out,
                           timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 * 3 * 2  # algorithms x sizes (1K, 32K, 1M) x (out, in)
    assert (summary.n_wrong == 0).all()
    return summary


def ring_seconds(summary: pd.DataFrame, nbytes: int = 2**20) -> float:
    rows = summary[(summary.algorithm == "ring") & (summary.size_bytes == nbytes)]
    return float(rows.median_us.median()) * 1e-6


def test_every_algorithm_is_verified_over_tcp_on_four_nodes_of_one_switch(tmp_path):
    with emulated_cluster(4, "1gbit") as cluster:
        summary = collbench_run(cluster, tmp_path / "r")
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["rank_hosts"] == NODES  # rank i ran on node i
    assert run["hosts"] == NODES and run["ranks_per_node"] == dict.fromkeys(NODES, 1)
    assert run["environment"]["FI_PROVIDER"] == "tcp" and run["environment"]["MPIR_CVAR_NOLOCAL"] == "1"
    # The ring moves 2(P-1)/P of 1 MiB through each node's link: at 1 Gbit/s at least 12.6 ms,
    # less what tbf's 256 KiB burst lets through at once; shared memory would take ~1 ms.
    wire = 2 * 3 / 4 * 2**20 * 8 / RATE_BPS
    assert ring_seconds(summary) > 0.75 * wire


def test_a_ring_that_crosses_an_oversubscribed_core_runs_at_the_uplink_rate(tmp_path):
    """Two leaves of two nodes under 100 Mbit/s uplinks (20:1): the ring's hops 1->2 and 3->0
    cross the core, each alone on an uplink, so 2(P-1)/P of 1 MiB at 100 Mbit/s, 126 ms, where
    the nodes' own links (or the two cores, which bound an unshaped ring) take under 60 ms."""
    with emulated_cluster(4, "1gbit", hosts_per_leaf=2, uplink="100mbit") as cluster:
        tree = ring_seconds(collbench_run(cluster, tmp_path / "tree"))
    assert tree > 0.9 * 2 * 3 / 4 * 2**20 * 8 / 100e6


def test_nodes_run_a_loss_based_congestion_control_not_the_hosts():
    """Linux's default, cubic, where a namespace may choose it, else reno: never an inherited
    BBR, which reads the shapers' bursts as Gbit/s and slows two-way exchanges. CB_TCP_CC
    overrides it; one that a namespace may not choose is refused in one line."""
    allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
    with emulated_cluster(2, "1gbit") as cluster:
        assert cluster.congestion_control() == ["cubic" if "cubic" in allowed else "reno"] * 2
    with emulated_cluster(2, "1gbit", tcp_cc="reno") as cluster:
        assert cluster.congestion_control() == ["reno", "reno"]
    with pytest.raises(RuntimeError, match="CB_TCP_CC=no-such-cc cannot be chosen inside a namespace"):
        with emulated_cluster(2, "1gbit", tcp_cc="no-such-cc"):
            pass


def test_teardown_leaves_nothing_behind_after_a_failure(tmp_path):
    if slurm_skip_reason():
        pytest.skip(slurm_skip_reason())
    with pytest.raises(RuntimeError, match="a test fails"):
        with emulated_cluster(2, "1gbit", slurm=True) as cluster:
            daemons = cluster.daemon_pids()
            assert len(daemons) == 2 + 1 + 1  # slurmd per node, slurmctld, munged
            assert len(cluster.namespaces()) == 2 and len(cluster.links()) == 3  # 2 veths, 1 bridge
            raise RuntimeError("a test fails")
    assert cluster.namespaces() == [] and cluster.links() == []
    alive = [pid for pid in daemons if os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"]
    assert alive == []
    assert (cluster.slurm_dir / "log" / "slurmctld.log").exists()  # kept for the failure's diagnosis
    shutil.rmtree(cluster.slurm_dir)


def _state(pid: int) -> str:
    """A process's state letter (Z: exited, not yet reaped by its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


EXPERIMENT = """\
[run]
name = "net"
algorithms = ["naive", "ring", "rabenseifner", "native"]
minbytes = "1K"
maxbytes = "1M"
stepfactor = 32
iters = 3
warmup_iters = 1

[slurm]
setup = [{setup}]
"""


def test_a_slurm_job_on_four_nodes_records_which_rank_ran_where(tmp_path):
    reason = slurm_skip_reason()
    if reason:
        print(f"skipping the multi-node Slurm test: {reason}", file=sys.stderr)
        pytest.skip(reason)
    exp = tmp_path / "net.toml"
    exp.write_text(EXPERIMENT.format(setup=json.dumps(f"export PATH={shlex.quote(str(VENV / 'bin'))}:$PATH")))
    with emulated_cluster(4, "1gbit", slurm=True) as cluster:
        done = subprocess.run([str(VENV / "bin" / "collbench"), "slurm", "submit", str(exp), "--profile",
                               "netns-cluster", "--nodes", "4", "--ntasks-per-node", "1", "--run-id", "r",
                               "--results", str(tmp_path / "res")],
                              env=cluster.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        (job_id,) = [line.split("\t")[0] for line in done.stdout.splitlines()]
        _wait_gone(cluster.env, job_id)
    results = tmp_path / "res" / "net-r" / "n4-t1"
    logs = "".join(p.read_text()[-2000:] for p in results.parent.glob("slurm-*.out"))
    assert (results / "run.json").exists(), logs
    summary = pd.read_csv(results / "summary.csv")
    assert len(summary) == 4 * 3 * 2 and (summary.n_wrong == 0).all(), logs
    run = json.loads((results / "run.json").read_text())
    assert run["hosts"] == NODES and run["rank_hosts"] == NODES  # srun places rank i on node i
    assert run["slurm"]["job_id"] == job_id and run["slurm"]["nodelist"] == "node[0-3]"
    assert run["slurm"]["nnodes"] == "4" and run["environment"]["FI_PROVIDER"] == "tcp"


def _wait_gone(env: dict, job_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout
        if job_id not in queued.split():
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still queued after {timeout} s")


def test_without_root_the_reason_to_skip_is_given(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert skip_reason() == "the emulated cluster needs root (network namespaces, bridges, tc)"
