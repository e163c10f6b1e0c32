"""MPI point-to-point transport over mpi4py, on host (numpy) or, when the library is
CUDA-aware, device (CuPy) buffers."""

from __future__ import annotations

from collections.abc import Iterator

from mpi4py import MPI

from collbench.transports.base import Progress, Transfer, Transport

_OPS = {"sum": MPI.SUM, "prod": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX}


def open(comm, config) -> MpiTransport:  # noqa: A001 - the transport factory's common name
    return MpiTransport(comm, config)


class MpiTransport(Transport):
    """Isend/Irecv on a private duplicate of the job's communicator, completed by Waitany."""

    name = "mpi"

    def __init__(self, comm, config) -> None:
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.rank, self.comm.size
        if config.buffers == "cupy":
            from collbench.gpu import cupy_module

            self.xp = cupy_module()
        else:
            import numpy

            self.xp = numpy
        self._tag_ub = int(self.comm.Get_attr(MPI.TAG_UB))

    def exchange(self, sends: list[Transfer], recvs: list[Transfer],
                 progress: Progress) -> Iterator[int]:
        if len(sends) == 1 and len(recvs) == 1:
            # The ring and Rabenseifner case: one blocking call instead of four.
            send, recv = sends[0].message, recvs[0].message
            self.comm.Sendrecv(send[0], send[1], send[2], recv[0], recv[1], recv[2])
            yield 0
            return
        requests = [self.comm.Irecv(*t.message) for t in recvs]
        requests += [self.comm.Isend(*t.message) for t in sends]
        peers = [t.peer for t in recvs] + [t.peer for t in sends]
        remaining = len(requests)
        while remaining:
            progress.tick(tuple(p for p, r in zip(peers, requests) if r))
            index = MPI.Request.Waitany(requests)
            remaining -= 1
            if index < len(recvs):
                yield index
        progress.tick(())

    def message(self, buf, peer: int, tag: int) -> tuple:
        """Arguments of Isend/Irecv: the buffer as bytes (so float16 travels too), peer, tag."""
        return ([buf, buf.nbytes, MPI.BYTE], peer, tag % self._tag_ub)

    def native_allreduce(self, sendbuf, recvbuf, op: str) -> None:
        self.comm.Allreduce(MPI.IN_PLACE if sendbuf is None else sendbuf, recvbuf, op=_OPS[op])

    def describe(self) -> dict:
        return {"transport": self.name, "library": MPI.Get_library_version().strip().splitlines()[0]}

    def close(self) -> None:
        self.comm.Free()
