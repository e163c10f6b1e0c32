"""A verbs device in plain Python, so the verbs transport's real code runs without hardware.

:class:`Fabric` connects any number of :class:`FakeDevice` objects (one per rank, each rank a
thread of one process); a device has the interface of :class:`collbench.rdma.Device` and
behaves like an RC HCA where it matters to the transport:

- memory regions have an lkey and an rkey and cover ``[addr, addr + length)`` of real memory
  (numpy buffers registered in place); deregistering one invalidates both keys;
- an RDMA write moves the bytes into the peer's registered memory only if the rkey is valid,
  allows remote writes and covers the range, else the writer's completion is ``remote access
  error`` and both queue pairs go to the error state (their posted receives are flushed);
- a send or write with immediate consumes a receive posted at the peer; if none is posted the
  operation waits, in order, until one is (an RNR retry that never gives up, as rnr_retry = 7),
  and the wait is counted in :attr:`FakeDevice.rnr_waits`;
- send and receive queues have their depths, the completion queue its capacity (an overrun
  is an error, as on hardware).

Everything happens under one lock when it is posted; completions are taken with :meth:`poll`.
:class:`ThreadComm` is the matching stand-in for the MPI communicator the transport bootstraps
over (allgather, alltoall, barrier), for ranks that are threads.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

from collbench.verbs.protocol import (
    WC_FLUSH_ERR,
    WC_LOC_LEN_ERR,
    WC_LOC_PROT_ERR,
    WC_REM_ACCESS_ERR,
    WC_RETRY_EXC_ERR,
    wc_status_text,
)

ENUMS = SimpleNamespace(
    IBV_ACCESS_LOCAL_WRITE=1, IBV_ACCESS_REMOTE_WRITE=2, IBV_ACCESS_REMOTE_READ=4,
    IBV_WC_SEND=0, IBV_WC_RDMA_WRITE=1, IBV_WC_RECV=128, IBV_WC_RECV_RDMA_WITH_IMM=129,
    IBV_WR_RDMA_WRITE=0, IBV_WR_RDMA_WRITE_WITH_IMM=1, IBV_WR_SEND=2,
    IBV_MTU_1024=3, IBV_MTU_4096=5,
)
"""The subset of pyverbs' enums the transport reads, with libibverbs' values."""


class FakeVerbsError(RuntimeError):
    """A verbs call the hardware would refuse (a full queue, an unknown key): a bug in the caller."""


@dataclass
class FakeMR:
    device: FakeDevice
    addr: int
    length: int
    access: int
    lkey: int
    rkey: int
    owner: object = None
    """The memory of :meth:`FakeDevice.alloc` regions, kept alive here."""
    valid: bool = True

    @property
    def buf(self) -> int:
        return self.addr

    def covers(self, addr: int, length: int) -> bool:
        return self.valid and self.addr <= addr and addr + length <= self.addr + self.length

    def write(self, data: bytes, length: int, offset: int = 0) -> None:
        if not self.covers(self.addr + offset, length):
            raise FakeVerbsError("MR.write outside the region")
        ctypes.memmove(self.addr + offset, bytes(data[:length]), length)

    def read(self, length: int, offset: int) -> bytes:
        if not self.covers(self.addr + offset, length):
            raise FakeVerbsError("MR.read outside the region")
        return ctypes.string_at(self.addr + offset, length)

    def close(self) -> None:
        self.device.deregister(self)


@dataclass
class _Op:
    """A send-queue work request on its way to the peer."""

    wr_id: int
    opcode: int  # IBV_WR_*
    addr: int
    length: int
    lkey: int
    remote_addr: int = 0
    rkey: int = 0
    imm: int = 0


@dataclass
class FakeQP:
    device: FakeDevice
    qp_num: int
    send_depth: int
    recv_depth: int
    state: str = "RESET"
    peer: FakeQP | None = None
    recvs: deque = field(default_factory=deque)  # (wr_id, addr, length, lkey)
    inbound: deque = field(default_factory=deque)  # (sender QP, _Op) waiting for a receive
    sends_outstanding: int = 0


class Fabric:
    """The wires between fake devices: every region by rkey, every queue pair by number."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.regions: dict[int, FakeMR] = {}
        self.qps: dict[int, FakeQP] = {}
        self.devices: list[FakeDevice] = []
        self._keys = 0x100
        self._qpns = 0x10

    def key(self) -> int:
        self._keys += 1
        return self._keys

    def qpn(self) -> int:
        self._qpns += 1
        return self._qpns

    def device(self, name: str | None = None, port: int = 1, gid_index: int | None = None,
               cqe: int = 4096, blocking: bool = False) -> FakeDevice:
        """Open a device on this fabric; the signature of :class:`collbench.rdma.Device`."""
        device = FakeDevice(self, name or "fake0", port, gid_index, cqe)
        self.devices.append(device)
        return device


class FakeDevice:
    """One rank's HCA port: a protection domain and one completion queue."""

    e = ENUMS

    def __init__(self, fabric: Fabric, name: str, port: int, gid_index: int | None, cqe: int) -> None:
        self.fabric, self.name, self.port = fabric, name, port
        self.is_global, self.gid_index, self.gid, self.gid_type, self.lid = False, 0, "::", "", 1
        self.mtu = ENUMS.IBV_MTU_4096
        self.access = ENUMS.IBV_ACCESS_LOCAL_WRITE | ENUMS.IBV_ACCESS_REMOTE_WRITE
        self.cqe = cqe
        self.cq: deque = deque()
        self.overrun = False
        self.regions: dict[int, FakeMR] = {}  # by lkey
        self.qps: list[FakeQP] = []
        self.registrations = self.deregistrations = self.rnr_waits = self.waits = 0
        self.closed = False
        self.inject = 0
        self.posted = 0
        """Sends and writes posted on this device."""

    # -- memory

    def register(self, addr: int, nbytes: int, owner: object = None) -> FakeMR:
        with self.fabric.lock:
            key = self.fabric.key()
            mr = FakeMR(self, addr, nbytes, self.access, key, key, owner)
            self.regions[key] = mr
            self.fabric.regions[key] = mr
            self.registrations += 1
            return mr

    def deregister(self, mr: FakeMR) -> None:
        with self.fabric.lock:
            if mr.valid:
                mr.valid = False
                self.regions.pop(mr.lkey, None)
                self.fabric.regions.pop(mr.rkey, None)
                self.deregistrations += 1

    def alloc(self, nbytes: int) -> FakeMR:
        memory = ctypes.create_string_buffer(max(nbytes, 1))
        return self.register(ctypes.addressof(memory), nbytes, owner=memory)

    # -- queue pairs

    def create_qp(self, send_depth: int, recv_depth: int) -> FakeQP:
        with self.fabric.lock:
            qp = FakeQP(self, self.fabric.qpn(), send_depth, recv_depth)
            self.fabric.qps[qp.qp_num] = qp
            self.qps.append(qp)
            return qp

    def address(self, qp: FakeQP, psn: int) -> tuple:
        return (self.lid, self.gid, qp.qp_num, psn, self.mtu)

    def connect(self, qp: FakeQP, local_psn: int, remote: tuple) -> None:
        with self.fabric.lock:
            peer = self.fabric.qps.get(remote[2])
            if peer is None:
                raise FakeVerbsError(f"no queue pair {remote[2]} on the fabric")
            qp.peer, qp.state = peer, "RTS"

    # -- posting

    def post_recv(self, qp: FakeQP, wr_id: int, addr: int, nbytes: int, lkey: int) -> None:
        with self.fabric.lock:
            if qp.state == "ERR":
                self._complete(wr_id, WC_FLUSH_ERR, ENUMS.IBV_WC_RECV)
                return
            if len(qp.recvs) >= qp.recv_depth:
                raise FakeVerbsError(f"receive queue of QP {qp.qp_num} is full ({qp.recv_depth})")
            qp.recvs.append((wr_id, addr, nbytes, lkey))
            self._drain(qp)

    def post_send(self, qp: FakeQP, wr_id: int, addr: int, nbytes: int, lkey: int) -> None:
        self._post(qp, _Op(wr_id, ENUMS.IBV_WR_SEND, addr, nbytes, lkey))

    def post_write_imm(self, qp: FakeQP, wr_id: int, addr: int, nbytes: int, lkey: int,
                       remote_addr: int, rkey: int, imm: int) -> None:
        self._post(qp, _Op(wr_id, ENUMS.IBV_WR_RDMA_WRITE_WITH_IMM, addr, nbytes, lkey,
                           remote_addr, rkey, imm))

    def post_write(self, qp: FakeQP, wr_id: int, addr: int, nbytes: int, lkey: int,
                   remote_addr: int, rkey: int) -> None:
        self._post(qp, _Op(wr_id, ENUMS.IBV_WR_RDMA_WRITE, addr, nbytes, lkey, remote_addr, rkey))

    def fail_next_send(self, status: int) -> None:
        """Complete this device's next posted send or write with *status* (an injected error)."""
        self.inject = status

    def _post(self, qp: FakeQP, op: _Op) -> None:
        with self.fabric.lock:
            if qp.state not in ("RTS", "ERR"):
                raise FakeVerbsError(f"QP {qp.qp_num} is {qp.state}, not RTS")
            if qp.sends_outstanding >= qp.send_depth:
                raise FakeVerbsError(f"send queue of QP {qp.qp_num} is full ({qp.send_depth})")
            qp.sends_outstanding += 1
            self.posted += 1
            if self.inject:
                status, self.inject = self.inject, 0
                self._send_done(qp, op, status)
                return
            if qp.state == "ERR":
                self._send_done(qp, op, WC_FLUSH_ERR)
                return
            mr = self.regions.get(op.lkey)
            if mr is None or not mr.covers(op.addr, op.length):
                self._send_done(qp, op, WC_LOC_PROT_ERR)
                self._error(qp)
                return
            target = qp.peer
            target.inbound.append((qp, op))
            target.device._drain(target)
            if target.inbound and target.inbound[-1][1] is op:
                self.rnr_waits += 1  # the responder has no receive posted: retried until it has

    def _drain(self, target: FakeQP) -> None:
        """Deliver what waits at *target*, in order, while receives allow (lock held)."""
        e = ENUMS
        if target.state == "DESTROYED":
            while target.inbound:
                sender, op = target.inbound.popleft()
                sender.device._send_done(sender, op, WC_RETRY_EXC_ERR)
            return
        while target.inbound and target.state == "RTS":
            sender, op = target.inbound[0]
            needs_recv = op.opcode != e.IBV_WR_RDMA_WRITE
            if needs_recv and not target.recvs:
                return
            target.inbound.popleft()
            if op.opcode == e.IBV_WR_SEND:
                wr_id, addr, length, lkey = target.recvs.popleft()
                mr = self.regions.get(lkey)
                if mr is None or not mr.covers(addr, min(op.length, length)):
                    self._complete(wr_id, WC_LOC_PROT_ERR, e.IBV_WC_RECV)
                    sender.device._send_done(sender, op, WC_FLUSH_ERR)
                    self._error(target)
                    continue
                if op.length > length:
                    self._complete(wr_id, WC_LOC_LEN_ERR, e.IBV_WC_RECV)
                    sender.device._send_done(sender, op, WC_LOC_LEN_ERR)
                    self._error(target)
                    continue
                ctypes.memmove(addr, op.addr, op.length)
                self._complete(wr_id, 0, e.IBV_WC_RECV, byte_len=op.length)
                sender.device._send_done(sender, op, 0)
                continue
            region = self.fabric.regions.get(op.rkey)
            if (region is None or region.device is not self or not region.access & e.IBV_ACCESS_REMOTE_WRITE
                    or not region.covers(op.remote_addr, op.length)):
                sender.device._send_done(sender, op, WC_REM_ACCESS_ERR)
                self._error(target)
                return
            ctypes.memmove(op.remote_addr, op.addr, op.length)
            if needs_recv:
                wr_id = target.recvs.popleft()[0]
                self._complete(wr_id, 0, e.IBV_WC_RECV_RDMA_WITH_IMM, imm=op.imm, byte_len=op.length)
            sender.device._send_done(sender, op, 0)

    def _send_done(self, qp: FakeQP, op: _Op, status: int) -> None:
        qp.sends_outstanding -= 1
        opcode = ENUMS.IBV_WC_SEND if op.opcode == ENUMS.IBV_WR_SEND else ENUMS.IBV_WC_RDMA_WRITE
        self._complete(op.wr_id, status, opcode)
        if status:
            self._error(qp)

    def _error(self, qp: FakeQP) -> None:
        """The QP and its peer go to the error state: posted receives and waiting ops flush."""
        for q in (qp, qp.peer):
            if q is None or q.state in ("ERR", "DESTROYED"):
                continue
            q.state = "ERR"
            while q.recvs:
                q.device._complete(q.recvs.popleft()[0], WC_FLUSH_ERR, ENUMS.IBV_WC_RECV)
            while q.inbound:
                sender, op = q.inbound.popleft()
                sender.device._send_done(sender, op, WC_FLUSH_ERR)

    def _complete(self, wr_id: int, status: int, opcode: int, imm: int = 0, byte_len: int = 0) -> None:
        if len(self.cq) >= self.cqe:
            self.overrun = True
            return
        self.cq.append((wr_id, status, opcode, imm, byte_len))

    # -- completions

    def poll(self, n: int):
        """Up to *n* completions as ``(wr_id, status, opcode, imm, byte_len)``; an empty poll
        yields the interpreter to the other ranks' threads."""
        with self.fabric.lock:
            if self.overrun:
                raise FakeVerbsError(f"completion queue of {self.name} overran ({self.cqe} entries)")
            out = [self.cq.popleft() for _ in range(min(n, len(self.cq)))]
        if not out:
            time.sleep(0)
        return out

    def wait(self, timeout: float) -> None:
        """Block until a completion may be there or *timeout* passes (the completion channel)."""
        self.waits += 1
        deadline = time.monotonic() + timeout
        while not self.cq and time.monotonic() < deadline:
            time.sleep(1e-4)

    @staticmethod
    def status_text(status: int) -> str:
        return wc_status_text(status)

    def close(self) -> None:
        with self.fabric.lock:
            for qp in self.qps:  # destroyed: the peers' next operations towards it time out
                qp.state = "DESTROYED"
                qp.recvs.clear()
                self._drain(qp)
            for mr in list(self.regions.values()):
                self.deregister(mr)
            self.closed = True


# ---------------------------------------------------------------- ranks as threads

class _Group:
    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.slots: list = [None] * size


class ThreadComm:
    """The few collective calls of an mpi4py communicator the verbs transport uses, for *size*
    ranks that are threads of one process. Every call is collective, as in MPI."""

    def __init__(self, group: _Group, rank: int) -> None:
        self._group, self.rank, self.size = group, rank, group.size

    @classmethod
    def world(cls, size: int, timeout: float = 30.0) -> list[ThreadComm]:
        group = _Group(size, timeout)
        return [cls(group, r) for r in range(size)]

    def Dup(self) -> ThreadComm:  # noqa: N802 - mpi4py's names
        return self

    def Free(self) -> None:  # noqa: N802
        return None

    def Barrier(self) -> None:  # noqa: N802
        self._group.barrier.wait()

    def allgather(self, obj) -> list:
        g = self._group
        g.slots[self.rank] = obj
        g.barrier.wait()
        out = list(g.slots)
        g.barrier.wait()
        return out

    def alltoall(self, objs: list) -> list:
        return [row[self.rank] for row in self.allgather(objs)]

    def bcast(self, obj, root: int = 0):
        return self.allgather(obj)[root]

    def allreduce(self, value):
        return sum(self.allgather(value))


def run_ranks(size: int, body: Callable[[ThreadComm], object], timeout: float = 60.0) -> list:
    """Run ``body(comm)`` on *size* threads; return each rank's result or the exception it raised.
    A rank that raises does not abort the others (as in MPI without an abort handler): they
    fail on their own, by the transport's timeout or the collectives' (*timeout* seconds)."""
    comms = ThreadComm.world(size, timeout)
    results: list = [None] * size

    def main(rank: int) -> None:
        try:
            results[rank] = body(comms[rank])
        except BaseException as e:  # reported to the caller, rank by rank
            results[rank] = e

    threads = [threading.Thread(target=main, args=(r,), name=f"rank{r}", daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError(f"{t.name} still running after {timeout:g} s")
    return results
