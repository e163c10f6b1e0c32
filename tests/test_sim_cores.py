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
from collbench.sim.reuse import ReuseTracker
from collbench.sim.topology import Topology

from collbench.cli import main
from collbench.lineage import links_to
from tests.sim_data import model_run

B = 6e9  # one core's copy speed
N = 6 * 2**20  # bytes per rank: every P here splits it evenly


def host(cores=2, gamma=0.0, overhead=0.0, latency=0.0, sharing="bound", **more):
    """All ranks on one node, each copying through the core it is bound to."""
    return NetworkSpec(topology="half-duplex", bandwidth=B, latency=latency, ranks_per_node=64,
                       intra_bandwidth=B, intra_latency=latency, cores=cores, gamma=gamma,
                       overhead=overhead, core_sharing=sharing, **more)


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


@pytest.mark.parametrize("share", [0.25, 1.0])
def test_a_waiting_rank_that_polls_takes_its_share_of_the_root_s_core(share):
    """The same naive run, with rank 2 taking *share* of core 0 while it waits for the
    broadcast: the root reduces at 1 / (1 + share) of its speed."""
    gamma = 1e-9
    polling = host(gamma=gamma, waiting_share=share).with_overrides(**FREE_COPIES)
    assert seconds(polling, "naive", 4) == pytest.approx(3 * N * gamma * (1 + share), rel=1e-8)


def test_a_core_gives_up_nothing_to_ranks_that_work_or_to_no_one():
    """Ranks 0 and 2 bound to one core that a waiting rank takes 0.5 of: a flow of rank 0
    alone gets 1/1.5 of it; once rank 2 works there too, all of it is shared by the work;
    a core with one bound rank loses nothing."""
    core = Link("core", 6.0, 0.0)
    core.bound, core.spin = frozenset({0, 2}), 0.5
    first = Flow((core,), 0.0, 1.0, print, workers=(0, 1))
    core.flows.add(first)
    assert _max_min({first}, {core}) == {first: 4.0}
    second = Flow((core,), 0.0, 1.0, print, workers=(2,))
    core.flows.add(second)
    assert _max_min({first, second}, {core}) == {first: 3.0, second: 3.0}
    core.bound = frozenset({0})
    core.flows.discard(second)
    assert _max_min({first}, {core}) == {first: 6.0}


def test_idle_ranks_share_a_core_with_the_working_ones_by_weight():
    """Three ranks on a core, two working and one idle taking 0.5: the work gets
    2 / (2 + 0.5) of the core, 4.8 of 6, split between its two flows."""
    core = Link("core", 6.0, 0.0)
    core.bound, core.spin = frozenset({0, 1, 2}), 0.5
    flows = {Flow((core,), 0.0, 1.0, print, workers=(r,)) for r in (0, 1)}
    core.flows.update(flows)
    assert _max_min(flows, {core}) == dict.fromkeys(flows, pytest.approx(2.4, rel=1e-12))


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
    assert topology.core[0] is topology.core[2] and topology.core[1] is not topology.core[0]
    assert topology.cpu_slowdown == [2.0, 1.0, 2.0]
    _, _, bandwidth, weights = topology.route(0, 2)
    assert weights == (2.0,) and bandwidth == B / 2


def test_a_message_to_or_from_a_shared_core_waits_one_context_switch():
    """Ring at P = 3 on 2 cores: every message has rank 0 or 2 (which share core 0) at one
    end, so each of the 4 steps waits one switch more; at P = 2 no core is shared."""
    switch = 7e-6
    plain, switching = host(latency=1e-6), host(latency=1e-6, context_switch=switch)
    assert seconds(switching, "ring", 3) - seconds(plain, "ring", 3) == pytest.approx(4 * switch, rel=1e-9)
    assert seconds(switching, "ring", 2) == seconds(plain, "ring", 2)


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


def test_a_range_touched_again_misses_by_the_bytes_touched_since():
    """Two ranks of one node, 256 float32 each (a block per element): rank 0 touches its
    1 KiB, rank 1 then touches 3000 bytes' worth; touching rank 0's range again now sees a
    reuse distance of 3000 + its own 1024 bytes, and with a 1000-byte cache misses
    1 - 1000/4024 of it. Touched again at once, it hits."""
    tracker = ReuseTracker([0, 0], 256, 4, cache_size=1000.0)
    tracker.touch(0, 0, 256, 0.0)
    tracker.touch(1, 0, 256, 3000.0)
    assert tracker.distance_missed(0, 0, 256) == pytest.approx(1 - 1000 / 4024, rel=1e-12)
    assert tracker.touch(0, 0, 256, 0.0) == pytest.approx(1 - 1000 / 4024, rel=1e-12)
    assert tracker.distance_missed(0, 0, 128) == 0.0


@pytest.mark.parametrize("sharing", ["bound", "static"])
@pytest.mark.parametrize("gamma", [2e-10, 0.0])
@pytest.mark.parametrize("algorithm", ["naive", "ring", "rabenseifner"])
@pytest.mark.parametrize("p", [2, 3, 4])
def test_the_reuse_cache_meets_the_node_knee_where_all_or_nothing_misses(algorithm, p, gamma, sharing):
    """With a cache of one byte every copy and reduction misses (all but 1/distance) in
    both cache models, so they agree, on bound cores and under the static stretch, even
    when only misses cost a reduction anything; with a cache larger than everything
    nothing misses and the reuse model is the host without a cache."""
    figures = dict(gamma=gamma, beta_miss=3e-10, gamma_miss=5e-10, sharing=sharing)
    node = seconds(host(cache_size=1.0, **figures), algorithm, p)
    assert seconds(host(cache_size=1.0, cache_model="reuse", **figures), algorithm, p) == pytest.approx(
        node, rel=1e-6)
    assert seconds(host(cache_size=1e12, cache_model="reuse", **figures), algorithm, p) == seconds(
        host(gamma=gamma, sharing=sharing), algorithm, p)


@pytest.mark.parametrize("table, words", [
    ({"core_sharing": "pinned"}, "unknown core_sharing"),
    ({"core_sharing": "bound"}, "needs intra_bandwidth"),
    ({"cache_size": -1}, "cache_size must be a non-negative"),
    ({"beta_miss": float("inf")}, "beta_miss must be a non-negative"),
    ({"waiting_share": -0.5}, "waiting_share must be a non-negative"),
    ({"cache_model": "lru"}, "unknown cache_model"),
    ({"waiting_share": 0.3, "intra_bandwidth": 1e9}, "waiting_share is a figure of bound cores"),
])
def test_bad_core_and_cache_figures_are_one_clear_error(table, words):
    with pytest.raises(SpecError, match=words):
        NetworkSpec(**table)


def test_toml_takes_a_cache_size_with_units():
    spec = spec_from_table({"intra_bandwidth": "6GB/s", "core_sharing": "bound", "cache_size": "32MiB"})
    assert spec.cache_size == 32 * 2**20 and spec.core_sharing == "bound"


def host_run(folder, spec, cpus=2, ranks=(2, 3, 4), ks=(1, 64, 1024, 16384, 65536)):
    """Results 'measured' on one host of *cpus* cores, timed by *spec* itself."""
    model_run(folder, spec, ranks, ks, one_host=True, provenance={"hosts": ["vm"], "machine": {"cpus": cpus}})
    return folder


TRUTH = host(gamma=3e-10, overhead=4e-6, latency=2e-6, context_switch=9e-6, cache_size=6 * 2**20,
             beta_miss=5e-11, gamma_miss=4e-10)


def test_calibration_by_simulation_recovers_a_bound_host_with_a_cache(tmp_path):
    """Data made by the model itself (P = 2, 3, 4 on 2 cores, sizes on both sides of the
    knee): the fit finds every figure again, and takes the cores from run.json."""
    data = measured_points([host_run(tmp_path / "run", TRUTH)])
    calibration = fit_by_simulation(data)
    q, h = calibration.params, calibration.host
    assert (q.alpha, q.beta, q.gamma, q.overhead) == pytest.approx((2e-6, 1 / B, 3e-10, 4e-6), rel=1e-3)
    assert h["context_switch"] == pytest.approx(9e-6, rel=1e-3)
    assert (h["cache_size"], h["beta_miss"], h["gamma_miss"]) == pytest.approx((6 * 2**20, 5e-11, 4e-10),
                                                                              rel=1e-3)
    assert q.cores == 2 and h["core_sharing"] == "bound"
    assert calibration.rms_relative_error < 1e-4
    assert "2 cores (bound, context switch 9.00 us), cache 6.0 MiB" in calibration.describe()


def test_calibration_by_simulation_recovers_a_waiting_rank_s_share(tmp_path):
    """Data made by a model whose waiting ranks take 0.4 of their core: fitting that figure
    too finds it again, with the others."""
    truth = TRUTH.with_overrides(waiting_share=0.4)
    calibration = fit_by_simulation(measured_points([host_run(tmp_path / "run", truth)]), waiting_share=True)
    assert calibration.host["waiting_share"] == pytest.approx(0.4, rel=1e-3)
    assert calibration.params.gamma == pytest.approx(3e-10, rel=1e-3)
    assert calibration.rms_relative_error < 1e-4
    assert "a waiting rank takes 0.400" in calibration.describe()


def test_calibration_by_simulation_recovers_a_reuse_cache_host_from_the_command_line(tmp_path, capsys):
    """Data made by the reuse-distance cache model with waiting ranks' share: ``sim
    calibrate --cache-model reuse --waiting-share`` finds the figures again and saves the
    model with them."""
    truth = TRUTH.with_overrides(cache_model="reuse", cache_size=3 * 2**20, waiting_share=0.4)
    saved = tmp_path / "cal.json"
    assert main(["sim", "calibrate", str(host_run(tmp_path / "run", truth)), "--topology", "half-duplex",
                 "--core-sharing", "bound", "--cache", "--cache-model", "reuse", "--waiting-share",
                 "-o", str(saved)]) == 0
    assert "(reuse distance)" in capsys.readouterr().out
    h = Calibration.load(saved).host
    assert h["cache_model"] == "reuse"
    assert (h["cache_size"], h["beta_miss"], h["gamma_miss"], h["waiting_share"]) == pytest.approx(
        (3 * 2**20, 5e-11, 4e-10, 0.4), rel=1e-2)


def test_cli_calibrates_bound_cores_and_predicts_by_simulating_the_host(tmp_path, capsys):
    folder = host_run(tmp_path / "run", TRUTH)
    saved = tmp_path / "cal.json"
    assert main(["sim", "calibrate", str(folder), "--topology", "half-duplex", "--core-sharing", "bound",
                 "--cache", "--holdout-ranks", "4", "-o", str(saved)]) == 0
    assert "fitted by simulation" in capsys.readouterr().out
    assert Calibration.load(saved).host["core_sharing"] == "bound"
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
    (["--ranks-per-node", "4", "--core-sharing", "bound"], "needs intra_bandwidth"),
    (["--cache-size", "32MiB", "--model", "analytic"], "no closed form"),
    (["--cache-size", "lots"], "size"),
])
def test_cli_overrides_of_cores_and_cache_are_checked(args, words, capsys):
    assert main(["sim", "--network", "ib-edr", "--ranks", "4", "--sizes", "1M", "--no-save", *args]) == 2
    assert words in capsys.readouterr().err


def test_cli_simulates_a_host_with_bound_cores_and_a_cache(tmp_path, capsys):
    network = tmp_path / "host.toml"
    network.write_text('topology = "half-duplex"\nbandwidth = "6GB/s"\nlatency = "0us"\nranks_per_node = 64\n'
                       'intra_bandwidth = "6GB/s"\ncores = 2\ncore_sharing = "bound"\n')
    assert main(["sim", "--network", str(network), "--ranks", "3", "--sizes", "6MiB", "--algorithms", "ring",
                 "--no-save", "--cache-size", "1GiB"]) == 0
    predicted_us = float(capsys.readouterr().out.splitlines()[-1].split()[3])
    assert predicted_us == pytest.approx(2 * 8 / 3 * N / B * 1e6, rel=1e-6)  # as by hand; printed to 1 ns
