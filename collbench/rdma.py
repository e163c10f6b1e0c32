"""The thin pyverbs layer: import shim, device probing for ``collbench doctor``, and the few
verbs calls the transport makes (device, PD, CQ, RC queue pairs, memory regions, posting and
polling). Protocol logic lives in :mod:`collbench.verbs.protocol`, not here.

pyverbs is imported lazily, so a machine without it still runs everything else and says why
verbs is unavailable in one sentence: no pyverbs, no kernel verbs support, no device, a port
that is not active.
"""

from __future__ import annotations

import importlib
import socket
from dataclasses import dataclass
from pathlib import Path

from collbench.errors import CollbenchError
from collbench.verbs.protocol import wc_status_text

SYSFS_VERBS = Path("/sys/class/infiniband_verbs")
SYSFS_IB = Path("/sys/class/infiniband")

_PORT_STATES = {0: "NOP", 1: "DOWN", 2: "INIT", 3: "ARMED", 4: "ACTIVE", 5: "ACTIVE_DEFER"}
_LINK_LAYERS = {0: "unspecified", 1: "InfiniBand", 2: "Ethernet"}
PORT_ACTIVE = 4
LINK_ETHERNET = 2

def sysfs_devices() -> list[str]:
    """RDMA devices the kernel lists (``/sys/class/infiniband``), read without pyverbs."""
    try:
        return sorted(p.name for p in SYSFS_IB.iterdir())
    except OSError:
        return []


def install_hint() -> str:
    """How to get pyverbs here. A machine with an RDMA device (InfiniBand, RoCE) uses it
    directly; the Soft-RoCE QEMU guest of ``scripts/rxe-guest.sh`` is only for trying the
    verbs path on a machine without one."""
    devices = sysfs_devices()
    if devices:
        return (f"this machine has RDMA devices ({', '.join(devices[:4])}): install rdma-core's "
                "python3-pyverbs from your distribution and make it importable here (a venv made with "
                "--system-site-packages, or 'scripts/rxe-guest.sh venv' to link just pyverbs; see "
                "docs/verbs.md)")
    return ("this machine has no RDMA device; to try the verbs path without hardware, use the Soft-RoCE "
            "test guest ('scripts/rxe-guest.sh setup', see docs/verbs.md)")


class VerbsUnavailable(CollbenchError):
    """Verbs cannot run here; the message says why in one sentence."""


def pyverbs_modules():
    """``(pyverbs package, enums module)``; enums is ``pyverbs.libibverbs_enums`` (rdma-core
    >= 50) or ``pyverbs.enums`` (<= 58). Raises VerbsUnavailable if pyverbs is missing."""
    try:
        pyverbs = importlib.import_module("pyverbs")
    except ImportError as e:
        raise VerbsUnavailable(f"the verbs transport needs pyverbs, which is not importable ({e}); "
                               f"{install_hint()}") from None
    for name in ("pyverbs.libibverbs_enums", "pyverbs.enums"):
        try:
            return pyverbs, importlib.import_module(name)
        except ImportError:
            continue
    raise VerbsUnavailable("pyverbs is installed but has neither pyverbs.libibverbs_enums nor "
                           "pyverbs.enums; install a matching rdma-core (see docs/verbs.md)")


def check_kernel() -> None:
    """Raise VerbsUnavailable if the kernel offers no user verbs (ib_uverbs not loaded)."""
    if not SYSFS_VERBS.is_dir():
        raise VerbsUnavailable(f"this kernel has no user-space verbs support ({SYSFS_VERBS} is "
                               "missing): load ib_uverbs and an RDMA driver, or use --transport mpi")


def device_names() -> list[str]:
    """Names of the RDMA devices, via pyverbs; raises VerbsUnavailable with the reason."""
    pyverbs_modules()
    check_kernel()
    from pyverbs.device import get_device_list
    from pyverbs.pyverbs_error import PyverbsError

    try:
        devices = get_device_list()
    except PyverbsError as e:
        raise VerbsUnavailable(f"libibverbs could not list RDMA devices ({e}); "
                               "check that ib_uverbs and a provider are installed") from None
    return [d.name.decode() if isinstance(d.name, bytes) else str(d.name) for d in devices]


@dataclass(frozen=True)
class PortInfo:
    device: str
    port: int
    state: int
    link_layer: int
    lid: int
    gids: tuple[tuple[int, str], ...]

    @property
    def active(self) -> bool:
        return self.state == PORT_ACTIVE

    def describe(self) -> str:
        gids = ", ".join(f"{i}:{g}" for i, g in self.gids[:2]) or "none"
        return (f"{self.device} port {self.port}: {_PORT_STATES.get(self.state, self.state)}, "
                f"link layer {_LINK_LAYERS.get(self.link_layer, self.link_layer)}, lid {self.lid}, "
                f"gids {gids}")


def _nonzero_gids(ctx, port: int, table_len: int) -> tuple[tuple[int, str], ...]:
    from pyverbs.pyverbs_error import PyverbsError

    out = []
    for i in range(min(table_len, 16)):
        try:
            gid = str(ctx.query_gid(port, i).gid)
        except PyverbsError:
            continue
        if gid.replace(":", "").strip("0"):
            out.append((i, gid))
    return tuple(out)


def gid_type(device: str, port: int, index: int) -> str:
    """``RoCE v2``, ``IB/RoCE v1`` or ``""`` (unknown): the kernel's type of a GID table entry."""
    path = SYSFS_IB / device / "ports" / str(port) / "gid_attrs" / "types" / str(index)
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def choose_gid(gids: list[tuple[int, str, str]]) -> tuple[int, str] | None:
    """``(index, gid)`` a RoCE queue pair should use among ``(index, gid, type)`` entries:
    RoCE v2 before v1 (v2 travels in UDP/IP, so it is routed and is what ECN-based congestion
    control expects), then a routable address before a link-local one (``fe80::``), then the
    lowest index. None if there is no entry."""
    if not gids:
        return None
    index, gid, _ = min(gids, key=lambda g: (g[2] != "RoCE v2", g[1].lower().startswith("fe80"), g[0]))
    return index, gid


MTU_BYTES = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}
"""``enum ibv_mtu`` to bytes."""
HOP_LIMIT = 64
"""IP hop limit (TTL) of RoCE v2 packets: enough for any routed data-centre fabric (1 kept them
on one subnet)."""


def ports(name: str) -> list[PortInfo]:
    from pyverbs.device import Context

    with Context(name=name) as ctx:
        attr = ctx.query_device()
        infos = []
        for p in range(1, attr.phys_port_cnt + 1):
            pa = ctx.query_port(p)
            infos.append(PortInfo(name, p, int(pa.state), int(pa.link_layer), int(pa.lid),
                                  _nonzero_gids(ctx, p, pa.gid_tbl_len)))
        return infos


def probe() -> list[tuple[bool, str, str]]:
    """``collbench doctor`` lines: pyverbs, kernel support, devices and their ports."""
    try:
        pyverbs, enums = pyverbs_modules()
    except VerbsUnavailable as e:
        return [(False, "verbs", str(e))]
    version = getattr(pyverbs, "__version__", "") or "version unknown"
    lines = [(True, "pyverbs", f"{Path(pyverbs.__file__).parent} ({version}, enums {enums.__name__})")]
    try:
        names = device_names()
    except VerbsUnavailable as e:
        return lines + [(False, "verbs", str(e))]
    if not names:
        return lines + [(False, "verbs", "the kernel supports verbs but there is no RDMA device; "
                                         "add one (e.g. 'rdma link add rxe0 type rxe netdev eth0') "
                                         "or use --transport mpi")]
    usable = False
    for name in names:
        try:
            for info in ports(name):
                usable |= info.active
                lines.append((info.active, "rdma", info.describe()))
        except Exception as e:  # a device that cannot be opened is reported, not fatal
            lines.append((False, "rdma", f"{name}: cannot be opened ({e})"))
    lines.append((usable, "verbs", f"transport available on {', '.join(names)}" if usable else
                  "no RDMA port is ACTIVE; check the cable/link ('rdma link show')"))
    return lines


# ---------------------------------------------------------------- the verbs calls

class Device:
    """An opened device port: context, protection domain, one completion queue (with a
    completion channel when *blocking*, for :meth:`wait`)."""

    def __init__(self, name: str | None, port: int, gid_index: int | None, cqe: int,
                 blocking: bool = False) -> None:
        _, self.e = pyverbs_modules()
        names = device_names()
        if not names:
            raise VerbsUnavailable("no RDMA device found (the kernel supports verbs but lists none); "
                                   "add one or use --transport mpi")
        if name is None:
            name = names[0]
        elif name not in names:
            raise VerbsUnavailable(f"RDMA device {name!r} not found; devices here: {', '.join(names)}")
        from pyverbs.cq import CQ, CompChannel
        from pyverbs.device import Context
        from pyverbs.pd import PD

        self.name, self.port = name, port
        self.ctx = Context(name=name)
        nports = self.ctx.query_device().phys_port_cnt
        if not 1 <= port <= nports:
            raise VerbsUnavailable(f"{name} has ports 1..{nports}, not {port}")
        pa = self.ctx.query_port(port)
        if pa.state != PORT_ACTIVE:
            raise VerbsUnavailable(f"{name} port {port} is {_PORT_STATES.get(pa.state, pa.state)}, "
                                   "not ACTIVE; check the link ('rdma link show')")
        self.lid, self.link_layer = int(pa.lid), int(pa.link_layer)
        self.mtu = int(pa.active_mtu)
        self.is_global = self.link_layer == LINK_ETHERNET or gid_index is not None
        self.gid_index, self.gid, self.gid_type = 0, "::", ""
        if self.is_global:
            gids = [(i, g, gid_type(name, port, i)) for i, g in _nonzero_gids(self.ctx, port, pa.gid_tbl_len)
                    if gid_index is None or i == gid_index]
            chosen = choose_gid(gids)
            if chosen is None:
                raise VerbsUnavailable(f"{name} port {port} has no usable GID"
                                       + (f" at index {gid_index}" if gid_index is not None else ""))
            self.gid_index, self.gid = chosen
            self.gid_type = dict((i, t) for i, _, t in gids)[self.gid_index]
        self.pd = PD(self.ctx)
        self.channel = CompChannel(self.ctx) if blocking else None
        self.cq = CQ(self.ctx, cqe, None, self.channel, 0)
        if blocking:
            self.cq.req_notify()
        self.access = (self.e.IBV_ACCESS_LOCAL_WRITE | self.e.IBV_ACCESS_REMOTE_WRITE)

    def register(self, addr: int, nbytes: int):
        from pyverbs.mr import MR

        return MR(self.pd, nbytes, self.access, address=addr)

    @staticmethod
    def deregister(mr) -> None:
        mr.close()

    def alloc(self, nbytes: int):
        """A registered buffer owned by pyverbs (control slots)."""
        from pyverbs.mr import MR

        return MR(self.pd, nbytes, self.access)

    def create_qp(self, send_depth: int, recv_depth: int):
        from pyverbs.qp import QP, QPCap, QPInitAttr

        cap = QPCap(max_send_wr=send_depth, max_recv_wr=recv_depth, max_send_sge=1, max_recv_sge=1)
        init = QPInitAttr(qp_type=self.e.IBV_QPT_RC, scq=self.cq, rcq=self.cq, cap=cap)
        return QP(self.pd, init)

    def address(self, qp, psn: int) -> tuple:
        """What a peer needs to connect to *qp*: sent over MPI."""
        return (self.lid, self.gid, qp.qp_num, psn, self.mtu)

    def connect(self, qp, local_psn: int, remote: tuple) -> None:
        """RESET -> RTS towards the peer described by *remote* (from :meth:`address`)."""
        from pyverbs.addr import GID, AHAttr, GlobalRoute
        from pyverbs.qp import QPAttr

        lid, gid, qpn, psn, mtu = remote
        attr = QPAttr(port_num=self.port)
        attr.qp_access_flags = self.access
        attr.path_mtu = min(self.mtu, mtu)  # both ports' active MTU
        attr.dest_qp_num, attr.rq_psn, attr.sq_psn = qpn, psn, local_psn
        attr.max_dest_rd_atomic = attr.max_rd_atomic = 1
        attr.min_rnr_timer, attr.timeout, attr.retry_cnt, attr.rnr_retry = 12, 14, 7, 7
        if self.is_global:
            gr = GlobalRoute(dgid=GID(gid), sgid_index=self.gid_index)
            gr.hop_limit = HOP_LIMIT
            attr.ah_attr = AHAttr(port_num=self.port, is_global=1, gr=gr, dlid=0)
        else:
            attr.ah_attr = AHAttr(port_num=self.port, is_global=0, dlid=lid)
        qp.to_rts(attr)

    # -- posting (one SGE per WR, as pyverbs requires)

    def post_recv(self, qp, wr_id: int, addr: int, nbytes: int, lkey: int) -> None:
        from pyverbs.wr import SGE, RecvWR

        qp.post_recv(RecvWR(wr_id=wr_id, num_sge=1, sg=[SGE(addr, nbytes, lkey)]))

    def post_send(self, qp, wr_id: int, addr: int, nbytes: int, lkey: int) -> None:
        from pyverbs.wr import SGE, SendWR

        qp.post_send(SendWR(wr_id=wr_id, opcode=self.e.IBV_WR_SEND, num_sge=1,
                            sg=[SGE(addr, nbytes, lkey)], send_flags=self.e.IBV_SEND_SIGNALED))

    def post_write_imm(self, qp, wr_id: int, addr: int, nbytes: int, lkey: int,
                       remote_addr: int, rkey: int, imm: int) -> None:
        from pyverbs.wr import SGE, SendWR

        wr = SendWR(wr_id=wr_id, opcode=self.e.IBV_WR_RDMA_WRITE_WITH_IMM, num_sge=1,
                    imm_data=socket.htonl(imm), sg=[SGE(addr, nbytes, lkey)],
                    send_flags=self.e.IBV_SEND_SIGNALED)
        wr.set_wr_rdma(rkey, remote_addr)
        qp.post_send(wr)

    def poll(self, n: int):
        """Up to *n* completions as ``(wr_id, status, opcode, imm, byte_len, status_text)``."""
        count, wcs = self.cq.poll(n)
        if not count:
            return ()
        recv_imm = self.e.IBV_WC_RECV_RDMA_WITH_IMM
        return [(wc.wr_id, wc.status, wc.opcode,
                 socket.ntohl(wc.imm_data) if wc.opcode == recv_imm else 0, wc.byte_len)
                for wc in wcs[:count]]

    def wait(self, timeout: float) -> None:
        """Sleep until the completion queue signals a completion (blocking mode), then arm it
        again. The caller polls after every wait, so a completion that arrives between an
        event and the re-arming is found by that poll, never lost. *timeout* is not enforced
        here (``ibv_get_cq_event`` blocks): the harness watchdog ends a rank that never wakes."""
        self.channel.get_cq_event(self.cq)
        self.cq.ack_events(1)
        self.cq.req_notify()

    @staticmethod
    def status_text(status: int) -> str:
        """libibverbs' name of a completion status (pyverbs has no public function for it)."""
        return wc_status_text(status)

    def close(self) -> None:
        self.ctx.close()  # closes the queue pairs, regions, CQ and channel it holds
