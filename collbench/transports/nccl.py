"""NCCL transport through CuPy: point-to-point for the schedules, ``ncclAllReduce`` as native.

One communicator and one CUDA stream per rank. MPI bootstraps it (the unique id is broadcast
over the job's communicator) and, before that, checks that no two ranks share a GPU, which
NCCL forbids. The stream is made CuPy's current stream for the life of the transport, so the
executor's reductions (``xp.add(a, b, out=a)``...) and the harness's copies are enqueued on it,
in order behind the receives: a step is ``groupStart``, every send and receive, ``groupEnd``,
and no host synchronisation until :meth:`synchronize` at the end of the timed call.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy

from collbench.errors import CollbenchError
from collbench.transports.base import Progress, Transfer, Transport


def open(comm, config) -> NcclTransport:  # noqa: A001 - the transport factory's common name
    return NcclTransport(comm, config)


_NCCL_AVG = 4
"""ncclAvg in nccl.h (NCCL 2.10 and later); older CuPy builds do not name it."""


class NcclTransport(Transport):
    """NCCL point-to-point and all-reduce on CuPy device buffers."""

    name = "nccl"
    native_avg_prescaled = True
    """ncclAvg multiplies each floating-point input by 1/P before summing, so its result can
    differ from sum-then-divide in the last bits; the harness checks it within a tolerance."""

    def __init__(self, comm, config) -> None:
        from collbench import gpu

        self.rank, self.size = comm.rank, comm.size
        cp = gpu.cupy_module(comm, exclusive=True)  # one sentence if no GPU or a shared one
        nccl = _import_nccl()
        self.xp, self._nccl = cp, nccl
        names = {
            "float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
            "int8": nccl.NCCL_INT8, "uint8": nccl.NCCL_UINT8, "int32": nccl.NCCL_INT32,
            "uint32": nccl.NCCL_UINT32, "int64": nccl.NCCL_INT64, "uint64": nccl.NCCL_UINT64,
        }
        # keyed by dtype object: ``dtype.name`` costs microseconds on every call
        self._dtypes = {numpy.dtype(name): value for name, value in names.items()}
        self._ops = {"sum": nccl.NCCL_SUM, "prod": nccl.NCCL_PROD, "min": nccl.NCCL_MIN,
                     "max": nccl.NCCL_MAX, "avg": getattr(nccl, "NCCL_AVG", _NCCL_AVG)}
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = comm.bcast(uid, root=0)
        try:
            self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        except Exception as e:
            raise CollbenchError(f"NCCL could not create its communicator on rank {self.rank} "
                                 f"({e}); run with NCCL_DEBUG=INFO for NCCL's own account") from None
        self.stream = cp.cuda.Stream(non_blocking=True)
        self._previous_stream = cp.cuda.get_current_stream()
        self.stream.use()  # the executor's reductions land on this stream too
        self._ptr = self.stream.ptr
        self._gpu = gpu.device_name(cp)
        self._version = gpu.nccl_version(nccl)

    def message(self, buf, peer: int, tag: int, *, send: bool) -> tuple[int, int]:
        """Device pointer and length in bytes (NCCL matches p2p messages by order, not tag)."""
        return buf.data.ptr, buf.nbytes

    def exchange(self, sends: list[Transfer], recvs: list[Transfer],
                 progress: Progress) -> Iterator[int]:
        nccl, comm, stream, uint8 = self._nccl, self.comm, self._ptr, self._nccl.NCCL_UINT8
        nccl.groupStart()
        try:
            for t in recvs:
                comm.recv(t.message[0], t.message[1], uint8, t.peer, stream)
            for t in sends:
                comm.send(t.message[0], t.message[1], uint8, t.peer, stream)
        finally:
            nccl.groupEnd()
        # Everything is queued on the stream; the reductions the executor enqueues next run
        # after the receives, so each receive has "landed" as far as the stream is concerned.
        progress.tick(())
        yield from range(len(recvs))

    def native_allreduce(self, sendbuf, recvbuf, op: str) -> None:
        source = recvbuf if sendbuf is None else sendbuf
        self.comm.allReduce(source.data.ptr, recvbuf.data.ptr, recvbuf.size,
                            self._dtypes[recvbuf.dtype], self._ops[op], self._ptr)

    def reducer(self, ufunc: str, dtype):
        from collbench.gpu import reducer

        return reducer(self.xp, ufunc, dtype)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def describe(self) -> dict:
        return {"transport": self.name, "nccl": self._version, "gpu": self._gpu,
                "timing": "stream synchronisation"}

    def close(self) -> None:
        comm, self.comm = getattr(self, "comm", None), None
        if comm is not None:
            self.stream.synchronize()
            self._previous_stream.use()
            comm.destroy()


def _import_nccl():
    try:
        from cupy.cuda import nccl
    except Exception as e:
        raise CollbenchError(f"CuPy cannot load NCCL ({e}); install it with pip install "
                             "nvidia-nccl-cu13 (or nvidia-nccl-cu12 for CUDA 12)") from None
    if not getattr(nccl, "available", True):
        raise CollbenchError("CuPy found no NCCL library; install it with pip install nvidia-nccl-cu13 "
                             "(or nvidia-nccl-cu12 for CUDA 12)")
    return nccl
