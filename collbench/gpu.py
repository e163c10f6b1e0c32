"""The GPU side of collbench: CuPy, device choice per rank, and what ``doctor`` reports.

CuPy is imported here and nowhere else at module level, so a CPU-only install runs every other
command and learns, in one sentence, what is missing. Whichever CuPy build matches the node's
CUDA works (``cupy-cuda12x``, ``cupy-cuda13x``...): the code uses only what they share.

Placement: each rank uses GPU ``local_rank % visible_gpus`` of its host. Several ranks may
share a GPU for MPI with CuPy buffers (that is how a one-GPU machine tests them); NCCL forbids
two ranks on one GPU, so :func:`check_exclusive` compares the GPUs that the ranks of each host
chose (by UUID, or PCI bus id) before any NCCL call and names the ranks that collide.
"""

from __future__ import annotations

import ctypes
import os
from collections import defaultdict
from dataclasses import dataclass

from collbench.errors import CollbenchError

CUPY_HINT = ("install the CuPy build that matches this node's CUDA driver (pip install cupy-cuda13x "
             "for CUDA 13, cupy-cuda12x for CUDA 12; 'nvidia-smi' shows the driver's CUDA version)")

NCCL_HINT = "pip install nvidia-nccl-cu13 (nvidia-nccl-cu12 for CUDA 12)"

_LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK",
                         "SLURM_LOCALID", "MV2_COMM_WORLD_LOCAL_RANK", "PALS_LOCAL_RANKID")


@dataclass(frozen=True)
class Placement:
    """Where one rank runs its GPU work."""

    host: str
    rank: int
    local_rank: int
    local_size: int
    visible: int
    """GPUs this rank can see (CUDA_VISIBLE_DEVICES applied)."""
    device: int
    """Index of the chosen GPU among the visible ones."""
    gpu_id: str
    """UUID (or PCI bus id) of the chosen GPU: the same physical GPU gives the same id."""
    name: str


def import_cupy():
    """Return the ``cupy`` module; raises CollbenchError in one sentence if it cannot load."""
    try:
        import cupy
    except ImportError as e:
        if getattr(e, "name", None) == "cupy" or "No module named 'cupy'" in str(e):
            raise CollbenchError(f"CuPy is not installed, so device buffers and NCCL are not "
                                 f"available; {CUPY_HINT}, or run with --buffers numpy") from None
        raise CollbenchError(f"CuPy is installed but does not load ({_first_line(e)}); it is probably "
                             f"built for another CUDA version: {CUPY_HINT}") from None
    except Exception as e:  # a broken CUDA install can raise anything from CuPy's __init__
        raise CollbenchError(f"CuPy does not load ({_first_line(e)}); {CUPY_HINT}") from None
    return cupy


def device_count(cp) -> int:
    """Number of visible GPUs; raises CollbenchError saying why there are none."""
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, no device, driver too old for CuPy
        raise CollbenchError(f"no CUDA GPU is usable on this node ({_first_line(e)}); run on a GPU "
                             "node, check 'nvidia-smi' and CUDA_VISIBLE_DEVICES, or use --buffers "
                             "numpy with the mpi transport") from None
    if count < 1:
        raise CollbenchError("no CUDA GPU is visible on this node (CUDA reports 0 devices); run on a "
                             "GPU node, check CUDA_VISIBLE_DEVICES, or use --buffers numpy")
    return count


def local_rank(comm=None) -> tuple[int, int]:
    """``(local_rank, local_size)`` of this process on its host: from the ranks that share memory
    with it when *comm* is given, else from the launcher's environment, else ``(0, 1)``."""
    if comm is not None:
        from mpi4py import MPI

        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        try:
            return node.rank, node.size
        finally:
            node.Free()
    for name in _LOCAL_RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value), 1 + int(value)
    return 0, 1


def _gpu_id(cp, device: int) -> str:
    try:
        uuid = cp.cuda.runtime.getDeviceProperties(device).get("uuid")
        if uuid:
            return "GPU-" + bytes(uuid).hex()
    except Exception:  # older CuPy builds do not expose the UUID
        pass
    return cp.cuda.Device(device).pci_bus_id


def _gpu_name(cp, device: int) -> str:
    name = cp.cuda.runtime.getDeviceProperties(device)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def cupy_module(comm=None, exclusive: bool = False):
    """Import CuPy, choose this rank's GPU (``local_rank % visible``) and make it current.

    With *exclusive* (NCCL), every rank must have a GPU of its own; *comm* is then required and
    :func:`check_exclusive` runs over it. Raises CollbenchError in one sentence when CuPy or a
    GPU is missing, or when ranks would share a GPU that must not be shared."""
    cp = import_cupy()
    placement = place(cp, comm)
    if exclusive:
        if comm is None:
            raise ValueError("an exclusive GPU placement needs the communicator")
        check_exclusive(comm.allgather(placement))
    return cp


def place(cp, comm=None) -> Placement:
    """Choose and activate this rank's GPU; return where it is."""
    visible = device_count(cp)
    lrank, lsize = local_rank(comm)
    device = lrank % visible
    cp.cuda.Device(device).use()
    host = _hostname(comm)
    return Placement(host, comm.rank if comm is not None else 0, lrank, lsize, visible, device,
                     _gpu_id(cp, device), _gpu_name(cp, device))


def _hostname(comm) -> str:
    if comm is not None:
        from mpi4py import MPI

        return MPI.Get_processor_name()
    import socket

    return socket.gethostname()


def check_exclusive(placements: list[Placement]) -> None:
    """Raise CollbenchError unless every rank has a physical GPU of its own (NCCL's rule).

    Two cases get their own sentence: a host that runs more ranks than it has GPUs, and ranks
    that chose the same GPU although the host has enough (a CUDA_VISIBLE_DEVICES mistake)."""
    by_host: defaultdict[str, list[Placement]] = defaultdict(list)
    for p in placements:
        by_host[p.host].append(p)
    for host, ranks in sorted(by_host.items()):
        users: defaultdict[str, list[int]] = defaultdict(list)
        for p in ranks:
            users[p.gpu_id].append(p.rank)
        shared = {gpu: r for gpu, r in users.items() if len(r) > 1}
        if not shared:
            continue
        gpus = max(max(p.visible for p in ranks), len(users))
        if len(ranks) > gpus:
            raise CollbenchError(
                f"host {host} runs {len(ranks)} ranks but has only {gpus} GPU(s) for them, and NCCL "
                f"forbids two ranks on one GPU: start at most {gpus} rank(s) per node for the nccl "
                "transport (or use --transport mpi --buffers cupy, where ranks may share a GPU)")
        gpu, ranks_on_it = sorted(shared.items())[0]
        raise CollbenchError(
            f"ranks {', '.join(map(str, ranks_on_it))} on host {host} would all use GPU {gpu}, and NCCL "
            "forbids two ranks on one GPU: give each rank its own GPU (check CUDA_VISIBLE_DEVICES, "
            "or use --gpus-per-task=1 under Slurm)")


def shares_gpu(comm, cp) -> int:
    """Largest number of ranks of *comm* that use one physical GPU (1 = no sharing)."""
    me = (_hostname(comm), _gpu_id(cp, cp.cuda.Device().id))
    counts: defaultdict[tuple, int] = defaultdict(int)
    for key in comm.allgather(me):
        counts[key] += 1
    return max(counts.values())


def device_name(cp) -> str:
    return _gpu_name(cp, cp.cuda.Device().id)


# --- a reduction kernel that keeps up with memory ----------------------------------------

_REDUCE_SOURCE = r"""
#define UNROLL 8
extern "C" __global__ void collbench_reduce(T* __restrict__ a, const T* __restrict__ b, long long n) {
    // Each thread loads UNROLL coalesced elements of a and b before it computes and stores,
    // so that enough loads are in flight for any element size (float16 included).
    const long long step = blockDim.x;
    for (long long base = (long long)blockIdx.x * step * UNROLL + threadIdx.x; base < n;
         base += (long long)gridDim.x * step * UNROLL) {
        T x[UNROLL], y[UNROLL];
#pragma unroll
        for (int j = 0; j < UNROLL; ++j) {
            long long k = base + j * step;
            if (k < n) { x[j] = a[k]; y[j] = b[k]; }
        }
#pragma unroll
        for (int j = 0; j < UNROLL; ++j) {
            long long k = base + j * step;
            if (k < n) a[k] = OP(x[j], y[j]);
        }
    }
}
"""

_PAIRS_SOURCE = r"""
#define UNROLL 8
extern "C" __global__ void collbench_reduce_pairs(__half* __restrict__ a, const __half* __restrict__ b,
                                                  long long n, int head) {
    // a + head and b + head are 4-byte aligned: reduce __half2 pairs there (4-byte loads, as
    // fast as float32), and the odd element at either end one at a time.
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        if (head) a[0] = OP(a[0], b[0]);
        if ((n - head) % 2) a[n - 1] = OP(a[n - 1], b[n - 1]);
    }
    const long long pairs = (n - head) / 2, step = blockDim.x;
    __half2* a2 = (__half2*)(a + head);
    const __half2* b2 = (const __half2*)(b + head);
    for (long long base = (long long)blockIdx.x * step * UNROLL + threadIdx.x; base < pairs;
         base += (long long)gridDim.x * step * UNROLL) {
        __half2 x[UNROLL], y[UNROLL];
#pragma unroll
        for (int j = 0; j < UNROLL; ++j) {
            long long k = base + j * step;
            if (k < pairs) { x[j] = a2[k]; y[j] = b2[k]; }
        }
#pragma unroll
        for (int j = 0; j < UNROLL; ++j) {
            long long k = base + j * step;
            if (k < pairs) a2[k] = OP2(x[j], y[j]);
        }
    }
}
"""
_PAIR_EXPRESSIONS = {"add": "__hadd2(x, y)", "multiply": "__hmul2(x, y)",
                     "minimum": "__hmin2_nan(x, y)", "maximum": "__hmax2_nan(x, y)"}

_CTYPES = {"float16": "__half", "float32": "float", "float64": "double", "int32": "int",
           "int64": "long long"}
_EXPRESSIONS = {"add": "((x) + (y))", "multiply": "((x) * (y))",  # NaN propagates as in numpy:
                "minimum": "(((x) != (x) || (x) < (y)) ? (x) : (y))",
                "maximum": "(((x) != (x) || (x) > (y)) ? (x) : (y))"}
_THREADS, _UNROLL = 256, 8


def reducer(cp, ufunc: str, dtype):
    """A callable ``f(a, b, out=a)`` that does what ``getattr(cupy, ufunc)`` does on contiguous
    1-d arrays of *dtype*, with a kernel that issues several loads per thread (and, for float16
    whose operands share their 4-byte alignment, loads ``__half2`` pairs): CuPy's generic
    elementwise kernel reaches only about 40% of the copy bandwidth on float16 and 84% on
    float32 (H100). Anything else (strided views, other dtypes) goes to the CuPy ufunc."""
    import numpy

    name, fallback = numpy.dtype(dtype).name, getattr(cp, ufunc)
    if name not in _CTYPES or ufunc not in _EXPRESSIONS:
        return fallback
    source = (("#include <cuda_fp16.h>\n" if name == "float16" else "")
              + f"#define T {_CTYPES[name]}\n#define OP(x, y) {_EXPRESSIONS[ufunc]}\n" + _REDUCE_SOURCE)
    kernel = cp.RawKernel(source, "collbench_reduce", options=("-std=c++17",))
    pairs = None
    if name == "float16":
        pairs = cp.RawKernel(source.replace(_REDUCE_SOURCE, "") + f"#define OP2(x, y) "
                             f"{_PAIR_EXPRESSIONS[ufunc]}\n" + _PAIRS_SOURCE,
                             "collbench_reduce_pairs", options=("-std=c++17",))
    try:
        kernel.compile()
        if pairs is not None:
            pairs.compile()
    except Exception:  # no NVRTC or no fp16 header: CuPy's own kernel still works
        return fallback
    most_blocks = 32 * cp.cuda.Device().attributes["MultiProcessorCount"]
    per_block = _THREADS * _UNROLL

    def reduce(a, b, out=None):
        if out is not a or a.dtype != b.dtype or a.size != b.size or not (
                a.flags.c_contiguous and b.flags.c_contiguous):
            return fallback(a, b, out=out)
        n = a.size
        if not n:
            return a
        if pairs is not None and (a.data.ptr - b.data.ptr) % 4 == 0:
            head = a.data.ptr % 4 // 2
            blocks = min(most_blocks, -(-(n // 2) // per_block) or 1)
            pairs((blocks,), (_THREADS,), (a, b, numpy.int64(n), numpy.int32(head)))
        else:
            kernel((min(most_blocks, -(-n // per_block)),), (_THREADS,), (a, b, numpy.int64(n)))
        return a

    return reduce


# --- CUDA-awareness of the MPI library ----------------------------------------------------

def mpi_cuda_support() -> tuple[str, str]:
    """Whether the loaded MPI library moves device buffers: ``("yes"|"no"|"unknown", how)``.

    In order: the user's word (``COLLBENCH_MPI_CUDA_AWARE=1|0``), the library's own answer
    (``MPIX_Query_cuda_support``, which MPICH and Open MPI export; read through ctypes since
    mpi4py does not wrap it), then the libraries' documented switches in the environment."""
    forced = os.environ.get("COLLBENCH_MPI_CUDA_AWARE", "").strip().lower()
    if forced in ("1", "yes", "true"):
        return "yes", "COLLBENCH_MPI_CUDA_AWARE=1"
    if forced in ("0", "no", "false"):
        return "no", "COLLBENCH_MPI_CUDA_AWARE=0"
    answer = _query_cuda_support()
    if answer is not None:
        return ("yes" if answer else "no"), "MPIX_Query_cuda_support"
    env = os.environ
    for name, on in (("MPICH_GPU_SUPPORT_ENABLED", "1"), ("MV2_USE_CUDA", "1"),
                     ("OMPI_MCA_opal_cuda_support", "true"), ("MPIR_CVAR_ENABLE_GPU", "1")):
        if env.get(name, "").lower() == on:
            return "unknown", f"{name}={env[name]} is set, but the library cannot be asked"
    return "unknown", "the library exports no MPIX_Query_cuda_support"


def _query_cuda_support() -> bool | None:
    """``MPIX_Query_cuda_support()`` of the MPI library mpi4py loaded, or None if absent."""
    try:
        from mpi4py import MPI

        if not MPI.Is_initialized() or MPI.Is_finalized():
            return None
    except Exception:
        return None
    for path in _loaded_mpi_libraries():
        try:
            function = ctypes.CDLL(path).MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_int
        function.argtypes = []
        return bool(function())
    return None


def _loaded_mpi_libraries() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libmpi" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libmpi"))


# --- doctor ---------------------------------------------------------------------------------

Line = tuple[bool, str, str]


def _driver_cuda_version() -> str | None:
    """The CUDA version the installed driver supports, read from libcuda without CuPy."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
        return _cuda_version(version.value)
    except (OSError, AttributeError):
        return None


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{value % 1000 // 10}"


def _cupy_distribution() -> str:
    from importlib import metadata

    names = sorted({d.metadata["Name"] for d in metadata.distributions()
                    if (d.metadata["Name"] or "").lower().startswith("cupy")})
    return ", ".join(names) or "cupy"


def probe() -> list[Line]:
    """``collbench doctor`` lines for the GPU stack: CuPy, GPUs, CUDA, NCCL, CUDA-aware MPI."""
    lines: list[Line] = []
    try:
        cp = import_cupy()
    except CollbenchError as e:
        driver = _driver_cuda_version()
        where = (f"the driver supports CUDA {driver}" if driver else
                 "no NVIDIA driver (libcuda) was found either")
        lines.append((False, "cupy", f"{e} ({where})"))
        lines.append((False, "nccl", "needs CuPy: the nccl transport is not available"))
        return lines
    lines.append((True, "cupy", f"{cp.__version__} ({_cupy_distribution()})"))
    try:
        count = device_count(cp)
    except CollbenchError as e:
        lines.append((False, "gpu", str(e)))
        lines.append((False, "nccl", "no GPU: the nccl transport is not available"))
        return lines
    rt = cp.cuda.runtime
    lines.append((True, "cuda", f"runtime {_cuda_version(rt.runtimeGetVersion())}, driver supports "
                                f"{_cuda_version(rt.driverGetVersion())}"))
    for i in range(count):
        props = rt.getDeviceProperties(i)
        lines.append((True, f"gpu {i}", f"{_gpu_name(cp, i)}, {props['totalGlobalMem'] / 2**30:.1f} GiB, "
                                        f"compute {props['major']}.{props['minor']}, "
                                        f"PCI {cp.cuda.Device(i).pci_bus_id}"))
    lines.append(_probe_nccl())
    state, how = mpi_cuda_support()
    detail = {"yes": "CUDA-aware: device buffers go to MPI directly",
              "no": "not CUDA-aware: --buffers cupy stages through pinned host memory",
              "unknown": "unknown: --buffers cupy stages through pinned host memory (set "
                         "COLLBENCH_MPI_CUDA_AWARE=1 to pass device pointers)"}[state]
    lines.append((state == "yes", "mpi+cuda", f"{detail} ({how})"))
    return lines


def _probe_nccl() -> Line:
    try:
        from cupy.cuda import nccl
    except Exception as e:
        return False, "nccl", f"CuPy cannot load NCCL ({_first_line(e)}); {NCCL_HINT}"
    if not getattr(nccl, "available", True):
        return False, "nccl", f"CuPy found no NCCL library; {NCCL_HINT}"
    try:
        return True, "nccl", nccl_version(nccl)
    except Exception as e:
        return False, "nccl", f"NCCL does not answer ({_first_line(e)})"


def nccl_version(nccl) -> str:
    """NCCL's version code as text: 22703 -> 2.27.3 (before 2.9: 2708 -> 2.7.8)."""
    v = nccl.get_version()
    if v >= 10000:
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return f"{v // 1000}.{v // 100 % 10}.{v % 100}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
