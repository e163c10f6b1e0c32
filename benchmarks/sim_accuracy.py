"""Accuracy on this machine: calibrate on measured runs at P = 2 and 3, predict P = 4, and
print the error per algorithm and size (target: within 15% for sizes of 64 KiB and more).

    mpiexec -n 2 collbench run -b 1K -e 64M -f 4 --algorithms naive,ring,rabenseifner \\
        -n 10 -w 3 --modes out --out results/acc-p2      # and likewise -n 3, -n 4
    .venv/bin/python benchmarks/sim_accuracy.py results/acc-p2 results/acc-p3 results/acc-p4

The model is the one-host model, fitted by simulation (``sim.calibrate_sim``): ranks bound
to the host's cores (their count from each run's ``run.json``) share them while they work,
and a cache knee slows copies and reductions once the node's buffers outgrow it.
``--host-model static --no-cache`` fits the closed-form model of ``sim.analytic`` instead
(CPU costs stretched by ranks/cores, and the host's memory bandwidth unless ``--no-memory``).
Several folders of one P (repeated runs) are combined point by point into the median of
their medians, which damps the run-to-run spread of a shared machine; the table shows that
spread (the largest over the smallest of a point's medians), to set each error against.
"""

from __future__ import annotations

import argparse

from collbench.sim.calibrate import error_table, fit, measured_points
from collbench.sim.calibrate_sim import fit_by_simulation

TARGET_PCT, FROM_BYTES = 15.0, 64 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="measured results folders (P = 2, 3 and 4)")
    parser.add_argument("--fit-ranks", default="2,3")
    parser.add_argument("--predict-ranks", default="4")
    parser.add_argument("--topology", default="half-duplex", choices=("half-duplex", "switch", "ideal"),
                        help="half-duplex (default) models ranks copying through one host's memory")
    parser.add_argument("--min-size", type=int, default=0, help="fit only points of this many bytes or more")
    parser.add_argument("--no-memory", action="store_true",
                        help="do not fit the host's memory bandwidth (closed-form model only)")
    parser.add_argument("--host-model", default="bound", choices=("bound", "static"),
                        help="bound (default): ranks bound to cores share them while they work; "
                             "static: CPU costs stretched by ranks/cores")
    parser.add_argument("--no-cache", action="store_true", help="no cache knee")
    parser.add_argument("--cores", default="auto",
                        help="the host's cores: auto (from run.json, default) or a number; 0 ignores them")
    args = parser.parse_args()
    fit_ranks = {int(x) for x in args.fit_ranks.split(",")}
    predict_ranks = {int(x) for x in args.predict_ranks.split(",")}
    data = measured_points(args.results)
    out_of_place = data["in_place"].astype(str) == "False"
    data = data[out_of_place] if out_of_place.any() else data
    per_point = data.groupby(["algorithm", "nranks", "size_bytes"])
    runs = per_point["folder"].nunique().max()
    spread = per_point["time_s"].agg(lambda t: t.max() / t.min())
    point = ["algorithm", "nranks", "size_bytes", "in_place"]
    data = data.groupby(point, as_index=False).agg(
        {"time_s": "median", "bytes": "first", "one_host": "all", "cores": "first"})
    if runs > 1:
        print(f"# up to {runs} runs per point, combined by the median of their medians")
    train = data[data["nranks"].isin(fit_ranks) & (data["size_bytes"] >= args.min_size)]
    cores = None if args.cores == "auto" else int(args.cores)
    if args.host_model == "static" and args.no_cache:
        calibration = fit(train, args.topology, memory=not args.no_memory and args.topology != "ideal",
                          cores=cores)
    else:
        calibration = fit_by_simulation(train, host_model=args.host_model, cache=not args.no_cache,
                                        cores=cores, topology=args.topology)
    print(f"# fitted on P in {sorted(fit_ranks)}: {calibration.describe()}")
    if calibration.note:
        print(f"# {calibration.note}")
    rows = error_table(calibration, data[data["nranks"].isin(predict_ranks)])
    print("| algorithm | P | size (B) | measured (us) | runs' max/min | predicted (us) | error |")
    print("|---|---|---|---|---|---|---|")
    within = total = 0
    for r in sorted(rows, key=lambda r: (r["algorithm"], r["nranks"], r["size_bytes"])):
        ratio = spread[(r["algorithm"], r["nranks"], r["size_bytes"])]
        print(f"| {r['algorithm']} | {r['nranks']} | {r['size_bytes']} | {r['measured_us']:.1f} | "
              f"{ratio:.2f} | {r['predicted_us']:.1f} | {r['error_pct']:+.1f}% |")
        if r["size_bytes"] >= FROM_BYTES:
            total += 1
            within += abs(r["error_pct"]) <= TARGET_PCT
    print(f"# {within} of {total} held-out points of {FROM_BYTES // 1024} KiB or more are within "
          f"{TARGET_PCT:g}%")


if __name__ == "__main__":
    main()
