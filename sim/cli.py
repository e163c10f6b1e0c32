"""``collbench sim``: predict all-reduce times on a described network.

Three forms share one parser::

    collbench sim [--network NAME|FILE.toml] [overrides] [--model sim|analytic] ...
    collbench sim calibrate RESULTS... [--topology switch|ideal] [--holdout-ranks 4] [-o FILE]
    collbench sim predict --calibration FILE [--network NAME] ...

Predictions print a table and are stored in the results schema (``source`` ``simulated`` or
``model``) in ``results/<UTC time>-sim-<network>/`` unless ``--out`` says otherwise. This
module never imports mpi4py, CuPy or pyverbs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import fields, replace
from functools import partial
from pathlib import Path

from collbench.sim.units import ITEMSIZE

from collbench.errors import CollbenchError


def register(subparsers) -> None:
    """Add the ``sim`` parser (and its ``calibrate`` and ``predict`` forms) to *subparsers*."""
    parser = subparsers.add_parser(
        "sim", help="predict all-reduce times on a described network (SimPy model or closed form)",
        description="Predict naive, ring and Rabenseifner all-reduce times on a network preset or "
        "a TOML description, with the SimPy model or the closed forms.")
    _prediction_options(parser)
    parser.set_defaults(func=_run_sim, calibration=None)
    forms = parser.add_subparsers(dest="sim_command", metavar="{calibrate,predict}")
    cal = forms.add_parser("calibrate", help="fit latency, bandwidth, reduction and overhead to "
                           "measured results",
                           description="Fit the model to measured results by least squares.")
    cal.add_argument("results", nargs="+", help="results folders written by 'collbench run', or folders "
                     "above them such as a Slurm sweep; predictions among them are skipped")
    cal.add_argument("--topology", default="switch", choices=("switch", "half-duplex", "ideal", "fat-tree"),
                     help="the model the figures are fitted on (default: switch; half-duplex suits "
                     "ranks of one shared-memory host; fat-tree, runs across a two-level tree, is fitted "
                     "by simulation)")
    cal.add_argument("--hosts-per-leaf", type=int, default=None, metavar="N",
                     help="fat-tree: nodes per leaf switch of the measured runs")
    cal.add_argument("--oversubscription", type=float, default=None, metavar="RATIO",
                     help="fat-tree: the leaves' host capacity over their uplinks' (default 1)")
    cal.add_argument("--holdout-ranks", default="", metavar="LIST",
                     help="rank counts to leave out of the fit and report the error on, e.g. 4")
    cal.add_argument("--min-size", default="0", metavar="SIZE",
                     help="fit only points of at least this many bytes, e.g. 64KiB (default: all)")
    cal.add_argument("--memory", action="store_true",
                     help="also fit the host's memory bandwidth, shared by all its ranks (runs on one host)")
    cal.add_argument("--cores", default="auto", metavar="N|auto",
                     help="the host's cores, so that more ranks than cores stretch CPU costs: auto (default) "
                     "takes each one-host run's cpus from its run.json; 0 ignores oversubscription")
    cal.add_argument("--host-model", default="static", choices=("static", "bound"),
                     help="the host model of one-host runs: static (default): CPU costs stretched by "
                     "ranks/cores, closed forms; bound: ranks bound to cores share them only while they "
                     "work, fitted by simulation (runs on one host)")
    cal.add_argument("--cache", action="store_true",
                     help="also fit a cache knee: copies and reductions slow down once the ranks' "
                     "buffers outgrow the cache; fitted by simulation (runs on one host)")
    cal.add_argument("-o", "--output", default="calibration.json", help="where to save the fit")
    cal.set_defaults(func=_run_calibrate)
    pred = forms.add_parser("predict", help="predict with a saved calibration",
                            description="Predict with fitted figures; a --network keeps its own "
                            "bandwidth, latency and topology and takes gamma and overhead from the fit.")
    _prediction_options(pred)
    pred.add_argument("--calibration", required=True, help="file written by 'collbench sim calibrate'")
    pred.add_argument("--against", nargs="+", default=None, metavar="RESULTS",
                      help="measured results (not fitted) to check the predictions on: predict each of "
                      "their points on this network and print the error (no --ranks, --sizes or saving)")
    pred.set_defaults(func=_run_sim)


def _prediction_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", default=None, help="preset name or TOML file (default: ib-edr)")
    p.add_argument("--algorithms", default="naive,ring,rabenseifner")
    p.add_argument("--ranks", default="2,4,8,16", help="e.g. 2,4,...,1024 or 2..16")
    p.add_argument("--sizes", default="1KiB..64MiB", help="e.g. 1KiB..1GiB or 1K,1M")
    p.add_argument("--model", default="sim", choices=("sim", "analytic"),
                   help="SimPy executor (default) or closed forms (ideal, switch and half-duplex "
                   "networks, one rank per node or all ranks on one node's intra-node fabric)")
    p.add_argument("--dtype", default="float32", choices=sorted(ITEMSIZE))
    p.add_argument("-s", "--segments", type=int, default=1, metavar="N",
                   help="pipeline segments per ring chunk (default 1)")
    p.add_argument("--trace", metavar="FILE", help="write every op's events in Chrome trace format "
                   "(Perfetto) to FILE; with --execution dataflow")
    p.add_argument("--execution", default="step", choices=("step", "dataflow"),
                   help="step (post a step, wait for all of it) or dataflow (each op once what it "
                   "needs is done); as 'collbench run --execution'")
    p.add_argument("--out", default=None, help="results folder (default results/<time>-sim-<network>); "
                   "an existing one is resumed if it was predicted with the same settings")
    p.add_argument("--force-new", action="store_true",
                   help="do not resume: move an existing --out folder aside to DIR.<UTC time> "
                   "(nothing is deleted) and start afresh in DIR")
    p.add_argument("--no-save", action="store_true", help="print only")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="simulate N points at once in separate processes (0: one per CPU; default 1)")
    g = p.add_argument_group("network overrides")
    g.add_argument("--topology", dest="o_topology", metavar="NAME",
                   help="ideal, switch, half-duplex, fat-tree, torus or pcie-rails")
    g.add_argument("--bandwidth", dest="o_bandwidth", metavar="RATE", help="per NIC, e.g. 400Gbps")
    g.add_argument("--latency", dest="o_latency", metavar="TIME", help="e.g. 1us")
    g.add_argument("--oversubscription", dest="o_oversubscription", type=float, metavar="RATIO",
                   help="fat tree: leaf host capacity over core capacity, e.g. 2")
    g.add_argument("--hosts-per-leaf", dest="o_hosts_per_leaf", type=int, metavar="N")
    g.add_argument("--nics-per-node", dest="o_nics_per_node", type=int, metavar="N")
    g.add_argument("--ranks-per-node", dest="o_ranks_per_node", type=int, metavar="N")
    g.add_argument("--pcie-bandwidth", dest="o_pcie_bandwidth", metavar="RATE",
                   help="pcie-rails: a GPU's PCIe link, each direction, e.g. 15.75GB/s")
    g.add_argument("--placement", dest="o_placement", metavar="HOW", help="block, cyclic or 0,0,1,1,...")
    g.add_argument("--gamma", dest="o_gamma", metavar="S_PER_BYTE", help="seconds per byte reduced")
    g.add_argument("--overhead", dest="o_overhead", metavar="TIME", help="per message, e.g. 0.5us")
    h = p.add_argument_group("host model (what a node's CPUs and memory add to the network)")
    h.add_argument("--host-model", dest="o_host_model", choices=("none", "static", "bound"),
                   help="none (presets' default): the network alone; static: ranks/cores stretch CPU costs, "
                   "a memory link, a cache knee (closed forms); bound: ranks bound to cores, each core a "
                   "link (needs intra_bandwidth)")
    h.add_argument("--memory-bandwidth", dest="o_memory_bandwidth", metavar="RATE",
                   help="per node, shared by its intra-node messages, e.g. 20GB/s (0: not modelled)")
    h.add_argument("--cores", dest="o_cores", type=int, metavar="N",
                   help="cores per node; more ranks than cores stretch their CPU costs (0: one per rank)")
    h.add_argument("--cache-size", dest="o_cache_size", metavar="SIZE",
                   help="bytes of a node's buffers its caches hold, e.g. 32MiB (0: no cache model)")


def _network(args, one_host_ranks: int = 1):
    """The spec from --network, a calibration and the overrides; a one-host calibration
    without --network puts up to *one_host_ranks* ranks on its host."""
    from collbench.sim.calibrate import Calibration
    from collbench.sim.network import SpecError
    from collbench.sim.presets import load_network
    from collbench.sim.units import parse_bandwidth, parse_size, parse_time

    try:
        calibration = Calibration.load(args.calibration) if args.calibration else None
        if calibration and not args.network:
            spec = base = calibration.network(one_host_ranks)
        else:
            spec = base = load_network(args.network or "ib-edr")
            if calibration:
                spec = spec.with_overrides(gamma=calibration.params.gamma,
                                           overhead=calibration.params.overhead)
        placement = args.o_placement
        if placement and placement not in ("block", "cyclic"):
            placement = tuple(int(x) for x in placement.split(","))
        spec = spec.with_overrides(
            topology=args.o_topology,
            bandwidth=parse_bandwidth(args.o_bandwidth) if args.o_bandwidth else None,
            latency=parse_time(args.o_latency) if args.o_latency else None,
            oversubscription=args.o_oversubscription, hosts_per_leaf=args.o_hosts_per_leaf,
            nics_per_node=args.o_nics_per_node, ranks_per_node=args.o_ranks_per_node,
            placement=placement,
            gamma=float(args.o_gamma) if args.o_gamma else None,
            overhead=parse_time(args.o_overhead) if args.o_overhead else None,
            memory_bandwidth=parse_bandwidth(args.o_memory_bandwidth) if args.o_memory_bandwidth else None,
            cores=args.o_cores, host_model=args.o_host_model,
            pcie_bandwidth=parse_bandwidth(args.o_pcie_bandwidth) if args.o_pcie_bandwidth else None,
            cache_size=parse_size(args.o_cache_size) if args.o_cache_size else None)
    except (SpecError, ValueError) as e:
        raise CollbenchError(str(e)) from None
    changed = [f.name for f in fields(spec)
               if f.name != "name" and getattr(spec, f.name) != getattr(base, f.name)]
    if changed:  # no longer the preset or file it was loaded from: say so in its name
        spec = replace(spec, name=f"{base.name}+{'+'.join(changed)}")
    return spec, calibration


def _run_sim(args) -> int:
    from collbench.algorithms import ALGORITHMS
    from collbench.sim.units import parse_ranks, parse_sizes

    if getattr(args, "against", None):
        return _run_against(args)
    try:
        ranks, sizes = parse_ranks(args.ranks), parse_sizes(args.sizes)
    except ValueError as e:
        raise CollbenchError(f"{e}") from None
    spec, calibration = _network(args, max(ranks))
    algorithms = list(dict.fromkeys(a.strip() for a in args.algorithms.split(",") if a.strip()))
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown or not algorithms:
        raise CollbenchError(f"unknown algorithm {', '.join(unknown) or '(none)'}; "
                             f"choose from {', '.join(ALGORITHMS)}")
    if args.jobs < 0:
        raise CollbenchError(f"--jobs must be 0 (one per CPU) or more, got {args.jobs}")
    itemsize = ITEMSIZE[args.dtype]
    bad = [s for s in sizes if s % itemsize]
    if bad:
        raise CollbenchError(f"size {bad[0]} B is not a whole number of {args.dtype} elements")
    if args.model == "analytic":  # before anything is printed: a closed form that does not exist
        from collbench.sim.predict import predict_seconds, refuse_analytic

        refuse_analytic(spec)
        if args.execution == "dataflow":
            raise CollbenchError("the closed forms predict step execution; use --model sim for dataflow")
    if args.segments < 1:
        raise CollbenchError(f"segments must be at least 1, got {args.segments}")
    if args.trace and (args.execution != "dataflow" or args.model != "sim"):
        raise CollbenchError("--trace records the simulated dataflow executor; add --execution dataflow "
                             "(and --model sim)")
    if args.model == "analytic":
        for algorithm in algorithms:
            for p in ranks:
                predict_seconds(spec, algorithm, p, sizes[0], itemsize, "analytic", args.segments)
    writer = None if args.no_save else _writer(args, spec, calibration)
    source = "simulated" if args.model == "sim" else "model"
    points = [(algorithm, p, size) for algorithm in algorithms for p in ranks for size in sizes]
    if writer:
        points = _not_stored(writer, points, source, spec.name, args.dtype)
    print(f"# network {spec.name}: {spec.topology}, {spec.bandwidth * 8 / 1e9:g} Gb/s x "
          f"{spec.nics_per_node} per node, latency {spec.latency * 1e6:g} us, "
          f"{spec.ranks_per_node} ranks/node; {source}")
    print(f"{'algorithm':>13} {'nranks':>7} {'size(B)':>12} {'time(us)':>14} {'algbw(GB/s)':>12} "
          f"{'busbw(GB/s)':>12}")
    from collbench.sim.topology import idle_settings

    for note in idle_settings(spec, ranks):
        print(f"collbench: warning: {note}", file=sys.stderr)
    if args.model == "sim":
        from collbench.sim.predict import cost_warning

        warning = cost_warning(points, args.segments)
        if warning:
            print(f"collbench: warning: {warning}", file=sys.stderr, flush=True)
    one = partial(_predict, spec, args.dtype, itemsize, args.model, args.segments, args.execution)
    from collbench.provenance import now

    try:
        for (algorithm, p, size), row in zip(points, _map(one, points, args.jobs)):
            print(f"{algorithm:>13} {p:>7} {size:>12} {row['median_us']:>14.3f} "
                  f"{_fmt(row['algbw_GBps'])} {_fmt(row['busbw_GBps'])}", flush=True)
            if writer:
                writer.add_point(row)
    except KeyboardInterrupt:
        if writer:
            writer.write_provenance(end_time=now(), interrupted=True)
            print(f"# interrupted; the points above are in {writer.folder}", file=sys.stderr)
        raise
    if args.trace:
        _write_trace(args, spec, itemsize, points)
    if writer:
        writer.write_provenance(end_time=now())
        print(f"# results in {writer.folder}")
    return 0


def _run_against(args) -> int:
    """``sim predict --against``: every measured point of the given folders predicted on the
    network, with its error, and the held-out score (points of 1 MiB or more within 10%)."""
    from collbench.sim.calibrate import measured_inputs
    from collbench.sim.heldout import compare, score
    from collbench.sim.topology import idle_settings

    data, _, skipped = measured_inputs(args.against)
    for line in skipped:
        print(f"# skipped {line}", file=sys.stderr)
    ranks = sorted(set(data["nranks"].astype(int)))
    spec, _ = _network(args, max(ranks))
    for note in idle_settings(spec, ranks):
        print(f"collbench: warning: {note}", file=sys.stderr)
    print(f"# network {spec.name}: {spec.topology}, {spec.bandwidth * 8 / 1e9:g} Gb/s x "
          f"{spec.nics_per_node} per node, latency {spec.latency * 1e6:g} us, "
          f"{spec.ranks_per_node} ranks/node; measured vs predicted ({args.model})")
    print(f"{'algorithm':>13} {'nranks':>7} {'size(B)':>12} {'measured(us)':>14} {'predicted(us)':>14} "
          f"{'error':>8}")
    rows = compare(spec, data, args.model)
    for r in rows:
        print(f"{r['algorithm']:>13} {r['nranks']:>7} {r['size_bytes']:>12} {r['measured_us']:>14.2f} "
              f"{r['predicted_us']:>14.2f} {r['error_pct']:>7.1f}%")
    print(f"# held out: {score(rows).describe()}")
    return 0


def _write_trace(args, spec, itemsize: int, points: list[tuple[str, int, int]]) -> None:
    """Simulate every point again with a tracer and write one trace, the points one after
    another in simulated time."""
    from collbench.algorithms import build
    from collbench.sim.dataflow import traced

    from collbench import trace

    events, offset = [], 0.0
    for algorithm, p, size in points:
        options = {"segments": args.segments} if algorithm == "ring" and args.segments > 1 else {}
        result, more = traced(build(algorithm, p, size // itemsize, **options), spec, itemsize,
                              offset_us=offset, name=f"{algorithm} P={p} {size} B")
        events += more
        offset += result.time * 1e6
    counts = trace.write(args.trace, events, {"source": "simulated", "network": spec.name,
                                              "execution": args.execution, "segments": args.segments})
    print(trace.describe(args.trace, counts))


def _predict(spec, dtype: str, itemsize: int, model: str, segments: int, execution: str,
             point: tuple[str, int, int]) -> dict:
    """The results row of one (algorithm, ranks, size) point; a module-level function so
    that worker processes can run it."""
    from collbench.sim.predict import predict_point

    algorithm, nranks, size = point
    return predict_point(spec, algorithm, nranks, size, dtype, itemsize, model, segments, execution)


def _map(function, points: list, jobs: int) -> Iterator[dict]:
    """*function* over *points*, in order; on *jobs* processes when more than one (0: one
    per CPU). Points are independent simulations, so a sweep scales with the cores.

    Workers ignore SIGINT: a Ctrl-C reaches this process alone, which terminates them at
    once (a running point is lost, the points already yielded are kept) and lets the
    KeyboardInterrupt end the command; from then on it ignores SIGINT, so that a second
    Ctrl-C cannot break the cleanup."""
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1 or len(points) < 2:
        yield from map(function, points)
        return
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(points)), initializer=_ignore_sigint)
    try:
        yield from pool.imap(function, points)
        pool.close()
    except KeyboardInterrupt:
        _ignore_sigint()
        raise
    finally:
        pool.terminate()
        pool.join()


def _ignore_sigint() -> None:
    """Leave Ctrl-C alone: a worker's initialiser, and the parent's once interrupted (see
    :func:`_map`)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fmt(x: float) -> str:
    return f"{x:>12.3f}" if math.isfinite(x) else f"{'-':>12}"


def _not_stored(writer, points: list, source: str, network: str, dtype: str) -> list:
    """The *points* the resumed folder of *writer* does not hold yet; says once how many it skips."""
    from collbench.sim.results import point_identity

    todo = [(a, p, size) for a, p, size in points if not writer.has(point_identity(
        source=source, network=network, algorithm=a, nranks=p, size_bytes=size, dtype=dtype))]
    if len(todo) < len(points):
        print(f"# resuming: {len(points) - len(todo)} point(s) already in {writer.folder} are skipped")
    return todo


def _writer(args, spec, calibration):
    from dataclasses import asdict

    from collbench.sim.results import refuse_other_settings

    from collbench import provenance
    from collbench.lineage import CALIBRATED_FROM
    from collbench.store import ResultsWriter, set_aside

    name = f"sim-{spec.name}"
    folder = Path(args.out) if args.out else Path("results") / f"{provenance.timestamp()}-{name}"
    info = {
        "name": name, "source": "simulated" if args.model == "sim" else "model",
        "command": sys.argv, "config": {"algorithms": args.algorithms, "ranks": args.ranks,
                                        "sizes": args.sizes, "dtype": args.dtype, "model": args.model,
                                        "segments": args.segments, "execution": args.execution},
        "versions": provenance.versions(), "git_commit": provenance.git_commit(),
        "machine": provenance.machine(), "start_time": provenance.now(), "network": spec.as_dict(),
    }
    if calibration:
        info["calibration"] = {**asdict(calibration), "file": str(args.calibration)}
        info[CALIBRATED_FROM] = calibration.calibrated_from if _predicts_calibrated_system(args) else []
    if args.force_new and (moved := set_aside(folder)):
        print(f"collbench: note: moved the earlier results in {folder} to {moved}", file=sys.stderr)
    return ResultsWriter(folder, info, partial(refuse_other_settings, folder, info))


def _predicts_calibrated_system(args) -> bool:
    """True when a calibrated prediction models the fitted system itself: no --network and no
    override, so a report may set it against the measurements it was fitted on."""
    overrides = [v for k, v in vars(args).items() if k.startswith("o_") and v is not None]
    return not args.network and not overrides


def _run_calibrate(args) -> int:
    from dataclasses import replace

    from collbench.sim.calibrate import error_table, fit, measured_inputs
    from collbench.sim.units import parse_ranks, parse_sizes

    data, refs, skipped = measured_inputs(args.results)
    for line in skipped:
        print(f"# skipped {line}", file=sys.stderr)
    try:
        holdout = set(parse_ranks(args.holdout_ranks)) if args.holdout_ranks else set()
        data = data[data["size_bytes"] >= parse_sizes(args.min_size)[0]]
    except ValueError as e:
        raise CollbenchError(f"{e}") from None
    train = data[~data["nranks"].isin(holdout)]
    test = data[data["nranks"].isin(holdout)]
    if holdout and test.empty:
        raise CollbenchError(f"no measured point has {sorted(holdout)} ranks to hold out")
    if args.cores != "auto" and not (args.cores.isdigit()):
        raise CollbenchError(f"--cores takes a whole number or auto, not {args.cores!r}")
    cores = None if args.cores == "auto" else int(args.cores)
    sources = [str(r) for r in args.results]
    tree = [name for name in ("hosts_per_leaf", "oversubscription") if getattr(args, name) is not None]
    if tree and args.topology != "fat-tree":
        raise CollbenchError(f"--{tree[0].replace('_', '-')} describes a fat tree: add --topology fat-tree")
    if args.topology == "fat-tree":
        from collbench.sim.calibrate_network import fit_on_network
        from collbench.sim.network import NetworkSpec, SpecError

        if args.memory or args.cache or args.host_model != "static":
            raise CollbenchError("the fat-tree fit is of the network alone: drop --memory, --cache and "
                                 "--host-model")
        from collbench.sim.topology import idle_settings

        if args.hosts_per_leaf is None:
            raise CollbenchError("--topology fat-tree needs --hosts-per-leaf, the nodes per leaf of the "
                                 "measured runs")
        try:
            spec = NetworkSpec(topology="fat-tree", hosts_per_leaf=args.hosts_per_leaf,
                               oversubscription=args.oversubscription or 1.0)
        except SpecError as e:
            raise CollbenchError(str(e)) from None
        for note in idle_settings(spec, sorted(set(train["nranks"].astype(int)))):
            print(f"collbench: warning: {note}", file=sys.stderr)
        calibration = fit_on_network(train, spec, note_sources=sources)
    elif args.host_model == "bound" or args.cache:
        from collbench.sim.calibrate_sim import fit_by_simulation

        if args.topology == "ideal":
            raise CollbenchError("bound cores and the cache are fitted on the switch or half-duplex "
                                 "topology, not ideal")
        calibration = fit_by_simulation(train, host_model=args.host_model, cache=args.cache,
                                        memory=args.memory, cores=cores, topology=args.topology,
                                        note_sources=sources)
    else:
        calibration = fit(train, args.topology, note_sources=sources, memory=args.memory, cores=cores)
    calibration = replace(calibration, calibrated_from=[refs[f] for f in dict.fromkeys(train["folder"])])
    print(f"# fitted: {calibration.describe()}")
    if calibration.note:
        print(f"# note: {calibration.note}")
    for title, rows in (("fit", train), ("held out", test)):
        if len(rows):
            print(f"# {title}: measured vs predicted")
            print(f"{'algorithm':>13} {'nranks':>7} {'size(B)':>12} {'measured(us)':>14} "
                  f"{'predicted(us)':>14} {'error':>8}")
            for r in error_table(calibration, rows):
                print(f"{r['algorithm']:>13} {r['nranks']:>7} {r['size_bytes']:>12} "
                      f"{r['measured_us']:>14.2f} "
                      f"{r['predicted_us']:>14.2f} {r['error_pct']:>7.1f}%")
    try:
        calibration.save(args.output)
    except OSError as e:
        raise CollbenchError(f"cannot write calibration to {args.output}: {e.strerror or e}") from None
    print(f"# calibration saved to {args.output}")
    return 0
