"""Figures read back: the values drawn must be the statistics in the results folders, read
independently with :func:`collbench.store.read_results`, not merely "a file was written"."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from collbench.reports import fig_compare, fig_point, fig_sweep
from collbench.reports.common import NotApplicable, Options, speedup_text
from collbench.reports.data import load, parse_size
from collbench.reports.style import ALGORITHM_STYLES, FALLBACK_STYLES, algorithm_style, format_size
from collbench.reports.synthetic import write_run

from collbench.lineage import run_ref
from collbench.store import read_results

SIZES = (64, 4096, 1 << 20, 1 << 24)
BIG = 1 << 24


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    measured = write_run(root / "m", name="clusterA", ranks=(2, 4, 8), sizes=SIZES, seed=1)
    return {
        "measured": measured,
        "simulated": write_run(root / "s", name="sim", source="simulated", ranks=(2, 4, 8, 16), sizes=SIZES,
                               calibrated_from=[measured]),
        "model": write_run(root / "c", name="model", source="model", ranks=(2, 4, 8, 16, 32), sizes=SIZES,
                           calibrated_from=[measured]),
    }


@pytest.fixture(scope="module")
def data(folders):
    return load(folders.values())


@pytest.fixture(scope="module")
def inputs(folders):
    """The summaries and samples as the store wrote them, with the run name beside each row."""
    summaries, samples = [], []
    for f in folders.values():
        prov, summary, sample = read_results(f)
        summaries.append(summary.assign(run=prov["name"]))
        samples.append(sample.assign(run=prov["name"]))
    return pd.concat(summaries, ignore_index=True), pd.concat(samples, ignore_index=True)


def by_gid(fig, gid):
    found = [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]
    found += [a for ax in fig.axes for a in ax.lines if a.get_gid() == gid and a not in found]
    assert found, f"no artist with gid {gid!r}"
    return found


def row(summary, source, alg, nranks, size):
    r = summary[(summary["source"] == source) & (summary["algorithm"] == alg)
                & (summary["nranks"] == nranks) & (summary["size_bytes"] == size)]
    assert len(r) == 1
    return r.iloc[0]


def legend_texts(fig):
    return [t.get_text() for leg in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
            for t in leg.get_texts()]


def test_time_vs_size_plots_the_stored_medians_and_ci(data, inputs):
    summary, _ = inputs
    plot = fig_sweep.time_vs_size(data, Options())
    for source in ("measured", "simulated", "model"):
        for alg in ("naive", "ring", "rabenseifner", "native"):
            line = by_gid(plot.figure, f"{alg} · {source}")[0]
            expect = summary[(summary["source"] == source) & (summary["algorithm"] == alg)
                             & (summary["nranks"] == 8)].sort_values("size_bytes")
            np.testing.assert_array_equal(line.get_xdata(), expect["size_bytes"])
            np.testing.assert_allclose(line.get_ydata(), expect["median_us"], rtol=1e-12)
            assert line.get_linestyle() == {"measured": "-", "simulated": "--", "model": ":"}[source]
            assert line.get_color() == ALGORITHM_STYLES[alg].colour
    ax = plot.figure.axes[0]
    band = [c for c in ax.collections if c.get_facecolor()[0][:3] == pytest.approx(
        plt.matplotlib.colors.to_rgb(ALGORITHM_STYLES["ring"].colour))][0]
    ring = summary[(summary["source"] == "measured") & (summary["algorithm"] == "ring")
                   & (summary["nranks"] == 8)]
    ys = band.get_paths()[0].vertices[:, 1]
    for lo, hi in zip(ring["ci_low_us"], ring["ci_high_us"], strict=True):
        assert np.isclose(ys, lo).any() and np.isclose(ys, hi).any()
    assert {"measured", "simulated", "model"} <= set(legend_texts(plot.figure))
    plt.close(plot.figure)


def test_busbw_vs_size_plots_stored_busbw(data, inputs):
    summary, _ = inputs
    plot = fig_sweep.busbw_vs_size(data, Options())
    line = by_gid(plot.figure, "rabenseifner · measured")[0]
    expect = summary[(summary["source"] == "measured") & (summary["algorithm"] == "rabenseifner")
                     & (summary["nranks"] == 8)].sort_values("size_bytes")
    np.testing.assert_allclose(line.get_ydata(), expect["busbw_GBps"], rtol=1e-12)
    assert plot.figure.axes[0].get_yscale() == "log"
    plt.close(plot.figure)


def test_scaling_shows_measured_points_and_prediction_curves(data, inputs):
    summary, _ = inputs
    plot = fig_sweep.scaling(data, Options(sizes=(BIG,)))
    measured = by_gid(plot.figure, "ring · measured")[0]
    model = by_gid(plot.figure, "ring · model")[0]
    np.testing.assert_array_equal(measured.get_xdata(), [2, 4, 8])
    np.testing.assert_allclose(measured.get_ydata(),
                               [row(summary, "measured", "ring", p, BIG)["median_us"] for p in (2, 4, 8)])
    np.testing.assert_array_equal(model.get_xdata(), [2, 4, 8, 16, 32])
    assert model.get_linestyle() == ":" and measured.get_marker() == "s"
    plt.close(plot.figure)


def test_bars_heights_ci_and_speedup_text(data, inputs):
    summary, _ = inputs
    plot = fig_point.bars(data, Options(sizes=(BIG,), ranks=8, baseline="naive"), BIG)
    ax = plot.figure.axes[0]
    base = row(summary, "measured", "naive", 8, BIG)["median_us"]
    for alg in ("naive", "ring", "rabenseifner", "native"):
        r = row(summary, "measured", alg, 8, BIG)
        (bar,) = [p for p in ax.patches if p.get_gid() == f"{alg} · measured"]
        assert bar.get_height() == pytest.approx(r["median_us"], rel=1e-12)
        if alg != "naive":
            expect = speedup_text(base / r["median_us"])
            assert any(t.get_text().replace("\n", " ") == expect for t in ax.texts), expect
    assert sum(t.get_text() == "baseline" for t in ax.texts) == 3  # one per source
    assert {"measured", "simulated", "model"} <= set(legend_texts(plot.figure))
    assert "1.82× the speed" in plot.caption
    plt.close(plot.figure)


def test_distribution_marks_first_iteration_and_boxes_the_timed_ones(data, inputs):
    summary, samples = inputs
    plot = fig_point.distribution(data, Options(ranks=8), BIG)
    median = row(summary, "measured", "ring", 8, BIG)["median_us"]
    ring = samples[(samples["algorithm"] == "ring") & (samples["nranks"] == 8)
                   & (samples["size_bytes"] == BIG)]
    first = ring[ring["phase"] == "first"]["time_us"].iloc[0] / median
    ax = plot.figure.axes[0]
    stars = [ln for ln in ax.lines if ln.get_gid() == "first"]
    assert len(stars) == 4
    top = ax.get_ylim()[1]
    assert first > top  # the synthetic first call is 7.5x: pinned to the edge, value written
    assert any(t.get_text() == f"{first:.1f}×" for t in ax.texts)
    warm = [ln for ln in ax.lines if ln.get_gid() == "warmup:ring · measured"][0]
    np.testing.assert_allclose(sorted(warm.get_ydata()),
                               sorted(ring[ring["phase"] == "warmup"]["time_us"] / median))
    timed = ring[ring["phase"] == "timed"]["time_us"] / median
    box = [p for p in ax.patches if p.get_gid() == "ring · measured"][0]
    ys = box.get_path().vertices[:, 1]
    assert min(ys) == pytest.approx(np.percentile(timed, 25))
    assert max(ys) == pytest.approx(np.percentile(timed, 75))
    plt.close(plot.figure)


def test_predicted_vs_measured_error_per_point(data, inputs):
    summary, _ = inputs
    plot = fig_compare.predicted_vs_measured(data, Options(ranks=8))
    bottom = plot.figure.axes[1]
    line = [ln for ln in bottom.lines if ln.get_gid() == "ring · simulated vs ring · measured"][0]
    meas = [row(summary, "measured", "ring", 8, s)["median_us"] for s in SIZES]
    pred = [row(summary, "simulated", "ring", 8, s)["median_us"] for s in SIZES]
    np.testing.assert_allclose(line.get_ydata(), (np.array(pred) / meas - 1) * 100)
    assert {"simulated", "model"} <= set(legend_texts(plot.figure))
    plt.close(plot.figure)


def _rewrite(folder, **changes):
    run = json.loads((folder / "run.json").read_text())
    for key, value in changes.items():
        if value is None:
            run.pop(key, None)
        else:
            run[key] = value
    (folder / "run.json").write_text(json.dumps(run))


def test_a_prediction_is_compared_only_through_its_calibration_link(tmp_path, folders):
    measured = folders["measured"]
    pred = write_run(tmp_path / "here", name="here", source="simulated", ranks=(8,), sizes=SIZES)
    # A folder from before the link, named as the old rule wanted: not comparable, and said so.
    _rewrite(pred, network={"name": "calibrated"}, calibration={"sources": [str(measured)]})
    with pytest.raises(NotApplicable, match="predates the calibration link"):
        fig_compare.predicted_vs_measured(load([measured, pred]), Options(ranks=8))
    # An uncalibrated preset: never set against this machine.
    _rewrite(pred, network={"name": "ib-edr"}, calibration=None)
    with pytest.raises(NotApplicable, match="not calibrated to a measurement"):
        fig_compare.predicted_vs_measured(load([measured, pred]), Options(ranks=8))
    # Calibrated here, predicting another network: the link is an empty list.
    _rewrite(pred, calibration={"sources": [str(measured)]}, calibrated_from=[])
    with pytest.raises(NotApplicable, match="predicts another network"):
        fig_compare.predicted_vs_measured(load([measured, pred]), Options(ranks=8))
    # Linked to clusterA: paired with clusterA only, never with clusterB at the same points.
    other = write_run(tmp_path / "b", name="clusterB", ranks=(8,), sizes=SIZES, seed=3)
    _rewrite(other, hosts=["b00", "b01"])
    _rewrite(pred, calibrated_from=[run_ref(measured, read_results(measured)[0])])
    pairs = fig_compare.matched(load([measured, other, pred]))
    assert len(pairs) == 4 * len(SIZES) and set(pairs["run_meas"]) == {"clusterA"}
    # A run on the same hosts and processor as the calibration input describes the same system.
    again = write_run(tmp_path / "a2", name="clusterA-again", ranks=(8,), sizes=SIZES, seed=4)
    assert set(fig_compare.matched(load([again, pred]))["run_meas"]) == {"clusterA-again"}


def test_predicted_vs_measured_skips_without_predictions(folders):
    with pytest.raises(NotApplicable, match="collbench sim"):
        fig_compare.predicted_vs_measured(load([folders["measured"]]), Options())


def test_winner_map_ranks_each_system_apart_and_never_mixes_sources(data, inputs):
    summary, _ = inputs
    plot = fig_compare.winner_map(data, Options())
    titles = [ax.get_title() for ax in plot.figure.axes]
    assert titles == ["measured: clusterA", "simulated: network synthetic-10GBps",
                      "model: network synthetic-10GBps"]
    for ax, source in zip(plot.figure.axes, ("measured", "simulated", "model"), strict=True):
        sources = {p.get_gid().split("|")[1] for p in ax.patches if p.get_gid()}
        assert sources == {source}, ax.get_title()
    win = plot.data
    for source in ("measured", "simulated", "model"):
        mine, cells = summary[summary["source"] == source], win[win["source"] == source]
        assert len(cells) == len(mine.groupby(["nranks", "size_bytes"]))
        for _, c in cells.iterrows():
            at = mine[(mine["nranks"] == c["nranks"]) & (mine["size_bytes"] == c["size_bytes"])]
            assert c["algorithm"] == at.loc[at["median_us"].idxmin(), "algorithm"]
    plt.close(plot.figure)


def test_two_clusters_of_the_same_kind_are_told_apart(tmp_path):
    a = write_run(tmp_path / "a", name="clusterA", sizes=(1024, BIG), seed=1)
    b = write_run(tmp_path / "b", name="clusterB", sizes=(1024, BIG), seed=2, slowdown=1.5)
    both = load([a, b])
    assert set(both.summary["series"]) >= {"ring · clusterA", "ring · clusterB"}
    plot = fig_sweep.time_vs_size(both, Options())
    fills = {ln.get_gid(): ln.get_fillstyle() for ln in plot.figure.axes[0].lines}
    assert fills["ring · clusterA"] != fills["ring · clusterB"]
    assert {"clusterA", "clusterB"} <= set(legend_texts(plot.figure))
    plt.close(plot.figure)


def test_captions_carry_provenance(data):
    plot = fig_sweep.time_vs_size(data, Options())
    for needle in ("node00, node01", "4 ranks per node", "transport mpi", "float32 sum",
                   "20 timed iterations after 3 warm-ups", "2025-03-14", "commit 0123456789",
                   "Python 3.11.2", "mpi4py 4.0.1", "MPI MPICH 4.2.3", "simulated run “sim”",
                   "network synthetic-10GBps", "P = 8"):
        assert needle in plot.caption, needle
    plt.close(plot.figure)


def test_styles_and_units():
    assert algorithm_style("ring") == ALGORITHM_STYLES["ring"]
    assert algorithm_style("tree", ["tree", "bruck"]) == FALLBACK_STYLES[1]
    assert [format_size(v) for v in (8, 1024, 1536, 256 << 20)] == ["8 B", "1 KiB", "1.5 KiB", "256 MiB"]
    assert [parse_size(v) for v in ("256M", "256MiB", "1k", "4096")] == [256 << 20, 256 << 20, 1024, 4096]
    assert speedup_text(1.82, "native") == "82% faster than native"
    assert speedup_text(0.8) == "25% slower" and speedup_text(7.4) == "7.4× faster"


def test_tables_and_captions_name_the_real_confidence_level(tmp_path):
    """3 samples give min..max, a 75% interval (1 - 2/2^3); 20 give x_(5)..x_(14), 95.8%."""
    from collbench.reports import tables

    few = write_run(tmp_path / "few", name="few", ranks=(2,), sizes=(64, 4096), iters=3)
    many = write_run(tmp_path / "many", name="many", ranks=(2,), sizes=(64, 4096), iters=20)
    for folders, level in (([few], "75%"), ([many], "95.8%"), ([few, many], "75%–95.8%")):
        data = load(folders)
        plot = fig_sweep.time_vs_size(data, Options())
        assert f"shaded bands: {level} confidence interval of the median" in plot.caption
        plt.close(plot.figure)
        rows = tables.table_rows(data, "native")
        assert f"| {level} CI (µs) |" in tables.markdown(rows, "native")
        tex = level.replace("%", "\\%").replace("–", "--")
        assert f"{tex} CI ($\\mu$s)" in tables.latex(rows, "native", "c")
        assert "95% CI" not in tables.markdown(rows, "native") + plot.caption
