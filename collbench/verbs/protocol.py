"""Protocol of the verbs transport: receiver-driven RDMA write with immediate.

For every message of a step, the *receiver* decides where the bytes land (its registered
buffer: the user's buffer for a copy, the executor's scratch area for a reduce), posts one
receive work request per segment and sends the sender a small clear-to-send (CTS) control
message ``(tag, seq, rkey, addr, nbytes)``. The CTS is the credit: a sender writes only into a
range it holds a CTS for, and the receiver sends the next CTS for that range only after the
executor has consumed the previous contents (the next step starts after the reduce). The
sender then issues one ``RDMA_WRITE_WITH_IMM`` per segment; the immediate packs ``(seq,
segment)`` so the receiver knows which message and which segment landed, and the receive is
reported to the executor once all of its segments are in.

Everything here is plain Python, unit-tested without pyverbs.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from collbench.errors import CollbenchError

SEQ_BITS = 16
SEG_BITS = 16
SEQ_MOD = 1 << SEQ_BITS
MAX_SEGMENTS = 1 << SEG_BITS


class ProtocolError(CollbenchError):
    """A message broke the protocol (unknown sequence, duplicate segment...); the transport
    prefixes the rank, peer and step."""


# ---------------------------------------------------------------- immediate values

def pack_imm(seq: int, segment: int) -> int:
    """The 32-bit immediate of a write (host order; the pyverbs layer converts to big-endian)."""
    if not 0 <= segment < MAX_SEGMENTS:
        raise ProtocolError(f"segment {segment} does not fit the immediate")
    return ((seq % SEQ_MOD) << SEG_BITS) | segment


def unpack_imm(imm: int) -> tuple[int, int]:
    return (imm >> SEG_BITS) & (SEQ_MOD - 1), imm & (MAX_SEGMENTS - 1)


# ---------------------------------------------------------------- completion status

_WC_STATUS = ("success", "local length error", "local QP operation error",
              "local EE context operation error", "local protection error", "Work Request Flushed Error",
              "memory management operation error", "bad response error", "local access error",
              "remote invalid request error", "remote access error", "remote operation error",
              "transport retry counter exceeded", "RNR retry counter exceeded", "local RDD violation error",
              "remote invalid RD request", "aborted error", "invalid EE context number",
              "invalid EE context state", "fatal error", "response timeout error", "general error",
              "TM error", "TM software rendezvous")
"""``ibv_wc_status_str`` of libibverbs, indexed by ``enum ibv_wc_status`` (a stable ABI)."""
WC_LOC_LEN_ERR, WC_LOC_PROT_ERR, WC_FLUSH_ERR, WC_REM_ACCESS_ERR, WC_RETRY_EXC_ERR = 1, 4, 5, 10, 12


def wc_status_text(status: int) -> str:
    """What libibverbs calls a work completion's *status*, e.g. 10 -> ``remote access error``."""
    if 0 <= status < len(_WC_STATUS):
        return _WC_STATUS[status]
    return f"unknown completion status {status}"


# ---------------------------------------------------------------- control message

_CTS = struct.Struct("!4sIIIQQB")
CTS_MAGIC = b"CBv2"
MAX_EXTRA_RKEYS = 7
"""rkeys of rails after the first that fit a control slot with the rest."""
CONTROL_BYTES = 64
"""Size of one control slot (receive buffer of a CTS); a CTS takes ``_CTS.size`` bytes."""


@dataclass(frozen=True)
class ClearToSend:
    """Receiver -> sender: write message *tag* (``nbytes``) at ``addr`` with ``rkey``,
    immediates carrying *seq*."""

    tag: int
    seq: int
    rkey: int
    addr: int
    nbytes: int
    more_rkeys: tuple[int, ...] = ()
    """The target's rkeys on rails 1, 2, ... (multi-rail: one registration per device)."""

    def rkeys_by_rail(self) -> tuple[int, ...]:
        return (self.rkey, *self.more_rkeys)

    def pack(self) -> bytes:
        if len(self.more_rkeys) > MAX_EXTRA_RKEYS:
            raise ProtocolError(f"a clear-to-send carries at most {MAX_EXTRA_RKEYS + 1} rkeys")
        n = len(self.more_rkeys)
        return (_CTS.pack(CTS_MAGIC, self.tag, self.seq, self.rkey, self.addr, self.nbytes, n)
                + struct.pack(f"!{n}I", *self.more_rkeys))

    @classmethod
    def unpack(cls, data: bytes) -> ClearToSend:
        if len(data) < _CTS.size:
            raise ProtocolError(f"control message of {len(data)} bytes, expected {_CTS.size}")
        magic, tag, seq, rkey, addr, nbytes, n = _CTS.unpack_from(data)
        if magic != CTS_MAGIC:
            raise ProtocolError(f"control message with bad magic {magic!r}")
        if n > MAX_EXTRA_RKEYS or len(data) < _CTS.size + 4 * n:
            raise ProtocolError(f"control message naming {n} more rkeys in {len(data)} bytes")
        return cls(tag, seq, rkey, addr, nbytes, struct.unpack_from(f"!{n}I", data, _CTS.size))


# ---------------------------------------------------------------- segments

def plan_segments(nbytes: int, segment_bytes: int, max_segments: int = MAX_SEGMENTS) -> list[tuple[int, int]]:
    """``(offset, length)`` of each segment of a message; ``segment_bytes <= 0`` means one
    segment. Segments grow when needed so that there are at most *max_segments* of them
    (and never more than MAX_SEGMENTS, what the immediate can number)."""
    if nbytes <= 0:
        return []
    if segment_bytes <= 0 or segment_bytes >= nbytes:
        return [(0, nbytes)]
    size = max(segment_bytes, math.ceil(nbytes / min(max(max_segments, 1), MAX_SEGMENTS)))
    return [(off, min(size, nbytes - off)) for off in range(0, nbytes, size)]


# ---------------------------------------------------------------- receive queue budget

def receive_budget(recv_depth: int, control_slots: int) -> tuple[int, int]:
    """How a queue pair's *recv_depth* posted receives are shared: ``(clear-to-sends the peer
    may have in flight to it, segments it may have announced and not yet seen land)``. Every
    incoming send and write with immediate consumes one receive; keeping the two shares within
    the depth means a receive is always posted when one arrives (no RNR NAK, no retry)."""
    control = max(1, min(control_slots, recv_depth // 2))
    return control, max(1, recv_depth - control)


# ---------------------------------------------------------------- receiver's book

@dataclass
class _Pending:
    peer: int
    index: int
    nsegments: int
    landed: set = field(default_factory=set)


class ReceiveBook:
    """The receiver's slots: which announced messages are still being written, per peer.

    :meth:`announce` gives a message a sequence number unique among the peer's pending ones;
    :meth:`landed` records one segment and returns the receive's index when the last one is in.
    """

    def __init__(self) -> None:
        self._next: defaultdict[int, int] = defaultdict(int)
        self._pending: dict[tuple[int, int], _Pending] = {}

    def announce(self, peer: int, index: int, nsegments: int) -> int:
        if nsegments < 1:
            raise ProtocolError("a message needs at least one segment")
        for _ in range(SEQ_MOD):
            seq = self._next[peer]
            self._next[peer] = (seq + 1) % SEQ_MOD
            if (peer, seq) not in self._pending:
                self._pending[(peer, seq)] = _Pending(peer, index, nsegments)
                return seq
        raise ProtocolError(f"more than {SEQ_MOD} messages pending from rank {peer}")

    def landed(self, peer: int, seq: int, segment: int) -> int | None:
        pending = self._pending.get((peer, seq))
        if pending is None:
            raise ProtocolError(f"rank {peer} wrote message {seq}, which was not announced")
        if not 0 <= segment < pending.nsegments or segment in pending.landed:
            raise ProtocolError(f"rank {peer} wrote segment {segment} of message {seq} "
                                f"(of {pending.nsegments}) twice or out of range")
        pending.landed.add(segment)
        if len(pending.landed) == pending.nsegments:
            del self._pending[(peer, seq)]
            return pending.index
        return None

    def peers(self) -> tuple[int, ...]:
        return tuple(sorted({p.peer for p in self._pending.values()}))

    def __len__(self) -> int:
        return len(self._pending)


# ---------------------------------------------------------------- sender's credits

class CreditBook:
    """CTS messages received and not yet used, first in first out per ``(peer, tag)``.

    A CTS for a later step (or the next call) may arrive while the sender is still busy; it
    waits here until the sender reaches the matching send.
    """

    def __init__(self) -> None:
        self._credits: defaultdict[tuple[int, int], deque[ClearToSend]] = defaultdict(deque)

    def add(self, peer: int, cts: ClearToSend) -> None:
        self._credits[(peer, cts.tag)].append(cts)

    def take(self, peer: int, tag: int) -> ClearToSend | None:
        queue = self._credits.get((peer, tag))
        if not queue:
            return None
        cts = queue.popleft()
        if not queue:
            del self._credits[(peer, tag)]
        return cts

    def __len__(self) -> int:
        return sum(len(q) for q in self._credits.values())


class Window:
    """Work requests in flight per queue pair, at most *limit* (the send queue depth, or 1 for
    stop-and-wait, which turns segment overlap off)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a window needs at least one slot")
        self.limit = limit
        self._used: defaultdict[int, int] = defaultdict(int)

    def free(self, peer: int) -> int:
        return self.limit - self._used[peer]

    def acquire(self, peer: int) -> None:
        if self._used[peer] >= self.limit:
            raise ProtocolError(f"window to rank {peer} is full")
        self._used[peer] += 1

    def release(self, peer: int) -> None:
        if self._used[peer] <= 0:
            raise ProtocolError(f"completion for rank {peer} with nothing in flight")
        self._used[peer] -= 1

    def busy(self) -> tuple[int, ...]:
        return tuple(p for p, n in sorted(self._used.items()) if n)

    def in_flight(self) -> int:
        return sum(self._used.values())


# ---------------------------------------------------------------- registration cache

@dataclass
class Registration:
    addr: int
    nbytes: int
    handle: object
    """What the register callable returned (a pyverbs MR)."""
    owner: object
    """Kept alive while registered, so the memory cannot be freed and reused."""
    valid: bool = True
    pins: int = 0
    """Acquisitions not yet released: a pinned registration is never evicted."""


class RegistrationCache:
    """Memory registrations keyed by ``(address, length)`` of the owning buffer.

    The executor binds views of one buffer once, so with the cache every buffer is registered
    the first time it is seen (the first, untimed call of a point) and never inside the timed
    loop. :meth:`acquire` pins a registration until the matching :meth:`release`: the transport
    pins everything a step uses (a receive's rkey travels to the peer in a clear-to-send, and
    deregistering it before the peer's write lands would fail that write with a remote access
    error). When a new registration takes the cache over *limit_bytes*, least recently used
    *unpinned* registrations are dropped; if what is pinned alone exceeds the limit, the cache
    holds it anyway (the limit is what is kept between steps, not a cap on one step).
    With *enabled* false, :meth:`acquire` registers every time and :meth:`release` deregisters:
    the cost the cache saves, measurable.
    """

    def __init__(self, register: Callable[[int, int], object], deregister: Callable[[object], None],
                 enabled: bool = True, limit_bytes: int = 4 << 30) -> None:
        self._register, self._deregister = register, deregister
        self.enabled, self.limit_bytes = enabled, limit_bytes
        self._entries: OrderedDict[tuple[int, int], Registration] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.registrations = self.deregistrations = 0

    def acquire(self, addr: int, nbytes: int, owner: object) -> Registration:
        """The registration of ``[addr, addr + nbytes)``, pinned until :meth:`release`."""
        key = (addr, nbytes)
        if self.enabled:
            entry = self._entries.get(key)
            if entry is not None:
                self.hits += 1
                self._entries.move_to_end(key)
                entry.pins += 1
                return entry
            self.misses += 1
        entry = Registration(addr, nbytes, self._register(addr, nbytes), owner, pins=1)
        self.registrations += 1
        if self.enabled:
            self._entries[key] = entry
            self.bytes += nbytes
            self._evict()
        return entry

    def release(self, entry: Registration) -> None:
        """End of one use: unpins (cache on) or deregisters (cache off)."""
        if entry.pins > 0:
            entry.pins -= 1
        if not self.enabled and entry.valid:
            self._drop(entry)

    def _evict(self) -> None:
        for key in [k for k, e in self._entries.items() if not e.pins]:
            if self.bytes <= self.limit_bytes:
                return
            self._drop(self._entries.pop(key))
            self.bytes -= key[1]

    def _drop(self, entry: Registration) -> None:
        entry.valid = False
        entry.owner = None
        self.deregistrations += 1
        self._deregister(entry.handle)

    def clear(self) -> None:
        for entry in self._entries.values():
            self._drop(entry)
        self._entries.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def pinned(self) -> int:
        return sum(1 for e in self._entries.values() if e.pins)

    def stats(self) -> dict:
        return {"enabled": self.enabled, "entries": len(self), "bytes": self.bytes, "hits": self.hits,
                "misses": self.misses, "registrations": self.registrations,
                "deregistrations": self.deregistrations}


# ---------------------------------------------------------------- polling

POLL_MODES = ("spin", "block")


class Idle:
    """Time since the last completion, read after empty polls: *timeout* seconds without one
    means the step is stuck. Spinning polls back to back (no sleep: a sleep's wake-up
    latency would be added to every wait); blocking waits on the completion channel."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout, self._clock = timeout, clock
        self.reset()

    def reset(self) -> None:
        self.last_progress = self._clock()

    def remaining(self) -> float:
        return self.timeout - (self._clock() - self.last_progress)

    def expired(self) -> bool:
        return self.remaining() < 0


# ---------------------------------------------------------------- switches

@dataclass(frozen=True)
class Settings:
    """The techniques of the seed study, each switchable (``COLLBENCH_VERBS_*``)."""

    regcache: bool = True
    """REGCACHE: cache registrations (1) or register/deregister inside every call (0)."""
    regcache_limit: int = 4 << 30
    """REGCACHE_LIMIT: bytes kept registered before least recently used ones are dropped."""
    segment_bytes: int = 0
    """SEGMENT: bytes per write-with-immediate (0 = one write per message)."""
    window: int = 64
    """WINDOW: writes in flight per peer (1 = stop-and-wait: no overlap across segments)."""
    recv_depth: int = 512
    """RECV_DEPTH: receive work requests kept posted per queue pair."""
    port: int = 1
    """PORT: the device port."""
    gid_index: int | None = None
    """GID_INDEX: the GID for RoCE (default: the first non-zero one)."""
    poll: str = "spin"
    """POLL: ``spin`` (poll the completion queue back to back) or ``block`` (sleep on the
    completion channel until the device signals a completion: frees the core, adds wake-up
    latency to every wait)."""

    @classmethod
    def from_env(cls, env=None) -> Settings:
        env = os.environ if env is None else env
        from collbench.sizes import parse_size

        def get(name, convert, default):
            raw = env.get(f"COLLBENCH_VERBS_{name}")
            if raw is None or raw.strip() == "":
                return default
            try:
                return convert(raw.strip())
            except ValueError:
                raise ValueError(f"COLLBENCH_VERBS_{name}={raw!r} is not valid") from None

        def flag(raw: str) -> bool:
            if raw.lower() in ("1", "on", "yes", "true"):
                return True
            if raw.lower() in ("0", "off", "no", "false"):
                return False
            raise ValueError(raw)

        settings = cls(regcache=get("REGCACHE", flag, cls.regcache),
                       regcache_limit=get("REGCACHE_LIMIT", parse_size, cls.regcache_limit),
                       segment_bytes=get("SEGMENT", parse_size, cls.segment_bytes),
                       window=get("WINDOW", int, cls.window),
                       recv_depth=get("RECV_DEPTH", int, cls.recv_depth),
                       port=get("PORT", int, cls.port),
                       gid_index=get("GID_INDEX", int, cls.gid_index),
                       poll=get("POLL", str.lower, cls.poll))
        if settings.window < 1 or settings.recv_depth < 4 or settings.port < 1:
            raise ValueError("COLLBENCH_VERBS_WINDOW must be >= 1, RECV_DEPTH >= 4, PORT >= 1")
        if settings.poll not in POLL_MODES:
            raise ValueError(f"COLLBENCH_VERBS_POLL={settings.poll!r} is not one of {', '.join(POLL_MODES)}")
        return settings

    def wire(self) -> dict:
        """What a peer must know to send to this rank: the receiver decides how messages to
        it are cut (``segment_bytes``) and how many receives it keeps posted."""
        return {"segment_bytes": self.segment_bytes, "recv_depth": self.recv_depth}

    def as_dict(self) -> dict:
        return {"regcache": self.regcache, "regcache_limit": self.regcache_limit,
                "segment_bytes": self.segment_bytes, "window": self.window,
                "recv_depth": self.recv_depth, "port": self.port, "gid_index": self.gid_index,
                "poll": self.poll}
