"""The emulated cluster of ``scripts/netns-cluster.sh`` (and its Slurm, ``scripts/netns-slurm.sh``)
as a context manager, for the cluster tests and ``benchmarks/cluster_accuracy.py``.

:func:`emulated_cluster` brings up N nodes (network namespaces joined by tbf-shaped bridges)
under a name and a /24 of its own, so that it collides with no other cluster on the host,
optionally starts a multi-node Slurm on them, and tears both down when the block ends, also
when it ends by an exception: the daemons by the pids their own files name, then every
process left in the cluster's namespaces, then the namespaces and links. Needs root.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "netns-cluster.sh"
SLURM = ROOT / "scripts" / "netns-slurm.sh"
VENV = Path(sys.executable).parent.parent
"""The running Python's venv: its mpiexec (the PyPI mpich's) launches the ranks."""
MPI_NETWORK_ENV = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}
"""What MPICH needs to send between ranks of one host through the network, not shared memory."""


@dataclass
class EmulatedCluster:
    """A cluster that is up: *nodes* nodes named node0.., under *name*, in the /24 *net*."""

    name: str
    net: str
    nodes: int
    slurm_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Environment for the scripts and, with Slurm, for sbatch, squeue and collbench slurm."""

    def mpiexec(self, nranks: int, *command, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run *command* as *nranks* MPI ranks, rank i on node i, over TCP."""
        return subprocess.run(["bash", str(CLUSTER), "mpiexec", str(VENV), str(nranks), *map(str, command)],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def tcp_counters(self) -> dict[str, int]:
        """TCP's segments sent, retransmitted and its retransmission timeouts, summed over the
        nodes since they came up (each node's namespace keeps its own counters)."""
        names = {"TcpOutSegs": "sent", "TcpRetransSegs": "retransmitted", "TcpExtTCPTimeouts": "timeouts"}
        totals = dict.fromkeys(names.values(), 0)
        for ns in self.namespaces():
            out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz", *names], capture_output=True,
                                 text=True).stdout
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] in names:
                    totals[names[parts[0]]] += int(parts[1])
        return totals

    def sysctl(self, name: str, value: str) -> None:
        """Set the network sysctl *name* (e.g. ``net.ipv4.tcp_slow_start_after_idle``) on every
        node; each namespace has its own."""
        for ns in self.namespaces():
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{name}={value}"], check=True)

    def congestion_control(self) -> list[str]:
        """Each node's TCP congestion control, in node order."""
        return [subprocess.run(["ip", "netns", "exec", f"{self.name}n{i}", "cat",
                                "/proc/sys/net/ipv4/tcp_congestion_control"],
                               capture_output=True, text=True).stdout.strip() for i in range(self.nodes)]

    def namespaces(self) -> list[str]:
        """The cluster's network namespaces that exist now."""
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.split() and line.split()[0].startswith(f"{self.name}n")]

    def links(self) -> list[str]:
        """The cluster's bridges and veth ends on the host that exist now."""
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        names = [line.split(": ")[1].split("@")[0] for line in out.splitlines()]
        return [n for n in names if re.fullmatch(rf"{self.name}(br0|[hdlu][0-9]+)", n)]

    def daemon_pids(self) -> list[int]:
        """Pids named by the Slurm folder's pid files (slurmctld, slurmds, munged)."""
        if self.slurm_dir is None:
            return []
        files = list(self.slurm_dir.glob("*.pid"))
        return [int(f.read_text()) for f in files if f.read_text().strip().isdigit()]


def skip_reason() -> str | None:
    """Why this host cannot build an emulated cluster, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the emulated cluster needs root (network namespaces, bridges, tc)"
    if not (VENV / "bin" / "mpiexec").exists() or not (VENV / "bin" / "collbench").exists():
        return f"{VENV}/bin lacks mpiexec or collbench (pip install -e '.[mpi]')"
    installed = _script(CLUSTER, "install", env=os.environ.copy(), timeout=900)
    if installed.returncode != 0:
        return f"iproute2 or util-linux could not be installed: {_tail(installed.stderr)}"
    checked = _script(CLUSTER, "check", env={**os.environ, "CB_CLUSTER": f"k{os.getpid() % 10000}"})
    if checked.returncode != 0:
        return _tail(checked.stderr) or "netns-cluster.sh check failed"
    return None


def slurm_skip_reason() -> str | None:
    """Why this host cannot run Slurm on the emulated cluster, or None when it can."""
    installed = _script(SLURM, "install", env=os.environ.copy(), timeout=900)
    if installed.returncode != 0:
        return f"the Slurm packages could not be installed: {_tail(installed.stderr)}"
    return None


@contextmanager
def emulated_cluster(nodes: int, rate: str, hosts_per_leaf: int = 0, uplink: str | None = None,
                     slurm: bool = False, cpus: int = 2,
                     burst: str | None = None, tcp_cc: str | None = None) -> Iterator[EmulatedCluster]:
    """Bring up *nodes* nodes at *rate* (``tc`` units, e.g. ``200mbit``) on one switch, or in
    leaves of *hosts_per_leaf* under uplinks of *uplink*, each shaper's bucket *burst* bytes
    (``tc`` units; the script's default, 256kb, when None), the nodes' TCP congestion control
    *tcp_cc* (the script's default, cubic or reno, when None); with *slurm*, a Slurm of *cpus*
    per node. Tears everything down on the way out; the Slurm folder (configuration, logs) stays
    only when the block failed. It is a short path in /tmp, because slurmstepd's sockets in
    it must fit the 108 bytes of a Unix socket name.

    Raises RuntimeError with the scripts' own message if bringing it up fails."""
    name, net = _free_name_and_net()
    env = {**os.environ, "CB_CLUSTER": name, "CB_CLUSTER_NET": net, **({"CB_BURST": burst} if burst else {}),
           **({"CB_TCP_CC": tcp_cc} if tcp_cc else {})}
    cluster = EmulatedCluster(name, net, nodes, env=env)
    keep_logs = True
    try:
        shape = [str(hosts_per_leaf), uplink or rate] if hosts_per_leaf else []
        _check(_script(CLUSTER, "up", str(nodes), rate, *shape, env=env), "the cluster did not come up")
        if slurm:
            folder = Path("/tmp") / f"cb-slurm-{name}"
            port = random.randrange(20000, 40000, 2)
            env.update(CB_SLURM_DIR=str(folder), CB_SLURM_PORT=str(port),
                       SLURM_CONF=str(folder / "slurm.conf"),
                       CB_SLURM_FIRST_JOB_ID=str(random.randrange(10_000, 1_000_000)))
            cluster.slurm_dir = folder
            _check(_script(SLURM, "start", str(cpus), env=env, timeout=120), "Slurm did not start")
        yield cluster
        keep_logs = False
    finally:
        with _uninterruptible():
            if cluster.slurm_dir is not None:
                subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30,
                               start_new_session=True)
                _script(SLURM, "stop", env=env, timeout=120)
            _script(CLUSTER, "down", env=env, timeout=120)
            if cluster.slurm_dir is not None and not keep_logs:
                shutil.rmtree(cluster.slurm_dir, ignore_errors=True)


@contextmanager
def _uninterruptible() -> Iterator[None]:
    """Ignore Ctrl-C for the block (in the main thread), so that a second one cannot cut a
    teardown short and leave namespaces or daemons behind; the teardown's own processes run
    in sessions of their own, out of the terminal's reach."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals go to the main thread anyway
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _free_name_and_net() -> tuple[str, str]:
    """A cluster name and a 10.77.x /24 that no interface of this host uses yet."""
    used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    for _ in range(100):
        octet = random.randrange(1, 250)
        if f" 10.77.{octet}." not in used:
            return f"t{random.randrange(10_000)}", f"10.77.{octet}"
    raise RuntimeError("no free 10.77.x.0/24 for an emulated cluster")


def _script(path: Path, *args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(path), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{what}: {_tail(done.stderr, 10)}")


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])
