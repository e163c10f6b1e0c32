"""The contract between the executor and a transport: post a step, report arrivals.

A transport moves raw bytes between ranks. The executor hands it one step at a time as
lists of :class:`Transfer` (buffer views with a peer and a tag); the transport posts them all
and then yields the index of each receive as it lands, so the executor can reduce one
arrival while the others are still in flight. The transport also offers the library's own
all-reduce (the ``native`` baseline) and a synchronisation point for asynchronous devices.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Transfer:
    """One message of a step: *buf* is a contiguous view of the user's or scratch buffer;
    *message* is the transport's own description of it, made once by
    :meth:`Transport.message` when the executor binds its buffers (not on the hot path)."""

    buf: Any
    peer: int
    tag: int
    message: Any = None


class Progress:
    """What a rank is waiting for right now; read by the watchdog to name a stuck step."""

    def __init__(self) -> None:
        self.what = "starting"
        self.step: int | None = None
        self.recv_from: tuple[int, ...] = ()
        self.send_to: tuple[int, ...] = ()
        self.ticks = 0
        self.source: Callable[[], tuple[int | None, tuple[int, ...], tuple[int, ...]]] | None = None
        """Set by an executor that would rather not work out its step and peers at every wait:
        :meth:`settle` asks it for them when someone reads them."""

    def waiting(self, what: str, step: int | None = None, recv_from: tuple[int, ...] = (),
                send_to: tuple[int, ...] = ()) -> None:
        self.what, self.step, self.recv_from, self.send_to = what, step, recv_from, send_to
        self.source = None
        self.ticks += 1

    def settle(self) -> None:
        """Fill in the step and peers from :attr:`source`, if one is set (the watchdog calls
        this before it names them)."""
        if self.source is not None:
            self.step, self.recv_from, self.send_to = self.source()

    def tick(self, recv_from: tuple[int, ...] | None = None,
             send_to: tuple[int, ...] | None = None) -> None:
        """Record progress; the arguments, when given, are the peers still outstanding."""
        if recv_from is not None:
            self.recv_from = recv_from
        if send_to is not None:
            self.send_to = send_to
        self.ticks += 1

    def peers(self) -> str:
        """The outstanding peers in words, for error messages."""
        parts = [f"receiving from {', '.join(map(str, self.recv_from))}" if self.recv_from else "",
                 f"sending to {', '.join(map(str, self.send_to))}" if self.send_to else ""]
        return "; ".join(p for p in parts if p) or "all ranks"


class Transport(ABC):
    """A data plane between the ranks of an MPI job (MPI itself bootstraps every transport)."""

    name: str
    rank: int
    size: int
    xp: Any
    """Array module of the buffers this transport moves (numpy or cupy)."""
    native_avg_prescaled = False
    """True where the native all-reduce's average scales the inputs before summing instead
    of dividing the exact sum once (so it is checked within a tolerance, not exactly)."""

    @abstractmethod
    def exchange(self, sends: list[Transfer], recvs: list[Transfer],
                 progress: Progress) -> Iterator[int]:
        """Post every send and receive of a step; yield each receive's index as it lands and
        return once every send has completed too. Update *progress* with the peers still
        outstanding."""

    def pair(self, send: Transfer | None, recv: Transfer | None, progress: Progress) -> None:
        """A step of at most one send and at most one receive, run to completion (every step
        of the ring and of Rabenseifner). Transports override it where skipping
        :meth:`exchange`'s generator matters: small messages are bound by per-step overhead."""
        sends, recvs = [] if send is None else [send], [] if recv is None else [recv]
        for _ in self.exchange(sends, recvs, progress):
            pass

    dataflow = False
    """Whether :meth:`start` and :meth:`completed` work: what a dataflow executor
    (:mod:`collbench.dataflow`) posts and completes single ops with."""

    def start(self, message) -> Any:
        """Post one prepared send or receive (a :meth:`message`); return the handle that
        :meth:`completed` takes. Transports that set :attr:`dataflow` implement it."""
        raise NotImplementedError(f"the {self.name} transport cannot post single ops")

    def completed(self, handles: list, block: bool) -> list[int] | None:
        """The indices of the *handles* that completed (at least one if *block*, else maybe
        none: None or empty), as MPI_Waitsome / MPI_Testsome."""
        raise NotImplementedError(f"the {self.name} transport cannot complete single ops")

    def message(self, buf, peer: int, tag: int, *, send: bool) -> Any:
        """Prepare whatever the transport needs to move *buf* to or from *peer* (called once
        per buffer, when the executor binds it; *send* says which way)."""
        return buf

    def reducer(self, ufunc: str, dtype):
        """The elementwise function ``f(a, b, out=a)`` the executor reduces with; device
        transports may return a faster kernel than the array module's ufunc."""
        return getattr(self.xp, ufunc)

    @abstractmethod
    def native_allreduce(self, sendbuf, recvbuf, op: str) -> None:
        """The library's own all-reduce; ``sendbuf is None`` means in place on *recvbuf*."""

    def barrier(self, comm) -> None:
        """The harness's barrier before each timed call, on the control communicator *comm*."""
        comm.Barrier()

    def synchronize(self) -> None:
        """Block until the device has finished queued work (no-op on the host)."""
        return None

    def counters(self) -> dict[str, int]:
        """Cumulative counts the harness records per call (``registrations``, ``hits``,
        ``misses`` of a registration cache); empty for transports that keep none."""
        return {}

    def describe(self) -> dict:
        """Facts about the transport for provenance and the table (e.g. CUDA-aware or staged)."""
        return {"transport": self.name}

    def close(self) -> None:
        """Release connections and registered memory."""
        return None
