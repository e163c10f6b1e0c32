"""Calibration recovers the figures that generated its data, and refuses bad input in one
sentence."""

import json

import pytest
from collbench.algorithms import build
from collbench.sim.analytic import Params
from collbench.sim.calibrate import Calibration, fit, measured_points
from collbench.sim.executor import simulate
from collbench.sim.network import NetworkSpec
from collbench.sim.results import summary_row

from collbench.cli import main
from collbench.store import ResultsWriter
from tests.sim_data import model_run


def synthetic_run(folder, spec, ranks=(2, 3, 4, 5), ks=(1, 16, 256, 4096, 65536)):
    """A 'measured' results folder whose times come from the SimPy model itself."""
    writer = model_run(folder, spec, ranks, ks)
    native = summary_row(source="measured", network="mpi", algorithm="native", nranks=2, size_bytes=4096,
                         dtype="float32", itemsize=4, seconds=1.0, ranks_per_node=1)
    writer.add_point(native)  # a black box: calibration must ignore it
    return folder


@pytest.mark.parametrize("topology", ["switch", "half-duplex"])
def test_recovers_latency_bandwidth_and_reduction(tmp_path, topology):
    truth = NetworkSpec(topology=topology, bandwidth=5e9, latency=2e-6, gamma=3e-10)
    calibration = fit(measured_points([synthetic_run(tmp_path / "run", truth)]), topology)
    q = calibration.params
    assert (q.alpha, q.beta, q.gamma, q.overhead) == pytest.approx((2e-6, 1 / 5e9, 3e-10, 0.0),
                                                                   rel=1e-6, abs=1e-15)
    assert calibration.rms_relative_error < 1e-9


def test_recovers_all_four_where_naive_separates_overhead_from_latency(tmp_path):
    truth = NetworkSpec(topology="ideal", bandwidth=5e9, latency=2e-6, gamma=3e-10, overhead=7e-7)
    calibration = fit(measured_points([synthetic_run(tmp_path / "run", truth)]), "ideal")
    q = calibration.params
    assert (q.alpha, q.beta, q.gamma, q.overhead) == pytest.approx((2e-6, 2e-10, 3e-10, 7e-7), rel=1e-6)


def test_overhead_that_cannot_be_told_from_latency_is_folded_into_it(tmp_path):
    truth = NetworkSpec(topology="switch", bandwidth=5e9, latency=2e-6, gamma=3e-10, overhead=1e-6)
    folder = synthetic_run(tmp_path / "run", truth, ks=(256, 4096, 65536))
    calibration = fit(measured_points([folder]), "switch")
    assert calibration.params.overhead == 0.0
    assert calibration.params.alpha == pytest.approx(3e-6, rel=1e-6)
    assert "latency" in calibration.note


def test_cli_calibrates_holds_out_and_predicts(tmp_path, capsys):
    truth = NetworkSpec(topology="switch", bandwidth=5e9, latency=2e-6, gamma=3e-10)
    folder = synthetic_run(tmp_path / "run", truth)
    saved = tmp_path / "cal.json"
    assert main(["sim", "calibrate", str(folder), "--holdout-ranks", "5", "-o", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "held out" in out
    assert Calibration.load(saved).params.beta == pytest.approx(2e-10, rel=1e-6)
    results = tmp_path / "pred"
    assert main(["sim", "predict", "--calibration", str(saved), "--ranks", "8", "--sizes", "1M",
                 "--algorithms", "ring", "--out", str(results)]) == 0
    from collbench.store import read_results

    provenance, summary, _ = read_results(results)
    assert provenance["calibration"]["topology"] == "switch"
    expected = simulate(build("ring", 8, 2**18), truth, 4).time * 1e6
    assert summary.loc[0, "median_us"] == pytest.approx(expected, rel=1e-6)


def one_error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("collbench: error: ")
    return err[0]


def test_a_malformed_results_file_is_one_clear_error(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"name": "bad"}))
    (folder / "summary.csv").write_text("algorithm,nranks\nring,2\n")
    assert "lacks the columns" in one_error_line(capsys, ["sim", "calibrate", str(folder)])
    assert "does not exist" in one_error_line(capsys, ["sim", "calibrate", str(tmp_path / "none")])


def test_a_bad_calibration_file_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "cal.json"
    bad.write_text("{}")
    line = one_error_line(capsys, ["sim", "predict", "--calibration", str(bad), "--no-save"])
    assert "not a calibration file" in line


@pytest.mark.parametrize("argv, words", [
    (["--bandwidth=-5Gbps"], "bandwidth must be a positive number"),
    (["--ranks", "0"], "rank counts must be at least 1"),
    (["--latency", "fast"], "is not a time"),
    (["--network", "nowhere"], "unknown network"),
    (["--algorithms", "bogus"], "unknown algorithm"),
    (["--topology", "hypercube"], "unknown topology"),
    (["--model", "analytic", "--topology", "fat-tree"], "no closed form"),
])
def test_impossible_parameters_are_one_clear_error(capsys, argv, words):
    # argparse keeps the last of a repeated option, so *argv* overrides the defaults given first.
    assert words in one_error_line(capsys, ["sim", "--no-save", "--ranks", "2", "--sizes", "1K", *argv])


def test_calibration_needs_points(tmp_path, capsys):
    writer = ResultsWriter(tmp_path / "run", {"name": "x"})
    writer.add_point(summary_row(source="measured", network="mpi", algorithm="native", nranks=2,
                                 size_bytes=4096, dtype="float32", itemsize=4, seconds=1.0, ranks_per_node=1))
    assert "no naive, ring or rabenseifner point" in one_error_line(capsys, ["sim", "calibrate",
                                                                             str(tmp_path / "run")])


def test_params_round_trip(tmp_path):
    cal = Calibration(Params(1e-6, 2e-10, 3e-10, 0.0), "switch", 10, 0.01)
    cal.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json") == cal


def sweep(root, truth):
    """A Slurm sweep's layout: one run folder per configuration, a jobs/ folder, and a
    ``job-<id>`` link to a run folder (which must not be read twice)."""
    for name, ranks in (("n1-t2", (2, 3)), ("n2-t2", (4, 5))):
        model_run(root / name, truth, ranks, (1, 16, 256, 4096, 65536),
                  provenance={"name": "sweep", "hosts": ["a"],
                              "start_time": f"2025-01-01T00:00:0{ranks[0]}Z"})
    (root / "jobs").mkdir()
    (root / "jobs" / "n1-t2.sbatch").write_text("#!/bin/sh\n")
    (root / "job-17").symlink_to(root / "n1-t2")
    return root


def test_calibrates_a_sweep_folder_and_links_predictions_to_its_runs(tmp_path, capsys):
    truth = NetworkSpec(topology="switch", bandwidth=5e9, latency=2e-6, gamma=3e-10)
    root = sweep(tmp_path / "sweep-20250101", truth)
    saved = tmp_path / "cal.json"
    assert main(["sim", "calibrate", str(root), "-o", str(saved)]) == 0
    calibration = Calibration.load(saved)
    assert calibration.points == 3 * 4 * 5  # three algorithms, P = 2..5, five sizes: each once
    assert calibration.params.beta == pytest.approx(2e-10, rel=1e-6)
    assert [r["path"] for r in calibration.calibrated_from] == [str((root / n).resolve())
                                                                for n in ("n1-t2", "n2-t2")]
    from collbench.lineage import CALIBRATED_FROM, run_id
    from collbench.store import read_results

    ids = [run_id(read_results(root / n)[0]) for n in ("n1-t2", "n2-t2")]
    assert [r["id"] for r in calibration.calibrated_from] == ids
    here, edr = tmp_path / "here", tmp_path / "edr"
    common = ["--ranks", "8", "--sizes", "1M", "--algorithms", "ring", "--calibration", str(saved)]
    assert main(["sim", "predict", *common, "--out", str(here)]) == 0
    assert main(["sim", "predict", *common, "--network", "ib-edr", "--out", str(edr)]) == 0
    assert [r["id"] for r in read_results(here)[0][CALIBRATED_FROM]] == ids
    assert read_results(edr)[0][CALIBRATED_FROM] == []  # another network: linked to nothing


def test_predictions_are_never_fitted(tmp_path, capsys):
    truth = NetworkSpec(topology="switch", bandwidth=5e9, latency=2e-6, gamma=3e-10)
    measured = synthetic_run(tmp_path / "run", truth)
    predicted = tmp_path / "pred"
    assert main(["sim", "--ranks", "2,4", "--sizes", "1K,1M", "--out", str(predicted)]) == 0
    capsys.readouterr()
    alone = fit(measured_points([measured]), "switch")
    assert main(["sim", "calibrate", str(measured), str(predicted), "-o", str(tmp_path / "c.json")]) == 0
    err = capsys.readouterr().err
    assert f"skipped {predicted}: a simulated run, not a measurement" in err
    assert Calibration.load(tmp_path / "c.json").params == alone.params
    line = one_error_line(capsys, ["sim", "calibrate", str(predicted), "-o", str(tmp_path / "d.json")])
    assert "nothing to calibrate on" in line and "simulated run" in line


def test_a_cell_that_is_not_a_number_is_one_sentence(tmp_path, capsys):
    truth = NetworkSpec(topology="switch", bandwidth=5e9, latency=2e-6, gamma=3e-10)
    folder = synthetic_run(tmp_path / "run", truth)
    text = (folder / "summary.csv").read_text().splitlines()
    header = text[0].split(",")
    cells = text[3].split(",")
    cells[header.index("median_us")] = "fast"
    (folder / "summary.csv").write_text("\n".join([*text[:3], ",".join(cells), *text[4:]]) + "\n")
    line = one_error_line(capsys, ["sim", "calibrate", str(folder)])
    assert "'fast' in column median_us on line 4, not a number" in line
