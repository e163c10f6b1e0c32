"""MPI point-to-point transport over mpi4py, on host (numpy) or device (CuPy) buffers.

Device buffers go to MPI directly when the library says it is CUDA-aware; otherwise each
message gets a pinned host copy, made once when the executor binds its buffers, and a step
copies device -> host before its sends and host -> device as each receive lands."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

from mpi4py import MPI

from collbench import mpi_threads
from collbench.algorithms.ops import ReduceOp
from collbench.errors import CollbenchError
from collbench.launcher import each_has_a_cpu
from collbench.transports.base import Progress, Transfer, Transport

_OPS = {"sum": MPI.SUM, "prod": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX, "avg": MPI.SUM}
"""MPI's operator for each of ours; MPI has no average, so ``avg`` is MPI_SUM followed by a
division by P on every rank (:meth:`ReduceOp.finish`), timed as part of the call."""


def open(comm, config) -> MpiTransport:  # noqa: A001 - the transport factory's common name
    return MpiTransport(comm, config)


def _yielding_waitany(requests) -> int:
    """Waitany that gives the core away between polls (``sched_yield``), so that on a node
    with more ranks than cores the rank being waited for gets to run at once instead of after
    the spinning rank's time slice (MPI's own wait spins). It does not give away the core's
    *time*: where each rank is a scheduling group of its own (Linux's autogroup, with
    MPICH's launcher's session per rank) the waiting rank still gets about an equal share
    of the core beside a working one (``benchmarks/core_sharing.py`` measures it)."""
    while True:
        index, done = MPI.Request.Testany(requests)
        if done:
            return index
        os.sched_yield()


def _yielding_waitsome(requests) -> list[int] | None:
    """Waitsome that gives the core away between polls, like :func:`_yielding_waitany`."""
    while True:
        indices = MPI.Request.Testsome(requests)
        if indices or indices is None:  # None: nothing active to wait for
            return indices
        os.sched_yield()


def _yielding_waitall(requests) -> None:
    """Waitall that gives the core away between polls, like :func:`_yielding_waitany`."""
    while not MPI.Request.Testall(requests):
        os.sched_yield()


class _Message(NamedTuple):
    """What :meth:`MpiTransport.message` prepares for one buffer."""

    request: MPI.Prequest
    staging: Any = None
    """The pinned host copy the request moves, when device buffers are staged."""


def _more_ranks_than_cores(comm) -> bool:
    """Whether the ranks on this node cannot each have a core of their own, judged from every
    node-local rank's CPU mask (bound ranks have one core each, unbound ones share them all)."""
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        masks = local.allgather(sorted(os.sched_getaffinity(0)))
    finally:
        local.Free()
    return not each_has_a_cpu(masks)


def _wait_policy(comm) -> str:
    """``yield`` or ``busy``: COLLBENCH_MPI_WAIT if set, else yield only when oversubscribed."""
    policy = os.environ.get("COLLBENCH_MPI_WAIT", "auto")
    if policy not in ("auto", "yield", "busy"):
        raise CollbenchError(f"COLLBENCH_MPI_WAIT must be auto, yield or busy, not {policy!r}",
                             shared=True)
    if policy == "auto":
        policy = "yield" if _more_ranks_than_cores(comm) else "busy"
    return policy


class MpiTransport(Transport):
    """Persistent sends and receives on a private duplicate of the job's communicator,
    started together per step and completed by Waitany (or, with more ranks than cores on a
    node, by Testany and sched_yield)."""

    name = "mpi"

    def __init__(self, comm, config) -> None:
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.rank, self.comm.size
        self._device: dict | None = None
        self._staged = False
        if config.buffers == "cupy":
            from collbench import gpu

            self.xp = gpu.cupy_module(self.comm)
            state, how = gpu.mpi_cuda_support()
            self._staged = state != "yes"
            self._device = {"buffers": "cupy", "gpu": gpu.device_name(self.xp),
                            "ranks_per_gpu": gpu.shares_gpu(self.comm, self.xp),
                            "device_path": ("staged through pinned host memory" if self._staged
                                            else "CUDA-aware") + f" ({how})"}
            self._pinned: dict = {}
            self.exchange = self._exchange_device  # the host path stays free of device checks
            self.pair = functools.partial(Transport.pair, self)
            self.dataflow = False  # device buffers need stream order and staging per op
        else:
            import numpy

            self.xp = numpy
        self._tag_ub = int(self.comm.Get_attr(MPI.TAG_UB))
        self.wait = _wait_policy(self.comm)
        self._waitany = _yielding_waitany if self.wait == "yield" else MPI.Request.Waitany
        self._waitall = _yielding_waitall if self.wait == "yield" else MPI.Request.Waitall
        self._waitsome = _yielding_waitsome if self.wait == "yield" else MPI.Request.Waitsome
        self._user_types: dict[str, tuple] = {}

    def _native_buffer(self, buf, op: str) -> tuple[list | Any, MPI.Op]:
        """*buf* typed for MPI_Allreduce, and the MPI operator to use. bfloat16, which MPI
        lacks, travels as a 2-byte contiguous type reduced by a user-defined operator (the
        numpy ufunc of ml_dtypes on the received bytes), made once per operator. bfloat16 is
        the one dtype of kind ``V`` (opaque bytes) a run can ask for."""
        if buf.dtype.kind != "V":  # not ``dtype.name``, which costs microseconds on every call
            return buf, _OPS[op]
        ufunc = ReduceOp.parse(op).ufunc
        if ufunc not in self._user_types:
            element = MPI.BYTE.Create_contiguous(2).Commit()
            self._user_types[ufunc] = (element, MPI.Op.Create(_bfloat16_reduction(ufunc), commute=True))
        element, mpi_op = self._user_types[ufunc]
        return [buf, buf.size, element], mpi_op

    dataflow = True

    def start(self, message: _Message) -> MPI.Prequest:
        message.request.Start()
        return message.request

    def completed(self, handles: list, block: bool) -> list[int] | None:
        return self._waitsome(handles) if block else MPI.Request.Testsome(handles)

    def pair(self, send: Transfer | None, recv: Transfer | None, progress: Progress) -> None:
        if send is None or recv is None:
            requests = [(send or recv).message.request]
        else:
            requests = [recv.message.request, send.message.request]
        MPI.Prequest.Startall(requests)
        self._waitall(requests)
        progress.ticks += 1

    def exchange(self, sends: list[Transfer], recvs: list[Transfer],
                 progress: Progress) -> Iterator[int]:
        requests = [t.message.request for t in recvs] + [t.message.request for t in sends]
        MPI.Prequest.Startall(requests)
        outstanding, nrecv = [True] * len(requests), len(recvs)
        for _ in requests:
            index = self._waitany(requests)  # completed persistent requests are skipped
            outstanding[index] = False
            progress.tick(tuple(t.peer for t, o in zip(recvs, outstanding) if o),
                          tuple(t.peer for t, o in zip(sends, outstanding[nrecv:]) if o))
            if index < nrecv:
                yield index

    def _exchange_device(self, sends: list[Transfer], recvs: list[Transfer],
                         progress: Progress) -> Iterator[int]:
        """The step on device buffers: MPI works outside CUDA's stream order, so the kernels
        that wrote the sends (or read the receive area) must finish first; when staged, the
        sends are copied to their pinned host buffers and each receive back as it lands."""
        self.synchronize()
        if not self._staged:
            yield from self._exchange_host(sends, recvs, progress)
            return
        for t in sends:
            t.buf.get(out=t.message.staging)
        for i in self._exchange_host(sends, recvs, progress):
            recvs[i].buf.set(recvs[i].message.staging)
            yield i

    _exchange_host = exchange

    def message(self, buf, peer: int, tag: int, *, send: bool) -> _Message:
        """A persistent request (MPI_Send_init / MPI_Recv_init) for the buffer as bytes (so
        float16 travels too); a staged device buffer is replaced by its pinned host copy.
        Made once per buffer, a step then costs one MPI_Startall instead of parsing every
        buffer again, which is most of a small message's time in Python. mpi4py frees the
        request when the executor that holds it is dropped."""
        staging = self._pinned_copy(buf, key=None) if self._staged else None
        host = buf if staging is None else staging
        init = self.comm.Send_init if send else self.comm.Recv_init
        return _Message(init([host, host.nbytes, MPI.BYTE], peer, tag % self._tag_ub), staging)

    def _pinned_copy(self, buf, key):
        """A pinned host array shaped like *buf*; cached under *key* unless it is None."""
        if key is not None and key in self._pinned:
            return self._pinned[key]
        import cupyx

        host = cupyx.empty_pinned(buf.shape, dtype=buf.dtype)
        if key is not None:
            self._pinned[key] = host
        return host

    def barrier(self, comm) -> None:
        if self.wait == "yield":
            self._waitany([comm.Ibarrier()])
        else:
            comm.Barrier()

    def native_allreduce(self, sendbuf, recvbuf, op: str) -> None:
        """MPI_Allreduce; ``avg`` is MPI_SUM then a division by P on each rank, and bfloat16
        uses a user-defined operator (MPI has neither)."""
        self._native_allreduce(sendbuf, recvbuf, op)
        if op == "avg":
            ReduceOp.AVG.finish(recvbuf, self.size, self.xp)

    def _native_allreduce(self, sendbuf, recvbuf, op: str) -> None:
        if self._device is None or not self._staged:
            if self._device is not None:
                self.synchronize()
            recv, mpi_op = self._native_buffer(recvbuf, op)
            send = MPI.IN_PLACE if sendbuf is None else self._native_buffer(sendbuf, op)[0]
            self.comm.Allreduce(send, recv, op=mpi_op)
            return
        self.synchronize()
        # Staged: one pinned host buffer per size and role, made on the first call of a point
        # (the untimed first iteration) and reused afterwards.
        host_recv = self._pinned_copy(recvbuf, ("recv", recvbuf.nbytes, recvbuf.dtype.str))
        if sendbuf is None:
            recvbuf.get(out=host_recv)
            self.comm.Allreduce(MPI.IN_PLACE, host_recv, op=_OPS[op])
        else:
            host_send = self._pinned_copy(sendbuf, ("send", sendbuf.nbytes, sendbuf.dtype.str))
            sendbuf.get(out=host_send)
            self.comm.Allreduce(host_send, host_recv, op=_OPS[op])
        recvbuf.set(host_recv)

    def reducer(self, ufunc: str, dtype):
        if self._device is None:
            return getattr(self.xp, ufunc)
        from collbench.gpu import reducer

        return reducer(self.xp, ufunc, dtype)

    def synchronize(self) -> None:
        if self._device is not None:
            self.xp.cuda.get_current_stream().synchronize()

    def describe(self) -> dict:
        library = MPI.Get_library_version().replace("\0", "").strip().splitlines()[0]  # Open MPI ends in NUL
        return {"transport": self.name, "library": library, "wait": self.wait,
                "threads": mpi_threads.provided(), **(self._device or {})}

    def close(self) -> None:
        for element, mpi_op in self._user_types.values():
            element.Free()
            mpi_op.Free()
        self._user_types.clear()
        self.comm.Free()


def _bfloat16_reduction(ufunc: str):
    """An MPI user operator body: ``inout = inout <ufunc> in`` on bfloat16 elements."""
    import ml_dtypes
    import numpy

    reduce, bfloat16 = getattr(numpy, ufunc), ml_dtypes.bfloat16

    def apply(inbuf, inoutbuf, datatype) -> None:
        target = numpy.frombuffer(inoutbuf, dtype=bfloat16)
        reduce(target, numpy.frombuffer(inbuf, dtype=bfloat16), out=target)

    return apply
