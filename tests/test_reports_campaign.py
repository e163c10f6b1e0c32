"""The campaign loop read back from the figures: a Slurm sweep folder is one campaign whose
runs at different P make one scaling line with its ideal and efficiency; speed-ups stay inside
a run; legends, markers and tick labels say what is drawn."""

from __future__ import annotations

import itertools
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
from collbench.reports import fig_point, fig_sweep, tables
from collbench.reports.common import Options, baseline_of
from collbench.reports.data import load
from collbench.reports.style import FILLSTYLES, paper_style
from collbench.reports.synthetic import write_run
from matplotlib.backends.backend_agg import FigureCanvasAgg

from collbench.cli import main
from collbench.store import read_results

BIG = 1 << 24
SIZES = (64, 4096, BIG)


def sweep(root, ranks=(2, 4, 8), sizes=SIZES):
    """A Slurm sweep's layout: ``n<N>-t<T>/`` run folders of one experiment name, a started job
    with no points yet, a jobs/ folder and a ``job-<id>`` link to a run folder."""
    for i, p in enumerate(ranks):
        write_run(root / f"n{max(p // 2, 1)}-t2", name="sweep", ranks=(p,), sizes=sizes, seed=i,
                  start_time=f"2025-03-14T09:0{i}:00Z")
    (root / "n99-t2").mkdir()
    (root / "n99-t2" / "run.json").write_text('{"name": "sweep", "source": "measured"}')
    (root / "jobs").mkdir()
    (root / "jobs" / "n1-t2.sbatch").write_text("#!/bin/sh\n")
    (root / "job-17").symlink_to(root / "n1-t2")
    return root


def test_a_sweep_folder_is_one_campaign_with_one_line_per_algorithm(tmp_path):
    root = sweep(tmp_path / "sweep-20250314")
    data = load([root])
    assert sorted(data.runs) == ["sweep (n1-t2)", "sweep (n2-t2)", "sweep (n4-t2)"]
    assert set(data.summary["series"]) == {"naive", "ring", "rabenseifner", "native"}
    assert any("n99-t2 holds no points yet" in note for note in data.left_out)
    with paper_style("single"):
        plot = fig_sweep.scaling(data, Options(sizes=(BIG,)))
    ring = [ln for ln in plot.figure.axes[0].lines if ln.get_gid() == "ring" and ln.get_marker() == "s"]
    assert len(ring) == 1 and list(ring[0].get_xdata()) == [2, 4, 8]
    plt.close(plot.figure)
    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out), "--formats", "png"]) == 0
    index = (out / "index.md").read_text()
    not_drawn = index.split("## Figures not drawn")[1].split("## Tables")[0]
    assert "Predicted vs measured" in not_drawn and "Scaling" not in not_drawn
    assert "![Scaling with rank count](scaling.png)" in index and "n99-t2 holds no points yet" in index


def test_scaling_draws_the_bandwidth_term_ideal_and_the_efficiency(tmp_path):
    root = sweep(tmp_path / "s")
    summaries = {p: read_results(root / f"n{max(p // 2, 1)}-t2")[1] for p in (2, 4, 8)}
    times = {p: s.query(f"algorithm == 'ring' and size_bytes == {BIG}")["median_us"].iloc[0]
             for p, s in summaries.items()}
    with paper_style("single"):
        plot = fig_sweep.scaling(load([root]), Options(sizes=(BIG,)))
    top, bottom = plot.figure.axes
    # By hand: at fixed S the bandwidth term grows as (P−1)/P, so from P₀ = 2 (1/2) the ideal is
    # t(2)·1.5 at P = 4 (3/4) and t(2)·1.75 at P = 8 (7/8).
    ideal = [ln for ln in top.lines if ln.get_gid() == "ideal:ring"][0]
    np.testing.assert_allclose(ideal.get_ydata(), [times[2], 1.5 * times[2], 1.75 * times[2]])
    eff = [ln for ln in bottom.lines if ln.get_gid() == "efficiency:ring"][0]
    np.testing.assert_allclose(eff.get_ydata(), [1, 1.5 * times[2] / times[4], 1.75 * times[2] / times[8]])
    assert any(list(ln.get_ydata()) == [1, 1] for ln in bottom.lines)  # the ideal efficiency
    assert "bandwidth term" in plot.caption and "(P−1)/P" in plot.caption
    assert bottom.get_ylabel() == "Efficiency" and top.get_title() == "16 MiB per rank"
    plt.close(plot.figure)


def test_a_prediction_is_never_compared_with_another_runs_native(tmp_path):
    measured = write_run(tmp_path / "m", name="here", ranks=(8,), sizes=(BIG,))
    no_native = write_run(tmp_path / "s", name="edr", source="simulated", ranks=(8,), sizes=(BIG,),
                          algorithms=("ring", "rabenseifner"))
    own = write_run(tmp_path / "o", name="hdr", source="simulated", ranks=(8,), sizes=(BIG,), slowdown=0.1)
    data = load([measured, no_native, own])
    with paper_style("single"):
        plot = fig_point.bars(data, Options(ranks=8), BIG)
    ratio = plot.data.set_index(["run", "algorithm"])["speedup_vs_baseline"]
    assert np.isnan(ratio[("edr", "ring")]) and np.isnan(ratio[("edr", "rabenseifner")])
    t = data.summary.set_index(["run", "algorithm"])["median_us"]
    assert ratio[("hdr", "ring")] == pytest.approx(t[("hdr", "native")] / t[("hdr", "ring")])
    assert ratio[("here", "ring")] == pytest.approx(t[("here", "native")] / t[("here", "ring")])
    shown = [x.get_text() for x in plot.figure.axes[0].texts if x.get_text()]
    assert len(shown) == int(np.isfinite(ratio).sum())
    plt.close(plot.figure)


def _fills(ax) -> dict[str, str]:
    return {ln.get_gid(): ln.get_fillstyle() for ln in ax.lines if ln.get_gid()}


def test_legends_markers_and_ticks_read_back(tmp_path):
    a = write_run(tmp_path / "a", name="clusterA", ranks=(8,), sizes=(1024, 2048))
    b = write_run(tmp_path / "b", name="clusterB", ranks=(8,), sizes=(1024, 2048), seed=2, slowdown=1.3)
    x = write_run(tmp_path / "x", name="net-x", source="simulated", ranks=(8,), sizes=(1024, 2048))
    y = write_run(tmp_path / "y", name="net-y", source="simulated", ranks=(8,), sizes=(1024, 2048),
                  slowdown=2)
    data = load([a, b, x, y])
    predictions = data.summary[data.summary["source"] == "simulated"]
    with paper_style("single"):
        from collbench.reports.systems import subset

        plot = fig_sweep.time_vs_size(subset(data, ["net-x", "net-y"]), Options())
        plot.figure.canvas.draw()
    ax = plot.figure.axes[0]
    lines = {gid: ln for gid, ln in ((ln.get_gid(), ln) for ln in ax.lines) if gid}
    # Simulated curves carry markers, and their fill tells the two networks apart.
    assert all(ln.get_marker() not in (None, "None", "") for ln in lines.values())
    fill_x, fill_y = (lines[f"ring · {n} · simulated"].get_fillstyle() for n in ("net-x", "net-y"))
    assert fill_x != fill_y
    # The fill legend shows the fills drawn, though this figure shows only some of the runs.
    legend = {h.get_label(): h.get_fillstyle() for leg in plot.figure.legends for h in leg.legend_handles
              if h.get_label() in ("net-x", "net-y")}
    drawn = {v: FILLSTYLES[i] for v, i in predictions[["variant_name", "variant"]].drop_duplicates().values}
    assert legend == {"net-x": drawn["net-x"], "net-y": drawn["net-y"]}
    assert set(legend.values()) != {"full", "none"}  # not the first two fills, as before
    # Every time tick label, major or minor, carries its unit (the axis spans under a decade).
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
    assert labels and all(re.search(r"[µm]?s$", t) for t in labels), labels
    plt.close(plot.figure)


def test_rank_labels_never_overlap(tmp_path):
    ranks = tuple(2**k for k in range(1, 13))
    run = write_run(tmp_path / "m", name="big", ranks=ranks, sizes=(64, BIG), algorithms=("ring", "native"))
    with paper_style("single"):
        plot = fig_sweep.scaling(load([run]), Options())
        fig = plot.figure
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
    for ax in fig.axes[2:]:  # the efficiency row carries the P labels
        boxes = [t.get_window_extent(renderer) for t in ax.xaxis.get_ticklabels() if t.get_text()]
        assert len(boxes) >= 3
        assert not any(p.overlaps(q) for p, q in itertools.combinations(boxes, 2))
    plt.close(fig)


def test_the_latex_table_is_split_into_floats_of_whole_points(tmp_path):
    run = write_run(tmp_path / "m", name="m", ranks=(2, 8), sizes=tuple(4**k for k in range(15)))
    data = load([run])
    rows = tables.table_rows(data, baseline_of(data, Options()))
    tex = tables.latex(rows, "native", "All-reduce times.")
    floats = re.findall(r"\\begin\{table\}.*?\\end\{table\}", tex, re.S)
    assert len(floats) == 4  # two per P: 4 algorithms × 15 sizes = 60 rows each
    for part in floats:
        body = [ln for ln in part.splitlines() if ln.endswith(r"\\") and "Implementation" not in ln]
        assert 0 < len(body) <= tables.MAX_FLOAT_ROWS
        assert len({ln.split(" & ")[1] for ln in body}) == 1  # one P per float
        assert re.search(r"\\caption\{All-reduce times; \$P = \d+\$, .* to .*\}", part)
    points = [ln.split(" & ")[1:3] for part in floats for ln in part.splitlines() if ln.endswith(r"\\")
              and "Implementation" not in ln]
    assert len(points) == 120 and len({tuple(p) for p in points}) == 30


def test_a_nodes_by_tasks_sweep_makes_one_line_per_tasks_per_node(tmp_path):
    root = tmp_path / "grid"
    for i, (nodes, tasks) in enumerate(((1, 2), (1, 4), (2, 2), (2, 4))):
        write_run(root / f"n{nodes}-t{tasks}", name="grid", ranks=(nodes * tasks,), sizes=(BIG,), seed=i,
                  ranks_per_node=tasks, start_time=f"2025-03-14T09:0{i}:00Z")
    data = load([root])  # P = 4 twice (n1-t4, n2-t2): one name no longer tells the runs apart
    ring = data.summary[data.summary["algorithm"] == "ring"]
    assert dict(zip(ring["run"], ring["series"], strict=True)) == {
        "grid (n1-t2)": "ring · grid (2 per node)", "grid (n2-t2)": "ring · grid (2 per node)",
        "grid (n1-t4)": "ring · grid (4 per node)", "grid (n2-t4)": "ring · grid (4 per node)"}
    with paper_style("single"):
        plot = fig_sweep.scaling(data, Options(sizes=(BIG,)))
    lines = {ln.get_gid(): list(ln.get_xdata()) for ln in plot.figure.axes[0].lines
             if ln.get_gid() in ("ring · grid (2 per node)", "ring · grid (4 per node)")
             and ln.get_marker() == "s"}
    assert lines == {"ring · grid (2 per node)": [2, 4], "ring · grid (4 per node)": [4, 8]}
    plt.close(plot.figure)


def test_two_sweeps_of_one_experiment_make_one_line_each(tmp_path):
    for i, sweep_dir in enumerate(("sweep-a", "sweep-b")):
        for j, nodes in enumerate((1, 2)):
            write_run(tmp_path / sweep_dir / f"n{nodes}-t2", name="grid", ranks=(2 * nodes,), sizes=(BIG,),
                      seed=2 * i + j, ranks_per_node=2, start_time=f"2025-03-1{i}T09:0{j}:00Z")
    data = load([tmp_path / "sweep-a", tmp_path / "sweep-b"])
    assert sorted(data.runs) == ["grid (sweep-a/n1-t2)", "grid (sweep-a/n2-t2)", "grid (sweep-b/n1-t2)",
                                 "grid (sweep-b/n2-t2)"]
    ring = data.summary[data.summary["algorithm"] == "ring"]
    assert ring.groupby("series")["nranks"].apply(list).to_dict() == {
        "ring · grid (sweep-a)": [2, 4], "ring · grid (sweep-b)": [2, 4]}


def test_every_figure_kind_reads_back_right(tmp_path):
    from collbench.reports.build import make_report
    from collbench.reports.style import LogLabels, format_time_us

    root = sweep(tmp_path / "sw")
    here = write_run(tmp_path / "here", name="here", source="simulated", ranks=(2, 4, 8, 16), sizes=SIZES,
                     calibrated_from=[root / "n1-t2"])
    nets = [write_run(tmp_path / n, name=n, source="simulated", ranks=(2, 4, 8, 16), sizes=SIZES,
                      network={"name": n}, slowdown=k) for n, k in (("net-x", 0.5), ("net-y", 2.0))]
    inputs = [root, here, *nets]
    report = make_report(inputs, tmp_path / "out", Options(), ("png",))
    data = load(inputs)
    fill = {v: FILLSTYLES[i] for v, i in data.summary[["variant_name", "variant"]].drop_duplicates().values}
    series = set(data.summary["series"])
    kinds = {p.name.split("_P")[0].removesuffix("_other-systems") for p in report.plots}
    assert kinds == {"time_vs_size", "busbw_vs_size", "scaling", "bars", "distribution",
                     "predicted_vs_measured", "winner_map"}
    for plot in report.plots:
        fig = plot.figure
        FigureCanvasAgg(fig)  # the report closed it; draw it again as written
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        runs = set().union(*(plot.data[c] for c in ("run", "run_meas", "run_pred") if c in plot.data))
        if plot.name.endswith("_other-systems"):  # predictions of other systems stand apart
            assert runs <= {"net-x", "net-y"}, plot.name
        elif plot.name != "winner_map":  # its panels are one system each (tested above)
            assert runs and not runs & {"net-x", "net-y"}, plot.name
        for ax in fig.axes:
            assert ax.lines or ax.patches or ax.collections, f"empty panel in {plot.name}"
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t for t in axis.get_ticklabels(which="both") if t.get_text()]
                texts = [t.get_text() for t in labels]
                assert not any("times" in t or "^" in t for t in texts), (plot.name, texts)
                formatter = axis.get_major_formatter()
                if isinstance(formatter, LogLabels) and formatter.fmt is format_time_us:
                    assert all(re.search(r"[nµm]?s$", t) for t in texts), (plot.name, texts)
                if axis is ax.xaxis and labels:
                    boxes = [t.get_window_extent(renderer) for t in labels]
                    assert not any(p.overlaps(q) for p, q in itertools.combinations(boxes, 2)), plot.name
            for line in ax.lines:
                if line.get_gid() in series:  # a series' curve: its algorithm's marker and its run's fill
                    assert line.get_marker() not in (None, "None", ""), (plot.name, line.get_gid())
        for legend in fig.legends:
            for handle in legend.legend_handles:
                if handle.get_label() in fill and hasattr(handle, "get_fillstyle"):
                    assert handle.get_fillstyle() == fill[handle.get_label()], (plot.name, handle.get_label())
    plt.close("all")
    # The tables keep the predictions of other systems apart too.
    mine, other = (tmp_path / "out" / "summary.md").read_text().split("Predictions of other systems:")
    assert "net-x" not in mine and "here" in mine and "net-x" in other and "sweep" not in other
    tex = (tmp_path / "out" / "summary.tex").read_text()
    assert r"\label{tab:collbench-other-systems" in tex and "predictions of other systems" in tex


def test_a_baseline_missing_from_other_systems_leaves_them_their_own(tmp_path, capsys):
    measured = write_run(tmp_path / "m", name="here", ranks=(8,), sizes=(BIG,))
    edr = write_run(tmp_path / "e", name="edr", source="simulated", ranks=(8,), sizes=(BIG,),
                    algorithms=("naive", "ring"))
    out = tmp_path / "out"
    assert main(["report", str(measured), str(edr), "--out", str(out), "--formats", "png",
                 "--baseline", "native"]) == 0
    index = (out / "index.md").read_text()
    assert "![Implementations at 16 MiB, P = 8 (other systems)](bars_P8_16MiB_other-systems.png)" in index
    bars = (out / "data" / "bars_P8_16MiB_other-systems.csv").read_text()
    assert ",naive\n" in bars and "native" not in bars  # compared with naive of its own run
