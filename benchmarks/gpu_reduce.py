"""Throughput of the executor's reduction kernel against the GPU's copy bandwidth.

The executor reduces with ``getattr(xp, ufunc)(a, b, out=a)``: two reads and one write per
element. A device-to-device copy is one read and one write. Both are memory-bound, so the
reduction should move bytes about as fast as a copy: the target is at least 80% of the copy
bandwidth, counting bytes read and written. Timed with CUDA events around *reps* launches
after warm-ups, best of *trials*.

    python benchmarks/gpu_reduce.py [--mib 256] [--reps 20]
"""

from __future__ import annotations

import argparse
import datetime

OPS = ("add", "multiply", "minimum", "maximum")
DTYPES = ("float16", "float32", "float64", "int32", "int64")


def seconds_per_call(cp, fn, reps: int, trials: int = 5, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(trials):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(reps):
            fn()
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3 / reps)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="buffer size in MiB (default 256)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--sweep", action="store_true", help="also sweep sizes for float32 add")
    args = parser.parse_args(argv)
    from collbench import gpu

    cp = gpu.cupy_module()
    nbytes = args.mib << 20
    print(f"# {gpu.device_name(cp)}, CuPy {cp.__version__}, CUDA runtime "
          f"{cp.cuda.runtime.runtimeGetVersion()}, {datetime.date.today().isoformat()}")
    a = cp.ones(nbytes, dtype=cp.uint8)
    b = cp.ones(nbytes, dtype=cp.uint8)
    memcpy = seconds_per_call(cp, lambda: b.data.copy_from_device_async(a.data, nbytes), args.reps)
    kernel = seconds_per_call(cp, lambda: cp.copyto(b.view(cp.float32), a.view(cp.float32)), args.reps)
    copy_bw = 2 * nbytes / memcpy
    print(f"copy {args.mib} MiB: cudaMemcpy D2D {copy_bw / 1e9:8.1f} GB/s, "
          f"copy kernel (cupy.copyto float32) {2 * nbytes / kernel / 1e9:8.1f} GB/s "
          "(bytes read + written)")
    print("reduction a = ufunc(a, b): 3 bytes moved per byte of a; 'cupy' is getattr(cupy, ufunc)(a, b, "
          "out=a) as the executor calls it, 'collbench' is collbench.gpu.reducer")
    print(f"{'dtype':>8} {'ufunc':>9} {'kernel':>10} {'time(us)':>10} {'GB/s':>8} {'of copy':>8}")
    worst = {"cupy": 1.0, "collbench": 1.0}
    for dtype in DTYPES:
        x, y = a.view(dtype), b.view(dtype)
        for ufunc in OPS:
            for kind, reduce in (("cupy", getattr(cp, ufunc)), ("collbench", gpu.reducer(cp, ufunc, dtype))):
                t = seconds_per_call(cp, lambda reduce=reduce, x=x, y=y: reduce(x, y, out=x), args.reps)
                bw = 3 * nbytes / t
                worst[kind] = min(worst[kind], bw / copy_bw)
                print(f"{dtype:>8} {ufunc:>9} {kind:>10} {t * 1e6:10.1f} {bw / 1e9:8.1f} {bw / copy_bw:8.1%}")
    for kind, low in worst.items():
        print(f"lowest {kind} reduction throughput: {low:.1%} of the D2D copy bandwidth "
              f"({'meets' if low >= 0.8 else 'MISSES'} the 80% target)")
    if args.sweep:
        print(f"\n{'bytes':>12} {'add f32 GB/s':>13} {'copy GB/s':>10} {'ratio':>7}")
        for shift in range(12, 31, 2):
            n = 1 << shift
            if n > nbytes:
                break
            x, y = a[:n].view(cp.float32), b[:n].view(cp.float32)
            t_add = seconds_per_call(cp, lambda x=x, y=y: cp.add(x, y, out=x), args.reps)
            t_copy = seconds_per_call(cp, lambda n=n: b.data.copy_from_device_async(a.data, n), args.reps)
            print(f"{n:>12} {3 * n / t_add / 1e9:13.1f} {2 * n / t_copy / 1e9:10.1f} "
                  f"{(3 * n / t_add) / (2 * n / t_copy):7.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
