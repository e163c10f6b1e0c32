"""A calibration fitted on a few nodes of one switch, judged on held-out runs of more nodes and
other topologies: the score by hand, then figures recovered from model-made multi-node data
and predicted on a described two-level tree from the command line."""

import re

import pytest
from collbench.sim.calibrate import Calibration
from collbench.sim.heldout import score
from collbench.sim.network import NetworkSpec

from collbench.cli import main
from tests.sim_data import model_run

MIB = 2**20


def row(size: int, error: float) -> dict:
    return {"algorithm": "ring", "nranks": 4, "size_bytes": size, "measured_us": 1.0,
            "predicted_us": 1.0 + error / 100, "error_pct": error}


def test_the_score_counts_points_of_the_size_within_the_bound():
    rows = [row(MIB, 4.0), row(2 * MIB, -12.0), row(4 * MIB, 3.0), row(MIB // 2, 50.0)]
    s = score(rows, from_bytes=MIB, bound_pct=10)
    assert (s.within, s.total, s.median_abs_pct, s.worst_pct) == (2, 3, 4.0, -12.0)
    assert s.describe() == "2 of 3 points of 1 MiB or more within 10%; median |error| 4.0%, worst -12.0%"


def test_no_point_of_the_size_scores_nothing():
    s = score([row(1024, 1.0)])
    assert (s.within, s.total) == (0, 0)


# A 100 Mbit/s network (12.5 MB/s), 50 us latency, reductions at 1 GB/s.
TRUTH = NetworkSpec(topology="switch", bandwidth=12.5e6, latency=50e-6, gamma=1e-9)
# Two leaves of four nodes whose uplinks carry half a node's rate: 4 x 12.5 MB/s / 8.
TREE = TRUTH.with_overrides(topology="fat-tree", hosts_per_leaf=4, oversubscription=8)


def errors(out: str) -> dict[tuple[str, int], float]:
    """The error column of ``--against``'s table, by (algorithm, nranks), largest per key."""
    found: dict[tuple[str, int], float] = {}
    for line in out.splitlines():
        m = re.match(r"\s*(naive|ring|rabenseifner)\s+(\d+)\s+\d+\s+\S+\s+\S+\s+(-?[\d.]+)%$", line)
        if m:
            key = (m[1], int(m[2]))
            found[key] = max(found.get(key, 0.0), abs(float(m[3])))
    return found


def test_fitted_on_two_and_three_nodes_it_predicts_eight_nodes_on_a_described_tree(tmp_path, capsys):
    model_run(tmp_path / "fit", TRUTH, (2, 3), (16, 256, 4096), provenance={"hosts": ["n0", "n1", "n2"]})
    model_run(tmp_path / "tree", TREE, (8,), (4096, 16384), provenance={"hosts": [f"n{i}" for i in range(8)]})
    saved = tmp_path / "cal.json"
    assert main(["sim", "calibrate", str(tmp_path / "fit"), "-o", str(saved)]) == 0
    q = Calibration.load(saved).params
    assert (q.alpha, q.beta, q.gamma) == pytest.approx((50e-6, 1 / 12.5e6, 1e-9), rel=1e-6)
    capsys.readouterr()

    tree = ["--topology", "fat-tree", "--hosts-per-leaf", "4", "--oversubscription", "8"]
    against = ["--against", str(tmp_path / "tree")]
    assert main(["sim", "predict", "--calibration", str(saved), *tree, *against]) == 0
    out = capsys.readouterr().out
    assert set(errors(out)) == {("naive", 8), ("ring", 8), ("rabenseifner", 8)}
    assert max(errors(out).values()) < 1e-3
    assert "# held out: 6 of 6 points of 1 MiB or more within 10%" in out

    # Described as one switch, the same network misses the ring's hops through the half-rate core.
    assert main(["sim", "predict", "--calibration", str(saved), *against]) == 0
    assert errors(capsys.readouterr().out)[("ring", 8)] > 30


def test_a_tree_whose_nodes_fit_under_one_leaf_is_named_as_one_switch(tmp_path, capsys):
    model_run(tmp_path / "fit", TRUTH, (2, 3), (256, 4096))
    saved = tmp_path / "cal.json"
    assert main(["sim", "calibrate", str(tmp_path / "fit"), "-o", str(saved)]) == 0
    assert main(["sim", "predict", "--calibration", str(saved), "--topology", "fat-tree", "--hosts-per-leaf",
                 "4", "--against", str(tmp_path / "fit")]) == 0
    assert "under one leaf: it is a single switch here" in capsys.readouterr().err


def test_runs_across_a_described_tree_are_fitted_by_simulating_it(tmp_path, capsys):
    """The same figures, measured (by the model) across the tree at P = 2..8: a switch fit
    would take the half-rate core for a slower network; the tree fit recovers them."""
    model_run(tmp_path / "tree", TREE, (2, 3, 6, 8), (256, 4096))
    saved = tmp_path / "cal.json"
    argv = ["sim", "calibrate", str(tmp_path / "tree"), "--topology", "fat-tree", "--hosts-per-leaf", "4",
            "--oversubscription", "8", "-o", str(saved)]
    assert main(argv) == 0
    calibration = Calibration.load(saved)
    q = calibration.params
    assert (q.alpha, q.beta, q.gamma) == pytest.approx((50e-6, 1 / 12.5e6, 1e-9), rel=1e-3)
    assert calibration.rms_relative_error < 1e-3 and "by simulation" in calibration.note
    assert calibration.network(8).topology == "fat-tree" and calibration.network(8).oversubscription == 8
    capsys.readouterr()
    assert main(["sim", "calibrate", str(tmp_path / "tree"), "-o", str(tmp_path / "switch.json")]) == 0
    assert Calibration.load(tmp_path / "switch.json").rms_relative_error > 0.05


@pytest.mark.parametrize("argv, words", [
    (["--hosts-per-leaf", "4"], "describes a fat tree: add --topology fat-tree"),
    (["--topology", "fat-tree"], "needs --hosts-per-leaf"),
    (["--topology", "fat-tree", "--hosts-per-leaf", "4", "--memory"], "network alone"),
])
def test_tree_fit_settings_that_do_not_fit_are_one_sentence(tmp_path, capsys, argv, words):
    model_run(tmp_path / "run", TRUTH, (2, 3), (256, 4096))
    assert main(["sim", "calibrate", str(tmp_path / "run"), *argv, "-o", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
