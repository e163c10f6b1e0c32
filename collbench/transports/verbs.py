"""InfiniBand/RoCE verbs transport over pyverbs, bootstrapped over MPI.

One reliable-connected queue pair per peer, all sharing one completion queue. Data moves by
``RDMA_WRITE_WITH_IMM`` straight into the receiver's registered buffer, driven by the receiver:
it posts a receive per segment and sends a clear-to-send (the credit) naming the address and
rkey; the sender writes each segment with an immediate ``(seq, segment)``; the receive is
reported to the executor when its last segment is in. See :mod:`collbench.verbs.protocol` for
the protocol (plain Python, unit-tested) and :mod:`collbench.rdma` for the pyverbs calls.

Switches (environment, so each technique's effect can be measured): COLLBENCH_VERBS_REGCACHE,
_REGCACHE_LIMIT, _SEGMENT, _WINDOW, _RECV_DEPTH, _PORT, _GID_INDEX; see docs/verbs.md.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from collbench.errors import CollbenchError
from collbench.transports.base import Progress, Transfer, Transport
from collbench.verbs.protocol import (
    CONTROL_BYTES,
    Backoff,
    ClearToSend,
    CreditBook,
    ProtocolError,
    ReceiveBook,
    Registration,
    RegistrationCache,
    Settings,
    Window,
    pack_imm,
    plan_segments,
    unpack_imm,
)

NO_NATIVE = ("the verbs transport has no native all-reduce; use --transport mpi for the "
             "MPI_Allreduce baseline")
CONTROL_SEND_SLOTS = 64
"""Clear-to-send messages in flight per peer (each holds a control slot until it completes)."""
POLL_BATCH = 32

_RECV, _CONTROL, _WRITE = 1, 2, 3


def _wr_id(kind: int, peer: int, index: int = 0) -> int:
    return (kind << 56) | (peer << 32) | index


def _split_wr_id(wr_id: int) -> tuple[int, int, int]:
    return wr_id >> 56, (wr_id >> 32) & 0xFFFFFF, wr_id & 0xFFFFFFFF


def open(comm, config) -> VerbsTransport:  # noqa: A001 - the transport factory's common name
    return VerbsTransport(comm, config)


@dataclass
class _Message:
    """A buffer view prepared once by :meth:`VerbsTransport.message`."""

    buf: np.ndarray
    addr: int
    nbytes: int
    root: np.ndarray
    """The array owning the memory: registered whole, once, when the cache is on."""
    segments: list[tuple[int, int]]
    reg: Registration | None = None


@dataclass
class _Peer:
    qp: object
    control: object
    """Registered control area: recv_depth receive slots, then CONTROL_SEND_SLOTS send slots."""
    free_control: list[int]


def _root(buf: np.ndarray) -> np.ndarray:
    root = buf
    while isinstance(root.base, np.ndarray):
        root = root.base
    return root if root.flags.c_contiguous else buf


class VerbsTransport(Transport):
    """RC queue pairs, receiver-driven RDMA write with immediate, a registration cache."""

    name = "verbs"

    def __init__(self, comm, config, device=None, settings: Settings | None = None) -> None:
        """*device* opens a device (``(name, port, gid_index, cqe)``, default
        :class:`collbench.rdma.Device`; tests pass :meth:`collbench.verbs.fake.Fabric.device`);
        *settings* default to the ``COLLBENCH_VERBS_*`` environment."""
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.rank, self.comm.size
        self.xp = np
        self.timeout = config.timeout
        self.dev = None
        error = None
        try:
            if config.buffers != "numpy":
                raise CollbenchError("the verbs transport moves host (numpy) buffers only; "
                                     "drop --buffers cupy or use --transport nccl")
            try:
                self.settings = settings or Settings.from_env()
            except ValueError as e:
                raise CollbenchError(str(e)) from None
            self._open_device(config.device, device)
        except CollbenchError as e:
            error = str(e)
        except Exception as e:  # a pyverbs failure: report it as one sentence on every rank
            error = f"opening RDMA device {config.device or '(first)'} failed: {e}"
        errors = self.comm.allgather(error)
        failed = [(r, e) for r, e in enumerate(errors) if e]
        if failed:
            self._teardown()
            rank, message = failed[0]
            raise CollbenchError(message if self.size == 1 or all(e == message for _, e in failed)
                                 else f"rank {rank}: {message}", shared=True)  # all ranks know it
        self._connect()

    # ------------------------------------------------------------ setup

    def _open_device(self, name: str | None, device) -> None:
        if device is None:
            from collbench.rdma import Device as device

        s = self.settings
        self._send_depth = s.window + CONTROL_SEND_SLOTS
        peers = max(self.size - 1, 1)
        self.dev = device(name, s.port, s.gid_index, cqe=peers * (self._send_depth + s.recv_depth) + 64)
        self.cache = RegistrationCache(self.dev.register, self.dev.deregister, s.regcache,
                                       s.regcache_limit)
        self.peers: dict[int, _Peer] = {}
        for peer in range(self.size):
            if peer == self.rank:
                continue
            qp = self.dev.create_qp(self._send_depth, s.recv_depth)
            control = self.dev.alloc((s.recv_depth + CONTROL_SEND_SLOTS) * CONTROL_BYTES)
            self.peers[peer] = _Peer(qp, control, list(range(CONTROL_SEND_SLOTS)))

    def _connect(self) -> None:
        """Exchange (lid, gid, qpn, psn) over MPI, bring every QP to RTS, post receives."""
        psns = {p: random.randrange(1 << 24) for p in self.peers}
        mine = [self.dev.address(self.peers[p].qp, psns[p]) if p in self.peers else None
                for p in range(self.size)]
        theirs = self.comm.alltoall(mine)
        error = None
        try:
            for peer, info in self.peers.items():
                self.dev.connect(info.qp, psns[peer], theirs[peer])
                for slot in range(self.settings.recv_depth):
                    self._post_recv(peer, slot)
        except Exception as e:
            error = f"connecting RDMA queue pairs on {self.dev.name} failed: {e}"
        errors = [e for e in self.comm.allgather(error) if e]
        if errors:
            self._teardown()
            raise CollbenchError(errors[0])
        self.book, self.credits = ReceiveBook(), CreditBook()
        self.window = Window(self.settings.window)
        self._control_queue: deque[tuple[int, ClearToSend]] = deque()
        self._control_in_flight = 0
        self.comm.Barrier()  # every receive is posted before anyone sends

    def _post_recv(self, peer: int, slot: int) -> None:
        info = self.peers[peer]
        self.dev.post_recv(info.qp, _wr_id(_RECV, peer, slot), info.control.buf + slot * CONTROL_BYTES,
                           CONTROL_BYTES, info.control.lkey)

    # ------------------------------------------------------------ buffers

    def message(self, buf, peer: int, tag: int, *, send: bool) -> _Message:
        if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous:
            raise CollbenchError("the verbs transport needs contiguous numpy buffers")
        root = _root(buf)
        msg = _Message(buf, buf.ctypes.data, buf.nbytes, root,
                       plan_segments(buf.nbytes, self.settings.segment_bytes))
        if self.cache.enabled and buf.nbytes:  # registered now, outside the timed calls
            msg.reg = self.cache.acquire(root.ctypes.data, root.nbytes, root)
            self.cache.release(msg.reg)
        return msg

    def _registration(self, msg: _Message, pinned: list) -> Registration:
        """The registration *msg* moves through, pinned until the step ends (listed in *pinned*)."""
        if self.cache.enabled:
            reg = msg.reg = self.cache.acquire(msg.root.ctypes.data, msg.root.nbytes, msg.root)
        else:
            reg = self.cache.acquire(msg.addr, msg.nbytes, msg.buf)
        pinned.append(reg)
        return reg

    # ------------------------------------------------------------ the step

    def exchange(self, sends: list[Transfer], recvs: list[Transfer],
                 progress: Progress) -> Iterator[int]:
        pinned: list[Registration] = []
        try:
            yield from self._exchange(sends, recvs, progress, pinned)
        finally:
            for reg in pinned:
                self.cache.release(reg)

    def _exchange(self, sends, recvs, progress, pinned) -> Iterator[int]:
        dev, window, peers = self.dev, self.window, self.peers
        for i, t in enumerate(recvs):
            msg = t.message
            reg = self._registration(msg, pinned)
            seq = self.book.announce(t.peer, i, len(msg.segments))
            self._control_queue.append((t.peer, ClearToSend(t.tag, seq, reg.handle.rkey,
                                                            msg.addr, msg.nbytes)))
        waiting: dict[tuple[int, int], deque[int]] = {}
        for i, t in enumerate(sends):
            waiting.setdefault((t.peer, t.tag), deque()).append(i)
        writes: deque[tuple[int, ClearToSend, int]] = deque()  # (send index, cts, segment)
        send_regs = [self._registration(t.message, pinned) for t in sends]
        recv_left = len(recvs)
        backoff = Backoff(self.timeout)

        def match(key) -> None:
            queue = waiting.get(key)
            while queue:
                cts = self.credits.take(*key)
                if cts is None:
                    return
                i = queue.popleft()
                if cts.nbytes != sends[i].message.nbytes:
                    raise CollbenchError(f"verbs: rank {key[0]} expects {cts.nbytes} bytes for "
                                         f"message {key[1]}, this rank sends "
                                         f"{sends[i].message.nbytes}; the schedules disagree")
                writes.extend((i, cts, s) for s in range(len(sends[i].message.segments)))
            waiting.pop(key, None)

        for key in list(waiting):
            match(key)
        while True:
            self._post_control()
            while writes and window.free(sends[writes[0][0]].peer) > 0:
                i, cts, segment = writes.popleft()
                t, reg = sends[i], send_regs[i]
                offset, length = t.message.segments[segment]
                window.acquire(t.peer)
                dev.post_write_imm(peers[t.peer].qp, _wr_id(_WRITE, t.peer, i), t.message.addr + offset,
                                   length, reg.handle.lkey, cts.addr + offset, cts.rkey,
                                   pack_imm(cts.seq, segment))
            if (not recv_left and not waiting and not writes and not window.in_flight()
                    and not self._control_queue and not self._control_in_flight):
                break
            completions = dev.poll(POLL_BATCH)
            if not completions:
                backoff.idle()
                if backoff.expired():
                    raise CollbenchError(self._stuck(sends, recvs, waiting, writes))
                continue
            backoff.reset()
            landed = []
            for wr_id, status, opcode, imm, _byte_len in completions:
                kind, peer, index = _split_wr_id(wr_id)
                if status != 0:
                    what = {_RECV: "a receive from", _CONTROL: "a clear-to-send to",
                            _WRITE: "an RDMA write to"}.get(kind, "a work request with")
                    raise CollbenchError(f"verbs: {what} rank {peer} failed on {dev.name} "
                                         f"({dev.status_text(status)}, step {self._step(sends, recvs)})")
                if kind == _WRITE:
                    window.release(peer)
                elif kind == _CONTROL:
                    self._control_in_flight -= 1
                    peers[peer].free_control.append(index)
                elif kind == _RECV:
                    if opcode == dev.e.IBV_WC_RECV_RDMA_WITH_IMM:
                        done = self.book.landed(peer, *unpack_imm(imm))
                        if done is not None:
                            landed.append(done)
                    else:
                        data = peers[peer].control.read(CONTROL_BYTES, index * CONTROL_BYTES)
                        cts = ClearToSend.unpack(bytes(data))
                        self.credits.add(peer, cts)
                        match((peer, cts.tag))
                    self._post_recv(peer, index)
            outstanding = {t.peer for t in recvs} if recv_left else set()
            outstanding |= {k[0] for k in waiting} | set(window.busy())
            progress.tick(tuple(sorted(outstanding)))
            for index in landed:
                recv_left -= 1
                yield index
        progress.tick(())

    def _post_control(self) -> None:
        while self._control_queue:
            peer, cts = self._control_queue[0]
            info = self.peers[peer]
            if not info.free_control:
                return
            self._control_queue.popleft()
            slot = info.free_control.pop()
            offset = (self.settings.recv_depth + slot) * CONTROL_BYTES
            data = cts.pack()
            info.control.write(data, len(data), offset)
            self.dev.post_send(info.qp, _wr_id(_CONTROL, peer, slot), info.control.buf + offset,
                               len(data), info.control.lkey)
            self._control_in_flight += 1

    @staticmethod
    def _step(sends, recvs) -> int | str:
        from collbench.executor import TAGS_PER_STEP

        tags = [t.tag for t in sends + recvs]
        return tags[0] // TAGS_PER_STEP if tags else "?"

    def _stuck(self, sends, recvs, waiting, writes) -> str:
        parts = []
        pending = self.book.peers()
        if pending:
            parts.append(f"data from rank(s) {', '.join(map(str, pending))}")
        if waiting:
            parts.append(f"clear-to-send from rank(s) {', '.join(str(k[0]) for k in sorted(waiting))}")
        busy = self.window.busy()
        if busy:
            parts.append(f"write completions to rank(s) {', '.join(map(str, busy))}")
        what = "; ".join(parts) or "control-message completions"
        return (f"verbs: no progress for {self.timeout:g} s in step {self._step(sends, recvs)} on rank "
                f"{self.rank}, waiting for {what}")

    # ------------------------------------------------------------ the rest of the contract

    def native_allreduce(self, sendbuf, recvbuf, op: str) -> None:
        raise CollbenchError(NO_NATIVE)

    def counters(self) -> dict[str, int]:
        c = self.cache
        return {"registrations": c.registrations, "hits": c.hits, "misses": c.misses}

    def describe(self) -> dict:
        d = {"transport": self.name, "protocol": "receiver-driven RDMA write with immediate"}
        if self.dev is not None:
            d.update(device=self.dev.name, port=self.dev.port,
                     link_layer="Ethernet (RoCE)" if self.dev.is_global else "InfiniBand",
                     gid_index=self.dev.gid_index, **{f"verbs_{k}": v for k, v in
                                                      self.settings.as_dict().items()})
        return d

    def _teardown(self) -> None:
        if self.dev is None:
            return
        try:
            if hasattr(self, "cache"):
                self.cache.clear()
            self.dev.close()
        except Exception:  # closing is best effort
            pass
        self.dev = None

    def close(self) -> None:
        self._teardown()
        try:
            self.comm.Free()
        except Exception:
            pass


__all__ = ["VerbsTransport", "open", "ProtocolError"]
