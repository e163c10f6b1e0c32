"""The GPU path: NCCL through CuPy, CuPy buffers over MPI, verification on the device.

Tests marked ``gpu`` skip with the reason (``pytest -rs`` or ``-v`` prints it) where CuPy or a
GPU is missing; the placement rules and the one-sentence errors for a missing CuPy run
everywhere. On a one-GPU machine NCCL runs one rank (NCCL forbids two ranks on one GPU, which
is itself tested), and MPI with CuPy buffers runs 2-4 ranks sharing the GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from collbench.algorithms.ops import DTYPES, ReduceOp

from collbench import gpu
from collbench.config import make_config
from collbench.errors import CollbenchError

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("naive", "ring", "rabenseifner", "native")

GPU_DTYPES = tuple(d for d in DTYPES if d != "bfloat16")
"""CuPy has no bfloat16 arrays: collbench refuses bfloat16 on device buffers."""


def _why_no_gpu() -> str | None:
    try:
        gpu.device_count(gpu.import_cupy())
    except CollbenchError as e:
        return str(e)
    return None


WHY_NO_GPU = _why_no_gpu()


def _mpiexec() -> str | None:
    here = str(Path(sys.executable).parent)  # the mpich wheel puts mpiexec beside python
    return shutil.which("mpiexec", path=f"{here}:{os.environ.get('PATH', '')}")


MPIEXEC = _mpiexec()
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on the PATH")


def _collbench(nranks: int, args: list[str], tmp_path: Path, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """``mpiexec -n nranks python -m collbench run ARGS`` from the repository, any MPI."""
    environment = {**os.environ, **(env or {}),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                   "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                   "PYTHONUNBUFFERED": "1"}
    launcher = [MPIEXEC, "-n", str(nranks)] if MPIEXEC else []
    command = [*launcher, sys.executable, "-m", "collbench", "run", *args,
               "--out", str(tmp_path / "results"), "--no-progress"]
    environment = {k: v for k, v in environment.items() if v is not None}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env=environment, cwd=tmp_path)
    print(result.stdout, result.stderr, sep="\n")  # shown by pytest when a test fails
    return result


# --- everywhere: placement rules and the sentences for what is missing ----------------------

def _placement(host, rank, visible, gpu_id, local_rank=0):
    return gpu.Placement(host, rank, local_rank, 0, visible, 0, gpu_id, "GPU")


def test_exclusive_placement_accepts_one_gpu_per_rank():
    gpu.check_exclusive([_placement("a", 0, 2, "g0"), _placement("a", 1, 2, "g1"),
                         _placement("b", 2, 1, "g0"), _placement("b", 3, 1, "g1")])


def test_more_ranks_than_gpus_on_a_host_is_one_sentence():
    with pytest.raises(CollbenchError, match=r"host a runs 2 ranks but has only 1 GPU\(s\).*"
                                             r"NCCL forbids two ranks on one GPU") as info:
        gpu.check_exclusive([_placement("a", 0, 1, "g0"), _placement("a", 1, 1, "g0"),
                             _placement("b", 2, 1, "g0")])
    assert "\n" not in str(info.value)


def test_two_ranks_choosing_one_gpu_of_several_is_named():
    # CUDA_VISIBLE_DEVICES=0,1 for rank 0 and 1,0 for rank 1: both pick physical GPU 0.
    with pytest.raises(CollbenchError, match=r"ranks 0, 1 on host a would all use GPU g0.*"
                                             r"CUDA_VISIBLE_DEVICES"):
        gpu.check_exclusive([_placement("a", 0, 2, "g0"), _placement("a", 1, 2, "g0", 1)])


@pytest.fixture
def no_cupy(monkeypatch):
    """Make ``import cupy`` fail as it does where CuPy is not installed."""
    for name in [m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "cupyx"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cupy", None)


def test_missing_cupy_is_one_sentence(no_cupy):
    with pytest.raises(CollbenchError, match="CuPy is not installed.*cupy-cuda13x.*cupy-cuda12x"):
        gpu.cupy_module()


def test_nccl_transport_without_cupy_says_so(no_cupy):
    from collbench.transports import open_transport

    config = make_config({"transport": "nccl"})
    with pytest.raises(CollbenchError, match="CuPy is not installed"):
        open_transport("nccl", SimpleNamespace(rank=0, size=1), config)


def test_doctor_explains_a_missing_cupy(no_cupy):
    lines = gpu.probe()
    assert lines[0][:2] == (False, "cupy") and "not installed" in lines[0][2]
    assert any(label == "nccl" and not ok for ok, label, _ in lines)


def test_doctor_gpu_lines_never_raise():
    lines = gpu.probe()
    assert lines and all(isinstance(ok, bool) and label and detail for ok, label, detail in lines)
    if WHY_NO_GPU is None:
        labels = {label for _, label, _ in lines}
        assert {"cupy", "cuda", "gpu 0", "nccl", "mpi+cuda"} <= labels


def test_mpi_cuda_awareness_is_asked_or_admitted_unknown(monkeypatch):
    pytest.importorskip("mpi4py")
    monkeypatch.setenv("COLLBENCH_MPI_CUDA_AWARE", "0")
    assert gpu.mpi_cuda_support()[0] == "no"
    monkeypatch.setenv("COLLBENCH_MPI_CUDA_AWARE", "1")
    assert gpu.mpi_cuda_support()[0] == "yes"
    monkeypatch.delenv("COLLBENCH_MPI_CUDA_AWARE")
    from mpi4py import MPI  # noqa: F401 - initialises MPI, so the library can be asked

    state, how = gpu.mpi_cuda_support()
    assert state in ("yes", "no", "unknown") and how


# --- on a GPU: NCCL at one rank, in this process ---------------------------------------------

@pytest.fixture(scope="module")
def nccl_transport():
    if WHY_NO_GPU is not None:
        pytest.skip(f"no usable GPU: {WHY_NO_GPU}")
    from mpi4py import MPI

    from collbench.transports import open_transport

    transport = open_transport("nccl", MPI.COMM_SELF, make_config({"transport": "nccl"}))
    yield transport
    transport.close()


def _runner(transport, algorithm, dtype, op, size_bytes, in_place):
    from collbench.harness import Point, PointRunner
    from collbench.transports.base import Progress

    config = make_config({"transport": transport.name, "datatype": dtype, "op": op,
                          "buffers": "cupy", "algorithms": algorithm})
    return PointRunner(config, transport, Point(algorithm, size_bytes, in_place), Progress())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("op", [o.value for o in ReduceOp])
def test_nccl_one_rank_every_algorithm(nccl_transport, dtype, op):
    import cupy

    for algorithm in ALGORITHMS:
        for size in (8, 4096, (1 << 20) + 24):
            for in_place in (False, True):
                runner = _runner(nccl_transport, algorithm, dtype, op, size, in_place)
                assert isinstance(runner.recv, cupy.ndarray)
                assert runner.count_wrong(seed=1) == 0, (algorithm, size, in_place)


@pytest.mark.gpu
def test_nccl_point_to_point_moves_bytes(nccl_transport):
    """NCCL lets a rank send to itself: the exchange path works even on one GPU."""
    import cupy

    from collbench.transports.base import Progress, Transfer

    t = nccl_transport
    sources = [cupy.arange(n, dtype=cupy.float16) + k for k, n in enumerate((1, 1000, 33333))]
    targets = [cupy.zeros_like(s) for s in sources]
    sends = [Transfer(s, 0, i, t.message(s, 0, i, send=True)) for i, s in enumerate(sources)]
    recvs = [Transfer(r, 0, i, t.message(r, 0, i, send=False)) for i, r in enumerate(targets)]
    assert list(t.exchange(sends, recvs, Progress())) == [0, 1, 2]
    for r in targets:  # a reduction enqueued after the exchange sees the received data
        cupy.add(r, r, out=r)
    t.synchronize()
    for s, r in zip(sources, targets):
        assert bool((r == 2 * s).all())


@pytest.mark.gpu
def test_device_verification_catches_a_planted_error(nccl_transport, monkeypatch):
    runner = _runner(nccl_transport, "native", "float32", "sum", 1 << 16, in_place=False)
    real = nccl_transport.native_allreduce

    def corrupting(sendbuf, recvbuf, op):
        real(sendbuf, recvbuf, op)
        recvbuf[12345] += 1  # on the device, on the transport's stream

    monkeypatch.setattr(nccl_transport, "native_allreduce", corrupting)
    assert runner.count_wrong(seed=1) == 1
    monkeypatch.undo()
    assert runner.count_wrong(seed=2) == 0


@pytest.mark.gpu
def test_nccl_transport_describes_itself(nccl_transport):
    facts = nccl_transport.describe()
    assert facts["transport"] == "nccl" and facts["nccl"][0].isdigit() and facts["gpu"]


# --- on a GPU: whole runs through the command line ---------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(WHY_NO_GPU is not None, reason=f"no usable GPU: {WHY_NO_GPU}")
def test_nccl_run_one_rank_all_algorithms(tmp_path):
    result = _collbench(1, ["--transport", "nccl", "--algorithms", ",".join(ALGORITHMS), "-b", "8",
                            "-e", "4M", "-f", "16", "-n", "3", "-w", "1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "transport nccl" in result.stdout and "stream synchronisation" in result.stdout
    assert result.stdout.count("\n ") >= 4 * 2 * 3  # algorithms x modes x sizes rows


@pytest.mark.gpu
@pytest.mark.skipif(WHY_NO_GPU is not None, reason=f"no usable GPU: {WHY_NO_GPU}")
@needs_mpiexec
def test_two_nccl_ranks_on_one_gpu_is_one_sentence(tmp_path):
    import cupy

    if cupy.cuda.runtime.getDeviceCount() > 1:
        pytest.skip("this node has several GPUs; the test needs two ranks forced onto one")
    result = _collbench(2, ["--transport", "nccl", "--algorithms", "ring", "-b", "8", "-e", "8"], tmp_path,
                        timeout=120)
    assert result.returncode != 0
    assert "NCCL forbids two ranks on one GPU" in result.stderr
    assert "Traceback" not in result.stderr


MPI_CUPY_CASES = [  # (ranks, dtype, op, COLLBENCH_MPI_CUDA_AWARE or None for the library's word)
    (2, "float32", "sum", None),
    (3, "int64", "max", None),
    (4, "float64", "prod", None),
    (2, "int32", "min", "0"),
    (3, "float32", "sum", "0"),
    (4, "float32", "sum", "0"),
    (3, "float16", "avg", None),  # MPI_SUM, then the division on the device
    (3, "uint8", "avg", "0"),
]


@pytest.mark.gpu
@pytest.mark.skipif(WHY_NO_GPU is not None, reason=f"no usable GPU: {WHY_NO_GPU}")
@needs_mpiexec
@pytest.mark.parametrize("nranks,dtype,op,aware", MPI_CUPY_CASES)
def test_mpi_with_cupy_buffers(tmp_path, nranks, dtype, op, aware):
    env = {"COLLBENCH_MPI_CUDA_AWARE": aware}  # None: ask the library
    result = _collbench(nranks, ["--buffers", "cupy", "--algorithms", ",".join(ALGORITHMS), "-d", dtype,
                                 "-o", op, "-b", "8", "-e", "1M", "-f", "32", "-n", "3", "-w", "1",
                                 "-c", "2"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert "buffers=cupy" in header and "ranks_per_gpu=" in header
    assert ("staged through pinned host memory" in header) if aware == "0" else "device_path=" in header


@pytest.mark.gpu
@pytest.mark.skipif(WHY_NO_GPU is not None, reason=f"no usable GPU: {WHY_NO_GPU}")
@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_reducer_matches_cupy(dtype):
    """collbench.gpu.reducer computes what CuPy's ufunc computes, at any length and offset."""
    import cupy
    import numpy
    from collbench.algorithms.data import make_input

    for op in ReduceOp:
        fast = gpu.reducer(cupy, op.ufunc, dtype)
        cases = [(count, offset, offset + shift) for count, offset in
                 ((1, 0), (2, 1), (7, 3), (2049, 1), ((1 << 20) + 3, 5), ((1 << 20) + 4, 0))
                 for shift in (0, 1)]  # same alignment, and a and b one element apart
        for count, offset, offset_b in cases:
            a = make_input(0, 3, count + offset, dtype, op, seed=1, xp=cupy)[offset:]
            b = make_input(1, 3, count + offset_b, dtype, op, seed=1, xp=cupy)[offset_b:]
            expected = getattr(cupy, op.ufunc)(a, b)
            assert fast(a, b, out=a) is a
            assert bool((a == expected).all()), (op, count, offset)
    if numpy.dtype(dtype).kind == "f":  # NaN propagates as in numpy
        for ufunc in ("minimum", "maximum"):
            a = cupy.asarray([numpy.nan, 1, 2], dtype=dtype)
            b = cupy.asarray([1, numpy.nan, 3], dtype=dtype)
            gpu.reducer(cupy, ufunc, dtype)(a, b, out=a)
            assert bool(cupy.isnan(a[:2]).all()) and float(a[2]) == (2 if ufunc == "minimum" else 3)
    strided = cupy.ones(10, dtype=dtype)[::2]  # not contiguous: CuPy's ufunc does it
    gpu.reducer(cupy, "add", dtype)(strided, strided, out=strided)
    assert bool((strided == 2).all())
