"""The simulated dataflow executor: the policy the real one runs, against the pipelined
ring's bound and the step executor."""

import pytest
from collbench.algorithms import build
from collbench.sim import analytic
from collbench.sim.dataflow import simulate_dataflow
from collbench.sim.executor import simulate
from collbench.sim.network import NetworkSpec

from collbench.errors import CollbenchError

B = 1e9  # bytes per second: w = 1 ns per byte


def switch(gamma_per_w: float, overhead: float = 0.0, latency: float = 1e-6) -> NetworkSpec:
    return NetworkSpec(topology="switch", bandwidth=B, latency=latency, gamma=gamma_per_w / B,
                       overhead=overhead)


def test_two_ranks_one_segment_by_hand():
    """P = 2, 8 KiB each: both send their 4 KiB chunk (w = 4.096 us, then α = 1 us), reduce
    what lands (γ = 2w: 8.192 us), send the sum back (w + α). Nothing can overlap."""
    result = simulate_dataflow(build("ring", 2, 2048), switch(2.0))
    assert result.time == pytest.approx(2 * (4.096e-6 + 1e-6) + 8.192e-6)


@pytest.mark.parametrize("p", [2, 3, 5, 8])
@pytest.mark.parametrize("gamma_per_w", [0.0, 1.0, 3.0])
def test_one_segment_is_the_step_executor_s_ring(p, gamma_per_w):
    """With S = 1 every op of the ring waits for the one before it: dataflow is the ring's
    closed form, as step execution is."""
    spec = switch(gamma_per_w)
    schedule = build("ring", p, p * 10_000)
    closed = analytic.ring(p, p * 40_000, analytic.Params.of(spec), "switch")
    assert simulate_dataflow(schedule, spec).time == pytest.approx(closed, rel=1e-9)
    assert simulate(schedule, spec).time == pytest.approx(closed, rel=1e-9)


@pytest.mark.parametrize("p", [2, 3, 4, 8])
@pytest.mark.parametrize(("gamma_per_w", "overhead"), [(0.0, 0.0), (0.5, 0.0), (1.0, 2e-6), (3.0, 0.0),
                                                       (3.0, 2e-6)])
@pytest.mark.parametrize("segments", [1, 4, 16, 64])
def test_pipelined_ring_reaches_its_bound(p, gamma_per_w, overhead, segments):
    """Never below the bound (no schedule beats it); within 10% of it from 16 segments on,
    and within 20% at 4, where the fill of a reduction-bound ring shows."""
    spec = switch(gamma_per_w, overhead)
    n = p * (1 << 20)
    bound = analytic.ring_dataflow_bound(p, n, analytic.Params.of(spec), segments)
    time = simulate_dataflow(build("ring", p, n // 4, segments=segments), spec).time
    assert bound * (1 - 1e-9) <= time <= bound * (1.10 if segments >= 16 else 1.20)


@pytest.mark.parametrize("gamma_per_w", [1.0, 3.0])
def test_pipelining_pays_under_dataflow_and_not_under_steps(gamma_per_w):
    """Step execution adds the reduction to the wire whatever S; dataflow overlaps them."""
    spec, p, n = switch(gamma_per_w), 4, 4 << 20
    step = [simulate(build("ring", p, n // 4, segments=s), spec).time for s in (1, 16)]
    dataflow = [simulate_dataflow(build("ring", p, n // 4, segments=s), spec).time for s in (1, 16)]
    assert step[1] >= step[0] * 0.999
    assert dataflow[0] == pytest.approx(step[0], rel=1e-9)
    wire, reduction = 2 * (p - 1) / p * n / B, (p - 1) / p * n * gamma_per_w / B
    assert dataflow[1] < 1.05 * max(wire, reduction) < step[0]


@pytest.mark.parametrize("name", ["naive", "rabenseifner", "ring"])
@pytest.mark.parametrize("p", [1, 2, 3, 5, 7, 16])
def test_every_algorithm_completes_with_every_message(name, p):
    spec = switch(1.0, 1e-6)
    for count in (0, 1, p - 1, 1001):
        schedule = build(name, p, count)
        assert simulate_dataflow(schedule, spec).messages == simulate(schedule, spec).messages
        assert simulate_dataflow(schedule, spec, window=1).messages == simulate(schedule, spec).messages


def test_bound_cores_are_refused_in_one_sentence():
    spec = NetworkSpec(topology="switch", ranks_per_node=2, intra_bandwidth=1e9, host_model="bound", cores=2)
    with pytest.raises(CollbenchError, match="not bound cores"):
        simulate_dataflow(build("ring", 2, 100), spec)


def test_sim_command_predicts_both_executions_and_records_which(collbench_cmd, tmp_path):
    import json
    import subprocess

    times = {}
    for execution in ("step", "dataflow"):
        out = tmp_path / execution
        done = subprocess.run([*collbench_cmd, "sim", "--algorithms", "ring", "--ranks", "4", "--sizes",
                               "16MiB", "--network", "ib-fdr", "--gamma", "3e-10", "-s", "16",
                               "--execution", execution, "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        times[execution] = float(done.stdout.strip().splitlines()[-2].split()[3])
        config = json.loads((out / "run.json").read_text())["config"]
        assert (config["execution"], config["segments"]) == (execution, 16)
    assert times["dataflow"] < 0.8 * times["step"]


def test_sim_command_refuses_dataflow_closed_forms_in_one_sentence(collbench_cmd):
    import subprocess

    done = subprocess.run([*collbench_cmd, "sim", "--model", "analytic", "--execution", "dataflow",
                           "--no-save"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--model sim" in done.stderr
