"""InfiniBand/RoCE verbs transport over pyverbs, bootstrapped over MPI.

One reliable-connected queue pair per peer, all sharing one completion queue. Data moves by
``RDMA_WRITE_WITH_IMM`` straight into the receiver's registered buffer, driven by the receiver:
it posts a receive per segment and sends a clear-to-send (the credit) naming the address and
rkey; the sender writes each segment with an immediate ``(seq, segment)``; the receive is
reported to the executor when its last segment is in. See :mod:`collbench.verbs.protocol` for
the protocol (plain Python, unit-tested) and :mod:`collbench.rdma` for the pyverbs calls.

Ops are started one at a time (:meth:`VerbsTransport.start`) and reported done by
:meth:`VerbsTransport.completed`, which posts what may be posted and takes completions: the
dataflow executor runs on that directly, taking completions between the pieces of a
reduction; :meth:`VerbsTransport.exchange` (the step executor) is built on the same two calls.

Switches (environment, so each technique's effect can be measured): COLLBENCH_VERBS_REGCACHE,
_REGCACHE_LIMIT, _SEGMENT, _WINDOW, _RECV_DEPTH, _POLL, _PORT, _GID_INDEX; see docs/verbs.md.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from collbench.errors import CollbenchError
from collbench.rdma import MTU_BYTES
from collbench.transports.base import Progress, Transfer, Transport
from collbench.verbs.protocol import (
    CONTROL_BYTES,
    MAX_EXTRA_RKEYS,
    ClearToSend,
    CreditBook,
    Idle,
    ProtocolError,
    ReceiveBook,
    Registration,
    RegistrationCache,
    Settings,
    Window,
    pack_imm,
    plan_segments,
    receive_budget,
    unpack_imm,
)

NO_NATIVE = ("the verbs transport has no native all-reduce; use --transport mpi for the "
             "MPI_Allreduce baseline")
CONTROL_SEND_SLOTS = 64
"""Clear-to-send messages in flight per peer (each holds a control slot until it completes)."""
POLL_BATCH = 32

_RECV, _CONTROL, _WRITE = 1, 2, 3


def _wr_id(kind: int, peer: int, index: int = 0, rail: int = 0) -> int:
    return (kind << 60) | (rail << 56) | (peer << 32) | index


def _split_wr_id(wr_id: int) -> tuple[int, int, int, int]:
    """``(kind, peer, index, rail)`` of a work request id."""
    return wr_id >> 60, (wr_id >> 32) & 0xFFFFFF, wr_id & 0xFFFFFFFF, (wr_id >> 56) & 0xF


MAX_RAILS = MAX_EXTRA_RKEYS + 1


def parse_rails(device: str | None, default_port: int) -> list[tuple[str | None, int]]:
    """``--device mlx5_0,mlx5_1:2`` as ``[(name, port), ...]``, one entry per rail; None (the
    first device) when no device is named. Raises CollbenchError on a malformed list."""
    if not device:
        return [(None, default_port)]
    rails = []
    for item in device.split(","):
        name, _, port = item.strip().partition(":")
        if not name or (port and not port.isdigit()) or (port and int(port) < 1):
            raise CollbenchError(f"--device {device!r}: each rail is a device name, optionally "
                                 "with ':port' (e.g. mlx5_0,mlx5_1:1)")
        rails.append((name, int(port) if port else default_port))
    if len(rails) > MAX_RAILS or len(set(rails)) != len(rails):
        raise CollbenchError(f"--device {device!r}: at most {MAX_RAILS} rails, each named once")
    return rails


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
    peer: int
    tag: int
    send: bool


@dataclass
class _Op:
    """A started send or receive, until :meth:`VerbsTransport.completed` reports it."""

    message: _Message
    reg: Registration
    """Pinned while the op runs: the peer may be writing into it."""
    left: int
    """Segment writes not yet completed (sends)."""
    done: bool = False


@dataclass
class _Peer:
    qps: list
    """One queue pair per rail; clear-to-sends travel on rail 0."""
    controls: list
    """Per rail, a registered control area: recv_depth receive slots, then (rail 0)
    CONTROL_SEND_SLOTS send slots."""
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
        rails = parse_rails(name, s.port)
        if len(rails) > 1 and s.poll == "block":
            raise CollbenchError("COLLBENCH_VERBS_POLL=block sleeps on one device's completion channel; "
                                 "use spin with more than one rail")
        self._send_depth = s.window + CONTROL_SEND_SLOTS
        peers = max(self.size - 1, 1)
        self.rails = []
        for rail_name, port in rails:
            self.rails.append(device(rail_name, port, s.gid_index,
                                     cqe=peers * (self._send_depth + s.recv_depth) + 64,
                                     blocking=s.poll == "block"))
        self.dev = self.rails[0]
        self.cache = RegistrationCache(self._register, self._deregister, s.regcache, s.regcache_limit)
        self.peers: dict[int, _Peer] = {}
        for peer in range(self.size):
            if peer == self.rank:
                continue
            qps = [d.create_qp(self._send_depth, s.recv_depth) for d in self.rails]
            controls = [d.alloc((s.recv_depth + (CONTROL_SEND_SLOTS if r == 0 else 0)) * CONTROL_BYTES)
                        for r, d in enumerate(self.rails)]
            self.peers[peer] = _Peer(qps, controls, list(range(CONTROL_SEND_SLOTS)))

    def _register(self, addr: int, nbytes: int) -> tuple:
        """A buffer registered on every rail: one memory region per device."""
        return tuple(d.register(addr, nbytes) for d in self.rails)

    def _deregister(self, regions: tuple) -> None:
        for d, mr in zip(self.rails, regions):
            d.deregister(mr)

    def _connect(self) -> None:
        """Exchange (lid, gid, qpn, psn) and each rank's receiving settings over MPI, bring
        every QP to RTS, post receives. A sender follows the receiver's settings (how
        messages to it are cut), so ranks started with different settings still agree."""
        psns = {p: random.randrange(1 << 24) for p in self.peers}
        mine = [([d.address(qp, psns[p]) for d, qp in zip(self.rails, self.peers[p].qps)],
                 self.settings.wire()) if p in self.peers else None for p in range(self.size)]
        theirs = self.comm.alltoall(mine)
        self.remote = {p: theirs[p][1] for p in self.peers}
        """Each peer's :meth:`Settings.wire`: how this rank sends to it."""
        for p, info in self.peers.items():  # clear-to-sends in flight within the peer's share
            control, _ = receive_budget(self.remote[p]["recv_depth"], CONTROL_SEND_SLOTS)
            info.free_control = list(range(control))
        self._data_budget = receive_budget(self.settings.recv_depth, CONTROL_SEND_SLOTS)[1]
        """Segments announced to one peer and not yet landed, at most (see receive_budget)."""
        error = None
        try:
            for peer, info in self.peers.items():
                if len(theirs[peer][0]) != len(self.rails):
                    raise CollbenchError(f"rank {peer} has {len(theirs[peer][0])} rail(s), this rank "
                                         f"{len(self.rails)}; give every rank the same --device list")
                for rail, (d, qp) in enumerate(zip(self.rails, info.qps)):
                    d.connect(qp, psns[peer], theirs[peer][0][rail])
                    for slot in range(self.settings.recv_depth):
                        self._post_recv(peer, slot, rail)
        except CollbenchError as e:
            error = str(e)
        except Exception as e:
            error = f"connecting RDMA queue pairs on {self._names()} failed: {e}"
        errors = [e for e in self.comm.allgather(error) if e]
        if errors:
            self._teardown()
            raise CollbenchError(errors[0])
        self.book, self.credits = ReceiveBook(), CreditBook()
        self.window = Window(self.settings.window)
        self._control_queue: deque[tuple[int, ClearToSend]] = deque()
        self._control_in_flight = 0
        self._ops: dict[int, _Op] = {}
        self._next_handle = 0
        self._waiting: dict[tuple[int, int], deque[int]] = {}
        """Sends waiting for a clear-to-send, per (peer, tag), in start order."""
        self._writes: deque[tuple[int, ClearToSend, int]] = deque()
        """(handle, clear-to-send, segment) writes allowed and not yet posted."""
        self._deferred: dict[int, deque[int]] = {}
        """Receives started but not yet announced, per peer, in start order."""
        self._announced: defaultdict[int, int] = defaultdict(int)
        """Segments announced per peer and not yet landed."""
        self.comm.Barrier()  # every receive is posted before anyone sends

    def _post_recv(self, peer: int, slot: int, rail: int = 0) -> None:
        info = self.peers[peer]
        control = info.controls[rail]
        self.rails[rail].post_recv(info.qps[rail], _wr_id(_RECV, peer, slot, rail),
                                   control.buf + slot * CONTROL_BYTES, CONTROL_BYTES, control.lkey)

    def _names(self) -> str:
        return ",".join(d.name for d in self.rails)

    # ------------------------------------------------------------ buffers

    def message(self, buf, peer: int, tag: int, *, send: bool) -> _Message:
        if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous:
            raise CollbenchError("the verbs transport needs contiguous numpy buffers")
        root = _root(buf)
        receiver = self.remote[peer] if send else self.settings.wire()
        budget = receive_budget(receiver["recv_depth"], CONTROL_SEND_SLOTS)[1]
        msg = _Message(buf, buf.ctypes.data, buf.nbytes, root,
                       plan_segments(buf.nbytes, receiver["segment_bytes"], budget), peer, tag, send)
        if self.cache.enabled and buf.nbytes:  # registered now, outside the timed calls
            self.cache.release(self.cache.acquire(root.ctypes.data, root.nbytes, root))
        return msg

    def _pin(self, msg: _Message) -> Registration:
        """The registration *msg* moves through, pinned until its op is reported done."""
        if self.cache.enabled:
            return self.cache.acquire(msg.root.ctypes.data, msg.root.nbytes, msg.root)
        return self.cache.acquire(msg.addr, msg.nbytes, msg.buf)

    # ------------------------------------------------------------ single ops (the engine)

    dataflow = True

    def start(self, message: _Message) -> int:
        """Post one send or receive; returns its handle for :meth:`completed`. A receive
        announces its target to the sender (a clear-to-send); a send waits for one."""
        handle = self._next_handle
        self._next_handle = (handle + 1) & 0xFFFFFFFF
        self._ops[handle] = _Op(message, self._pin(message), len(message.segments))
        if message.send:
            key = (message.peer, message.tag)
            self._waiting.setdefault(key, deque()).append(handle)
            self._match(key)
        else:
            self._deferred.setdefault(message.peer, deque()).append(handle)
            self._announce(message.peer)
        return handle

    def _announce(self, peer: int) -> None:
        """Send clear-to-sends for *peer*'s deferred receives, in order, while their segments
        fit the receive budget (a receive is then always posted when a write arrives)."""
        queue = self._deferred.get(peer)
        while queue:
            op = self._ops[queue[0]]
            n = len(op.message.segments)
            if self._announced[peer] and self._announced[peer] + n > self._data_budget:
                return
            handle = queue.popleft()
            try:
                seq = self.book.announce(peer, handle, n)
            except ProtocolError as e:
                raise self._error(op.message, str(e)) from None
            self._announced[peer] += n
            msg = op.message
            rkeys = [mr.rkey for mr in op.reg.handle]
            self._control_queue.append((peer, ClearToSend(msg.tag, seq, rkeys[0], msg.addr, msg.nbytes,
                                                          tuple(rkeys[1:]))))

    def completed(self, handles: list, block: bool) -> list[int]:
        """Indices of the *handles* that are done (each reported once); makes progress first,
        and with *block* until at least one is done."""
        ops, idle = self._ops, Idle(self.timeout)
        while True:
            any_completion = self._advance()
            done = [k for k, h in enumerate(handles) if ops[h].done]
            if done or not block:
                for k in done:
                    self.cache.release(ops.pop(handles[k]).reg)
                return done
            if any_completion:
                idle.reset()
            elif idle.expired():
                raise CollbenchError(self._stuck(handles))
            elif self.settings.poll == "block":
                self.dev.wait(idle.remaining())

    def _advance(self) -> bool:
        """Post what may be posted, take one batch of completions; whether there was any."""
        rails, window, peers, ops = self.rails, self.window, self.peers, self._ops
        self._post_control()
        writes, nrails = self._writes, len(rails)
        while writes and window.free(ops[writes[0][0]].message.peer) > 0:
            handle, cts, segment = writes.popleft()
            op = ops[handle]
            msg = op.message
            offset, length = msg.segments[segment]
            rail = segment % nrails  # segments striped across the rails
            window.acquire(msg.peer)
            rails[rail].post_write_imm(peers[msg.peer].qps[rail], _wr_id(_WRITE, msg.peer, handle, rail),
                                       msg.addr + offset, length, op.reg.handle[rail].lkey,
                                       cts.addr + offset, cts.rkeys_by_rail()[rail],
                                       pack_imm(cts.seq, segment))
        completions = []
        for d in rails:
            completions.extend(d.poll(POLL_BATCH))
        for wr_id, status, opcode, imm, _byte_len in completions:
            kind, peer, index, rail = _split_wr_id(wr_id)
            dev = rails[rail]
            if status != 0:
                what = {_RECV: "a receive from", _CONTROL: "a clear-to-send to",
                        _WRITE: "an RDMA write to"}.get(kind, "a work request with")
                raise self._error(peer, f"{what} rank {peer} failed on {dev.name} "
                                  f"({dev.status_text(status)})")
            if kind == _WRITE:
                window.release(peer)
                op = ops[index]
                op.left -= 1
                op.done = op.left == 0
            elif kind == _CONTROL:
                self._control_in_flight -= 1
                peers[peer].free_control.append(index)
            elif kind == _RECV:
                try:
                    if opcode == dev.e.IBV_WC_RECV_RDMA_WITH_IMM:
                        handle = self.book.landed(peer, *unpack_imm(imm))
                        self._announced[peer] -= 1
                        if handle is not None:
                            ops[handle].done = True
                        if self._deferred.get(peer):
                            self._announce(peer)
                    else:
                        data = peers[peer].controls[0].read(CONTROL_BYTES, index * CONTROL_BYTES)
                        cts = ClearToSend.unpack(bytes(data))
                        self.credits.add(peer, cts)
                        self._match((peer, cts.tag))
                except ProtocolError as e:
                    raise self._error(peer, str(e)) from None
                self._post_recv(peer, index, rail)
        return bool(completions)

    def _match(self, key: tuple[int, int]) -> None:
        """Pair the sends waiting for *key* ``(peer, tag)`` with clear-to-sends received."""
        queue = self._waiting.get(key)
        while queue:
            cts = self.credits.take(*key)
            if cts is None:
                return
            handle = queue.popleft()
            msg = self._ops[handle].message
            if cts.nbytes != msg.nbytes:
                raise self._error(msg, f"the peer expects {cts.nbytes} bytes for message {key[1]}, "
                                  f"this rank sends {msg.nbytes}; the schedules disagree")
            self._writes.extend((handle, cts, s) for s in range(len(msg.segments)))
        self._waiting.pop(key, None)

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
            control = info.controls[0]
            control.write(data, len(data), offset)
            self.dev.post_send(info.qps[0], _wr_id(_CONTROL, peer, slot), control.buf + offset,
                               len(data), control.lkey)
            self._control_in_flight += 1

    # ------------------------------------------------------------ the step

    def exchange(self, sends: list[Transfer], recvs: list[Transfer],
                 progress: Progress) -> Iterator[int]:
        handles = [self.start(t.message) for t in recvs] + [self.start(t.message) for t in sends]
        index = list(range(len(handles)))  # each live handle's index in recvs + sends
        transfers, nrecv = recvs + sends, len(recvs)
        while handles:
            done = self.completed(handles, True)
            landed = [index[k] for k in done if index[k] < nrecv]
            for k in sorted(done, reverse=True):
                del handles[k], index[k]
            progress.tick(tuple(transfers[i].peer for i in index if i < nrecv),
                          tuple(transfers[i].peer for i in index if i >= nrecv))
            yield from landed

    # ------------------------------------------------------------ errors

    def _step_of(self, what) -> int | str:
        """The step of a message, or of the oldest op in flight with a peer (*what* an int)."""
        from collbench.executor import TAGS_PER_STEP

        if isinstance(what, _Message):
            return what.tag // TAGS_PER_STEP
        tags = [op.message.tag for op in self._ops.values() if op.message.peer == what and not op.done]
        tags = tags or [op.message.tag for op in self._ops.values() if not op.done]
        return min(tags) // TAGS_PER_STEP if tags else "?"

    def _error(self, about, what: str) -> CollbenchError:
        """A failure of this rank's exchange with a peer (*about*: a message or the peer), as
        one line naming the rank, the peer and the step."""
        peer = about.peer if isinstance(about, _Message) else about
        return CollbenchError(f"verbs: rank {self.rank}, peer {peer}, step {self._step_of(about)}: {what}")

    def _stuck(self, handles: list) -> str:
        parts = []
        pending = self.book.peers()
        if pending:
            parts.append(f"data from rank(s) {', '.join(map(str, pending))}")
        if self._waiting:
            parts.append(f"clear-to-send from rank(s) {', '.join(str(k[0]) for k in sorted(self._waiting))}")
        busy = self.window.busy()
        if busy:
            parts.append(f"write completions to rank(s) {', '.join(map(str, busy))}")
        what = "; ".join(parts) or "control-message completions"
        step = min(self._step_of(self._ops[h].message) for h in handles)
        return (f"verbs: rank {self.rank}, step {step}: no progress for "
                f"{self.timeout:g} s, waiting for {what}")

    # ------------------------------------------------------------ the rest of the contract

    def native_allreduce(self, sendbuf, recvbuf, op: str) -> None:
        raise CollbenchError(NO_NATIVE)

    def counters(self) -> dict[str, int]:
        c = self.cache
        return {"registrations": c.registrations, "hits": c.hits, "misses": c.misses}

    def describe(self) -> dict:
        d = {"transport": self.name, "protocol": "receiver-driven RDMA write with immediate"}
        if self.dev is not None:
            d.update(device=self._names(), port=",".join(str(r.port) for r in self.rails),
                     rails=len(self.rails),
                     link_layer="Ethernet (RoCE)" if self.dev.is_global else "InfiniBand",
                     gid_index=self.dev.gid_index, gid_type=self.dev.gid_type,
                     active_mtu_bytes=MTU_BYTES.get(self.dev.mtu, self.dev.mtu),
                     **{f"verbs_{k}": v for k, v in self.settings.as_dict().items()})
        return d

    def _teardown(self) -> None:
        if self.dev is None:
            return
        try:
            if hasattr(self, "cache"):
                self.cache.clear()
            for d in getattr(self, "rails", [self.dev]):
                d.close()
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
