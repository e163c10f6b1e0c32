"""Bound cores and the cache knee of the one-host model, against hand-derived exact values,
and their calibration by simulation. Times in seconds, sizes in bytes, float32."""

import json

import pytest
from collbench.algorithms import build
from collbench.sim.calibrate import Calibration, measured_points
from collbench.sim.calibrate_sim import fit_by_simulation
from collbench.sim.executor import simulate
from collbench.sim.fabric import Flow, Link, _max_min
from collbench.sim.network import NetworkSpec, SpecError
from collbench.sim.presets import spec_from_table
from collbench.sim.topology import Topology

from collbench.cli import main
from collbench.lineage import links_to
from tests.sim_data import model_run

B = 6e9  # one core's copy speed
N = 6 * 2**20  # bytes per rank: every P here splits it evenly


def host(cores=2, gamma=0.0, overhead=0.0, latency=0.0, sharing="bound", **more):
    """All ranks on one node, each copying through the core it is bound to (host model
    *sharing*)."""
    return NetworkSpec(topology="half-duplex", bandwidth=B, latency=latency, ranks_per_node=64,
                       intra_bandwidth=B, intra_latency=latency, cores=cores, gamma=gamma,
                       overhead=overhead, host_model=sharing, **more)


def seconds(spec, algorithm, p, nbytes=N):
    return simulate(build(algorithm, p, nbytes // 4), spec, 4).time


def test_weighted_flows_share_a_link_by_what_they_use():
    """Capacity 6 shared by a flow using 2 per unit of rate and one using 1: both run at 2."""
    link = Link("core", 6.0, 0.0)
    heavy = Flow((link,), 0.0, 1.0, print, (2.0,))
    light = Flow((link,), 0.0, 1.0, print)
    link.flows.update((heavy, light))
    assert _max_min({heavy, light}, {link}) == {heavy: 2.0, light: 2.0}


@pytest.mark.parametrize("p, units", [(2, 2.0), (3, 8 / 3), (4, 2.0)])
def test_ring_on_two_bound_cores_by_hand(p, units):
    """Time per (P-1), in N/B. P = 2: one rank per core, each copying two messages of N/2
    per step. P = 4: ranks 0, 2 on core 0 and 1, 3 on core 1, every message copied out on
    one core and in on the other, four per core per step. P = 3: ranks 0 and 2 share core 0,
    which copies 0->1 out, 1->2 in and 2->0 both out and in (four units of N/3 per step),
    while core 1 has two: the ring runs at core 0's pace, 8/3 instead of the 2 a pooled
    model would give."""
    assert seconds(host(), "ring", p) / (p - 1) == pytest.approx(units * N / B, rel=1e-12)


FREE_COPIES = dict(intra_bandwidth=1e18, bandwidth=1e18)  # a copy of N takes 1e-11 s


def test_a_waiting_rank_leaves_its_core_to_the_root():
    """Naive at P = 4 on 2 cores with free copies: the root reduces the three messages one
    after another at full speed, though rank 2 is bound to its core; the static model
    stretches every reduction by ranks/cores = 2."""
    gamma = 1e-9
    bound = host(gamma=gamma).with_overrides(**FREE_COPIES)
    static = host(gamma=gamma, sharing="static").with_overrides(**FREE_COPIES)
    assert seconds(bound, "naive", 4) == pytest.approx(3 * N * gamma, rel=1e-8)
    assert seconds(static, "naive", 4) == pytest.approx(2 * 3 * N * gamma, rel=1e-8)


def test_reductions_share_the_core_with_copies():
    """P = 2 on one core: each step's two messages are both copied in and out by that core
    (weight 2 each, B/4 apiece), then the two reductions of N/2 share it: 2·(N/2)·4/B for
    the copies and N·γ for the reductions."""
    gamma = 2e-10
    assert seconds(host(cores=1, gamma=gamma), "ring", 2) == pytest.approx(4 * N / B + N * gamma, rel=1e-12)


@pytest.mark.parametrize("algorithm", ["naive", "ring", "rabenseifner"])
@pytest.mark.parametrize("p", [2, 3, 5, 8])
def test_a_core_per_rank_without_reductions_is_the_half_duplex_host(algorithm, p):
    """With a core for every rank and γ = 0 a core is the rank's half-duplex port."""
    bound = host(cores=0, latency=1e-6, overhead=2e-6)
    static = host(cores=0, latency=1e-6, overhead=2e-6, sharing="static")
    assert seconds(bound, algorithm, p) == pytest.approx(seconds(static, algorithm, p), rel=1e-12)


def test_ranks_are_bound_round_robin_and_overhead_stretches_by_the_core_s_ranks():
    topology = Topology(host(cores=2, overhead=1e-6), 3)
    core = topology.host.core
    assert core[0] is core[2] and core[1] is not core[0]
    assert topology.host.slowdown == [2.0, 1.0, 2.0]
    _, _, bandwidth, weights = topology.route(0, 2)
    assert weights == (2.0,) and bandwidth == B / 2


def test_the_cache_knee_slows_copies_and_reductions_past_the_cache():
    """P = 2 with a core each: 2 · 3 MiB = 6 MiB fit a 4 MiB cache but for a third, so
    every byte copied costs 1/B + β_miss/3 and every byte reduced γ + γ_miss/3. Within the
    cache nothing changes."""
    gamma, beta_miss, gamma_miss = 2e-10, 3e-10, 6e-10
    cached = host(cores=0, gamma=gamma, sharing="static")
    knee = cached.with_overrides(cache_size=4 * 2**20, beta_miss=beta_miss, gamma_miss=gamma_miss)
    n = 3 * 2**20
    assert knee.miss_fraction(2, n) == pytest.approx(1 / 3)
    expected = 2 * (n / 2) * 2 * (1 / B + beta_miss / 3) + (n / 2) * (gamma + gamma_miss / 3)
    assert seconds(knee, "ring", 2, n) == pytest.approx(expected, rel=1e-12)
    assert seconds(knee, "ring", 2, 2**20) == seconds(cached, "ring", 2, 2**20)


@pytest.mark.parametrize("table, words", [
    ({"host_model": "pinned"}, "unknown host_model"),
    ({"host_model": "bound"}, "needs intra_bandwidth"),
    ({"host_model": "static", "cache_size": -1}, "cache_size must be a non-negative"),
    ({"host_model": "static", "beta_miss": float("inf")}, "beta_miss must be a non-negative"),
    ({"cache_size": 2**20}, "cache_size is a figure of the host model, which is off"),
])
def test_bad_core_and_cache_figures_are_one_clear_error(table, words):
    with pytest.raises(SpecError, match=words):
        NetworkSpec(**table)


def test_toml_takes_a_cache_size_with_units():
    spec = spec_from_table({"intra_bandwidth": "6GB/s", "host_model": "bound", "cache_size": "32MiB"})
    assert spec.cache_size == 32 * 2**20 and spec.host_model == "bound"


def host_run(folder, spec, cpus=2, ranks=(2, 3, 4), ks=(1, 64, 1024, 16384, 65536)):
    """Results 'measured' on one host of *cpus* cores, timed by *spec* itself."""
    model_run(folder, spec, ranks, ks, one_host=True, provenance={"hosts": ["vm"], "machine": {"cpus": cpus}})
    return folder


TRUTH = host(gamma=3e-10, overhead=4e-6, latency=2e-6, cache_size=6 * 2**20, beta_miss=5e-11,
             gamma_miss=4e-10)


def test_calibration_by_simulation_recovers_a_bound_host_with_a_cache(tmp_path):
    """Data made by the model itself (P = 2, 3, 4 on 2 cores, sizes on both sides of the
    knee): the fit finds every figure again, and takes the cores from run.json."""
    data = measured_points([host_run(tmp_path / "run", TRUTH)])
    calibration = fit_by_simulation(data)
    q, h = calibration.params, calibration.host
    assert (q.alpha, q.beta, q.gamma, q.overhead) == pytest.approx((2e-6, 1 / B, 3e-10, 4e-6), rel=1e-3)
    assert (h["cache_size"], h["beta_miss"], h["gamma_miss"]) == pytest.approx((6 * 2**20, 5e-11, 4e-10),
                                                                              rel=1e-3)
    assert q.cores == 2 and h["host_model"] == "bound"
    assert calibration.rms_relative_error < 1e-4
    assert "2 cores (bound host model), cache 6.0 MiB" in calibration.describe()


def test_cli_calibrates_bound_cores_and_predicts_by_simulating_the_host(tmp_path, capsys):
    folder = host_run(tmp_path / "run", TRUTH)
    saved = tmp_path / "cal.json"
    assert main(["sim", "calibrate", str(folder), "--topology", "half-duplex", "--host-model", "bound",
                 "--cache", "--holdout-ranks", "4", "-o", str(saved)]) == 0
    assert "fitted by simulation" in capsys.readouterr().out
    assert Calibration.load(saved).host["host_model"] == "bound"
    assert json.loads(saved.read_text())["host"]["cores"] == 2
    assert main(["sim", "predict", "--calibration", str(saved), "--ranks", "5", "--sizes", "4M",
                 "--algorithms", "ring", "--out", str(tmp_path / "predicted")]) == 0
    predicted = float(capsys.readouterr().out.splitlines()[-2].split()[3])
    expected = simulate(build("ring", 5, 2**20), TRUTH.with_overrides(ranks_per_node=5), 4).time * 1e6
    assert predicted == pytest.approx(expected, rel=1e-2)
    # The prediction models the measured host, so reports set it against the measurements.
    assert links_to(json.loads((tmp_path / "predicted" / "run.json").read_text()),
                    json.loads((folder / "run.json").read_text()))
    assert main(["sim", "predict", "--calibration", str(saved), "--ranks", "4", "--sizes", "4M",
                 "--no-save", "--model", "analytic"]) == 2
    assert "no closed form" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--ranks-per-node", "4", "--host-model", "bound"], "needs intra_bandwidth"),
    (["--host-model", "static", "--cache-size", "32MiB", "--model", "analytic"], "no closed form"),
    (["--host-model", "static", "--cache-size", "lots"], "size"),
    (["--cores", "2"], "cores is a figure of the host model, which is off"),
])
def test_cli_overrides_of_cores_and_cache_are_checked(args, words, capsys):
    assert main(["sim", "--network", "ib-edr", "--ranks", "4", "--sizes", "1M", "--no-save", *args]) == 2
    assert words in capsys.readouterr().err


def test_cli_simulates_a_host_with_bound_cores_and_a_cache(tmp_path, capsys):
    network = tmp_path / "host.toml"
    network.write_text('topology = "half-duplex"\nbandwidth = "6GB/s"\nlatency = "0us"\nranks_per_node = 64\n'
                       'intra_bandwidth = "6GB/s"\ncores = 2\nhost_model = "bound"\n')
    assert main(["sim", "--network", str(network), "--ranks", "3", "--sizes", "6MiB", "--algorithms", "ring",
                 "--no-save", "--cache-size", "1GiB"]) == 0
    predicted_us = float(capsys.readouterr().out.splitlines()[-1].split()[3])
    assert predicted_us == pytest.approx(2 * 8 / 3 * N / B * 1e6, rel=1e-6)  # as by hand; printed to 1 ns
