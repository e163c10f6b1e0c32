"""The one-host model (a node's memory link and its cores) and the pipelined ring, against
closed forms and hand-derived exact values. Times in seconds, sizes in bytes, float32."""

import json

import pytest
from collbench.algorithms import build
from collbench.sim import analytic
from collbench.sim.calibrate import fit, measured_points
from collbench.sim.executor import simulate
from collbench.sim.network import NetworkSpec, SpecError
from collbench.sim.presets import load_network, preset_names, spec_from_table
from collbench.sim.results import summary_row
from collbench.sim.topology import Topology

from collbench.cli import main
from collbench.store import ResultsWriter
from tests.sim_data import even_count, model_run

B = 6e9  # one core's copy speed
ALPHA, GAMMA, OVERHEAD = 4e-6, 3e-10, 2e-6


def host(topology="half-duplex", memory=0.0, cores=0, overhead=OVERHEAD, gamma=GAMMA):
    """All ranks on one node of a shared-memory host (the static host model), each rank's
    port its core."""
    return NetworkSpec(topology=topology, bandwidth=B, latency=ALPHA, ranks_per_node=64, intra_bandwidth=B,
                       intra_latency=ALPHA, host_model="static", memory_bandwidth=memory, cores=cores,
                       gamma=gamma, overhead=overhead)


@pytest.mark.parametrize("memory", [0.0, 20e9, 5e9])
@pytest.mark.parametrize("cores", [0, 2])
@pytest.mark.parametrize("topology", ["switch", "half-duplex"])
@pytest.mark.parametrize("algorithm, ranks", [("ring", (2, 3, 4, 5, 7, 8)), ("naive", (2, 3, 4, 5, 7, 8)),
                                              ("rabenseifner", (2, 3, 4, 8))])
def test_one_host_matches_its_closed_form(algorithm, ranks, topology, cores, memory):
    """Memory binding at no P (0), some P (20 GB/s against a 6 GB/s core) or all (5 GB/s),
    with and without oversubscribed cores. Rabenseifner's form holds at 2^k and 3 ranks, at
    3 only without overhead (the first core message starts one overhead before its reply)."""
    for p in ranks:
        spec = host(topology, memory, cores)
        if algorithm == "rabenseifner" and p == 3 and (memory or topology == "half-duplex"):
            spec = spec.with_overrides(overhead=0.0)
        q = analytic.Params.of_host(spec)
        for k in (1, 1000):
            count = even_count(p, k)
            simulated = simulate(build(algorithm, p, count), spec, 4).time
            assert simulated == pytest.approx(analytic.predict(algorithm, p, 4 * count, q, topology),
                                              rel=1e-9), (p, count)


def test_ring_on_a_memory_bound_host_by_hand():
    """P = 4, 1 GB/s memory, fast cores, no latency: every ring step moves 4 messages of n/4
    through the memory at once, 0.25 GB/s each, so 2·3 steps of n/4 bytes take 6n/1e9."""
    n = 4 * 2**20
    spec = host(memory=1e9, overhead=0.0, gamma=0.0).with_overrides(intra_latency=0.0, intra_bandwidth=1e12)
    assert simulate(build("ring", 4, n // 4), spec, 4).time == pytest.approx(6 * n / 1e9, rel=1e-12)
    # Two ranks: two messages per step at 0.5 GB/s each, two steps of n/2 bytes.
    assert simulate(build("ring", 2, n // 4), spec, 4).time == pytest.approx(2 * n / 1e9, rel=1e-12)


def test_more_ranks_than_cores_stretch_cpu_costs_by_ranks_over_cores():
    """P = 4 on 2 cores: overhead and γ take twice as long, the copies do not."""
    n, p = 4 * 2**20, 4
    m = n / p
    spec = host("switch", cores=2)
    expected = 2 * (p - 1) * (2 * OVERHEAD + ALPHA + m / B) + (p - 1) * m * 2 * GAMMA
    assert simulate(build("ring", p, n // 4), spec, 4).time == pytest.approx(expected, rel=1e-12)
    assert simulate(build("ring", 2, n // 4), spec, 4).time == simulate(
        build("ring", 2, n // 4), host("switch"), 4).time  # 2 ranks, 2 cores: no sharing
    assert Topology(spec, 4).host.slowdown == [2.0] * 4


def test_presets_have_no_host_model():
    for name in preset_names():
        spec = load_network(name)
        assert spec.host_model == "none" and spec.memory_bandwidth == 0.0 and spec.cores == 0
        topology = Topology(spec, 16)
        assert topology.host.memory(0) is None and set(topology.host.slowdown) == {1.0}


def test_memory_link_only_between_ranks_of_one_node():
    spec = NetworkSpec(topology="switch", ranks_per_node=2, host_model="static", memory_bandwidth=1e9)
    topology = Topology(spec, 4)
    memory = [topology.host.memory(n) for n in range(2)]
    assert memory[0] in topology.route(0, 1)[0]
    assert not any(link in memory for link in topology.route(1, 2)[0])


@pytest.mark.parametrize("table, words", [
    ({"host_model": "static", "memory_bandwidth": "-1GB/s"}, "memory_bandwidth must be a non-negative"),
    ({"host_model": "static", "cores": -1}, "cores must be a whole number"),
    ({"host_model": "static", "cores": 1.5}, "cores must be a whole number"),
    ({"memory_bandwidth": "20GB/s"}, "memory_bandwidth is a figure of the host model, which is off"),
])
def test_bad_host_figures_are_one_clear_error(table, words):
    with pytest.raises(SpecError, match=words):
        spec_from_table(table)


def test_host_figures_in_toml_take_units():
    spec = spec_from_table({"host_model": "static", "memory_bandwidth": "20GB/s", "cores": 8})
    assert (spec.memory_bandwidth, spec.cores) == (20e9, 8)


def one_error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("collbench: error: ")
    return err[0]


def test_cli_takes_and_checks_host_figures(capsys):
    base = ["sim", "--no-save", "--ranks", "4", "--sizes", "1M", "--algorithms", "ring",
            "--topology", "switch", "--ranks-per-node", "4", "--host-model", "static"]
    assert "cores must be" in one_error_line(capsys, [*base, "--cores", "-1"])
    assert "is not a bandwidth" in one_error_line(capsys, [*base, "--memory-bandwidth", "lots"])
    assert main([*base, "--memory-bandwidth", "1GB/s"]) == 0
    slow = float(capsys.readouterr().out.splitlines()[-1].split()[3])
    assert main(base) == 0
    fast = float(capsys.readouterr().out.splitlines()[-1].split()[3])
    assert slow > fast


def host_run(folder, spec, ranks=(2, 3, 4), cpus=2, ks=(1, 16, 256, 4096, 65536)):
    """A 'measured' one-host results folder whose times come from the SimPy model, with the
    provenance a real run writes (hosts, ranks per node, cpus)."""
    model_run(folder, spec, ranks, ks, one_host=True,
              provenance={"hosts": ["vm"], "machine": {"cpus": cpus}})
    return folder


@pytest.mark.parametrize("topology", ["switch", "half-duplex"])
def test_calibration_recovers_memory_and_takes_cores_from_provenance(tmp_path, topology):
    """Memory at 7 GB/s against 6 GB/s cores: exchanges are memory-bound from 3 ranks on
    (half-duplex) or at every P (switch), naive never; 4 ranks share 3 cores (γ stretched
    by 4/3). The fit finds μ's interval and recovers every figure."""
    truth = host(topology, memory=7e9, cores=3, overhead=0.0)
    data = measured_points([host_run(tmp_path / "run", truth, cpus=3)])
    assert set(data["cores"]) == {3}
    calibration = fit(data, topology, memory=True)
    q = calibration.params
    assert (q.alpha, q.beta, q.gamma, q.memory) == pytest.approx((ALPHA, 1 / B, GAMMA, 1 / 7e9), rel=1e-6)
    assert q.overhead == pytest.approx(0.0, abs=1e-12) and q.cores == 3
    assert calibration.rms_relative_error < 1e-9
    assert "host memory 7.00 GB/s, 3 cores" in calibration.describe()
    without = fit(data, topology, cores=0)
    assert without.params.cores == 0 and without.rms_relative_error > 0.01


def test_cli_calibrates_a_host_and_predicts_on_it(tmp_path, capsys):
    truth = host("half-duplex", memory=7e9, cores=2, overhead=0.0)
    folder = host_run(tmp_path / "run", truth)
    saved = tmp_path / "cal.json"
    assert main(["sim", "calibrate", str(folder), "--topology", "half-duplex", "--memory",
                 "--holdout-ranks", "4", "-o", str(saved)]) == 0
    assert "host memory" in capsys.readouterr().out
    assert json.loads(saved.read_text())["params"]["cores"] == 2
    for model in ("sim", "analytic"):
        assert main(["sim", "predict", "--calibration", str(saved), "--ranks", "4", "--sizes", "4M",
                     "--algorithms", "ring", "--no-save", "--model", model]) == 0
        predicted = float(capsys.readouterr().out.splitlines()[-1].split()[3])
        expected = simulate(build("ring", 4, 2**20), truth, 4).time * 1e6
        assert predicted == pytest.approx(expected, rel=1e-6)


def test_calibration_refuses_memory_on_runs_of_several_hosts(tmp_path, capsys):
    writer = ResultsWriter(tmp_path / "run", {"name": "x", "hosts": ["a", "b"], "machine": {"cpus": 4}})
    for p, n in ((2, 4096), (4, 4096), (4, 2**20)):
        writer.add_point(summary_row(source="measured", network="mpi", algorithm="ring", nranks=p,
                                     size_bytes=n, dtype="float32", itemsize=4, seconds=1e-3 * n / 4096,
                                     ranks_per_node=1))
    line = one_error_line(capsys, ["sim", "calibrate", str(tmp_path / "run"), "--memory"])
    assert "only on runs of one host" in line
    assert "--cores takes a whole number" in one_error_line(
        capsys, ["sim", "calibrate", str(tmp_path / "run"), "--cores", "many"])


# The pipelined ring (segments > 1).

IDEAL = NetworkSpec(topology="ideal", bandwidth=12.5e9, latency=1.3e-6, gamma=2e-10)
Q0 = analytic.Params(1.3e-6, 1 / 12.5e9, 2e-10)


@pytest.mark.parametrize("p", [2, 3, 4, 5, 7, 8, 13])
@pytest.mark.parametrize("segments", [2, 3, 4, 8])
@pytest.mark.parametrize("topology", ["ideal", "switch", "half-duplex"])
def test_pipelined_ring_without_overhead_matches_its_closed_form(topology, segments, p):
    """o = 0: every message of a step shares its link from the step's start, so a step takes
    α + a·w + r·g and the whole (S+2P-3)α + 2(P-1)/P·n·jβ + (P-1)/P·nγ."""
    spec = IDEAL.with_overrides(topology=topology)
    both = 2 if topology == "half-duplex" else 1
    for k in (1, 5, 1000):
        count = k * p * segments
        n = 4 * count
        simulated = simulate(build("ring", p, count, segments=segments), spec, 4).time
        closed = analytic.predict("ring", p, n, Q0, topology, segments=segments)
        assert simulated == pytest.approx(closed, rel=1e-9), (p, segments, count)
        explicit = ((segments + 2 * p - 3) * Q0.alpha + 2 * (p - 1) / p * n * both * Q0.beta
                    + (p - 1) / p * n * Q0.gamma)
        assert closed == pytest.approx(explicit, rel=1e-12)


@pytest.mark.parametrize("p", [2, 3, 5, 8])
@pytest.mark.parametrize("segments", [2, 3, 7])
def test_pipelined_ring_with_overhead_above_the_wire_time_matches_its_closed_form(segments, p):
    """w ≤ o: each message is alone on its link; reductions queue behind the sends."""
    for overhead, gamma in ((1e-5, 2e-10), (1e-5, 5e-8), (2e-6, 1e-9)):
        spec = IDEAL.with_overrides(overhead=overhead, gamma=gamma)
        q = analytic.Params(Q0.alpha, Q0.beta, gamma, overhead)
        for count in (p * segments, 64 * p * segments):  # w = 4·64·β ≈ 20 ns ≤ o
            simulated = simulate(build("ring", p, count, segments=segments), spec, 4).time
            closed = analytic.predict("ring", p, 4 * count, q, "ideal", segments=segments)
            assert simulated == pytest.approx(closed, rel=1e-9), (overhead, gamma, count)


@pytest.mark.parametrize("p", [3, 4, 7])
def test_pipelined_ring_with_shared_staggered_messages_is_bounded(p):
    """0 < o < w: exact without reductions; otherwise an upper bound by less than
    (P-1)/P·nγ (the arrivals before the step's last are not known in closed form)."""
    segments, count = 4, 2**16 * p
    n = 4 * count
    spec = IDEAL.with_overrides(overhead=1e-6, gamma=0.0)
    q = analytic.Params(Q0.alpha, Q0.beta, 0.0, 1e-6)
    assert simulate(build("ring", p, count, segments=segments), spec, 4).time == pytest.approx(
        analytic.predict("ring", p, n, q, "ideal", segments=segments), rel=1e-9)
    spec, q = spec.with_overrides(gamma=2e-10), analytic.Params(Q0.alpha, Q0.beta, 2e-10, 1e-6)
    simulated = simulate(build("ring", p, count, segments=segments), spec, 4).time
    closed = analytic.predict("ring", p, n, q, "ideal", segments=segments)
    assert simulated <= closed * (1 + 1e-12)
    assert closed - simulated < (p - 1) / p * n * q.gamma


def test_one_segment_is_the_plain_ring_and_bad_segments_are_refused():
    q = analytic.Params(1e-6, 1e-10, 2e-10, 3e-7)
    for p in (2, 5):
        one = analytic.ring_segments(p, 1e6, q, "switch", 1)
        assert one == pytest.approx(analytic.ring(p, 1e6, q, "switch"), rel=1e-12)
    with pytest.raises(ValueError, match="segments must be at least 1"):
        analytic.ring_segments(4, 1e6, q, "switch", 0)
    with pytest.raises(ValueError, match="only ring is pipelined"):
        analytic.predict("naive", 4, 1e6, q, "switch", segments=2)


@pytest.mark.parametrize("algorithm", ["naive", "ring", "rabenseifner"])
def test_ranks_of_one_node_have_the_intra_node_closed_form(algorithm):
    """dgx-h100: up to 8 ranks on one node's NVLink, which the closed forms now cover."""
    from collbench.sim.predict import predict_seconds

    spec = load_network("dgx-h100")
    for p in (2, 4, 8):
        assert predict_seconds(spec, algorithm, p, 2**26, 4, "analytic") == pytest.approx(
            predict_seconds(spec, algorithm, p, 2**26, 4, "sim"), rel=1e-9)
