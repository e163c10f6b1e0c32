"""``collbench sim`` writes predictions in the measured results' schema."""

import math

import pytest
from collbench.sim.presets import load_network, preset_names
from collbench.sim.units import parse_bandwidth, parse_ranks, parse_sizes, parse_time

from collbench.cli import main
from collbench.schema import SUMMARY_COLUMNS
from collbench.stats import busbw_factor
from collbench.store import read_results


def test_predictions_are_stored_as_results(tmp_path, capsys):
    out = tmp_path / "pred"
    argv = ["sim", "--network", "ib-fdr", "--ranks", "2,3,...,8", "--sizes", "1KiB,256MiB",
            "--out", str(out)]
    assert main(argv) == 0
    assert "rabenseifner" in capsys.readouterr().out
    provenance, summary, samples = read_results(out)
    assert provenance["network"]["name"] == "ib-fdr" and provenance["source"] == "simulated"
    assert list(summary.columns) == list(SUMMARY_COLUMNS) and samples.empty
    assert len(summary) == 3 * 7 * 2
    ring = summary[summary.algorithm == "ring"]
    row = ring[(ring.nranks == 8) & (ring.size_bytes == 2**28)].iloc[0]
    assert (row.source, row.transport, row.n_wrong, row.iters) == ("simulated", "ib-fdr", -1, 0)
    assert row.min_us == row.median_us == row.max_us == row.ci_low_us == row.ci_high_us
    assert math.isnan(row.first_us)
    assert row.algbw_GBps == pytest.approx(2**28 / row.median_us / 1e3)
    assert row.busbw_GBps == pytest.approx(row.algbw_GBps * busbw_factor(8))


def test_the_analytic_model_agrees_with_the_simulation_on_a_preset(tmp_path):
    for model in ("sim", "analytic"):
        assert main(["sim", "--network", "ib-fdr", "--model", model, "--ranks", "8", "--sizes", "256MiB",
                     "--out", str(tmp_path / model)]) == 0
    simulated = read_results(tmp_path / "sim")[1].set_index("algorithm")["median_us"]
    modelled = read_results(tmp_path / "analytic")[1]
    assert set(modelled.source) == {"model"}
    for algorithm, us in modelled.set_index("algorithm")["median_us"].items():
        assert us == pytest.approx(simulated[algorithm], rel=1e-9)


def test_a_sweep_on_several_processes_stores_the_same_results_in_the_same_order(tmp_path):
    argv = ["sim", "--network", "ib-fdr", "--ranks", "2,3,...,9", "--sizes", "1KiB,4MiB"]
    assert main([*argv, "--out", str(tmp_path / "serial")]) == 0
    assert main([*argv, "--jobs", "2", "--out", str(tmp_path / "parallel")]) == 0
    serial, parallel = (read_results(tmp_path / name)[1] for name in ("serial", "parallel"))
    columns = ["algorithm", "nranks", "size_bytes", "median_us"]
    assert parallel[columns].equals(serial[columns])


def test_a_negative_number_of_jobs_is_refused_in_one_sentence(capsys):
    assert main(["sim", "--no-save", "--ranks", "2", "--sizes", "1KiB", "--jobs", "-1"]) != 0
    err = capsys.readouterr().err
    assert "--jobs must be 0 (one per CPU) or more, got -1" in err and "Traceback" not in err

def test_command_line_overrides_change_the_network(capsys):
    argv = ["sim", "--no-save", "--network", "ib-edr", "--algorithms", "ring", "--ranks", "8",
            "--sizes", "64MiB"]
    assert main(argv) == 0
    base = float(capsys.readouterr().out.splitlines()[-1].split()[3])
    assert main([*argv, "--bandwidth", "400Gbps", "--topology", "fat-tree", "--hosts-per-leaf", "4",
                 "--oversubscription", "2", "--placement", "cyclic"]) == 0
    faster_but_shared = float(capsys.readouterr().out.splitlines()[-1].split()[3])
    assert faster_but_shared < base


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_runs(name):
    spec = load_network(name)
    assert spec.name == name and spec.bandwidth > 0
    assert main(["sim", "--no-save", "--network", name, "--ranks", "2,16", "--sizes", "1MiB"]) == 0


def test_presets_cover_the_issue():
    assert {"ib-fdr", "ib-edr", "ib-hdr", "ib-ndr", "roce-100g", "tcp-25g", "dgx-h100",
            "p100-fdr2-pcie"} <= set(preset_names())
    assert load_network("p100-fdr2-pcie").topology == "pcie-rails"


def test_units():
    assert parse_bandwidth("400Gbps") == 50e9 and parse_bandwidth("12.5GB/s") == 12.5e9
    assert parse_time("1us") == 1e-6 and parse_time("500ns") == pytest.approx(5e-7)
    assert parse_ranks("2,4,...,1024") == [2**k for k in range(1, 11)]
    assert parse_ranks("2..5") == [2, 3, 4, 5] and parse_ranks("3,5,...,11") == [3, 5, 7, 9, 11]
    assert parse_sizes("1KiB..1GiB") == [2**k for k in range(10, 31)]


def test_sim_never_loads_mpi_cupy_or_pyverbs():
    import subprocess
    import sys

    code = ("import sys, collbench.sim.cli, collbench.sim.predict, collbench.sim.calibrate, "
            "collbench.sim.executor, collbench.sim.presets; "
            "from collbench.cli import main; main(['sim', '--no-save', '--ranks', '2', '--sizes', '1K']); "
            "print(sorted(m for m in ('mpi4py', 'cupy', 'pyverbs') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("body, words", [
    ('bandwidth = [1, 2]\nlatency = "1us"', "bandwidth must be a string with a unit, e.g. "),
    ('bandwidth = "100Gbps"\nlatency = {value = 1}', "latency must be a string with a unit, e.g. "),
    ('bandwidth = true\nlatency = "1us"', 'bandwidth must be a string with a unit, e.g. "100Gbps" or '
     '"12.5GB/s", not true (a boolean)'),
    ('bandwidth = "100Gbps"\nlatency = "1us"\nnics_per_node = true', "nics_per_node must be a whole number, "
     "not true (a boolean)"),
    ('bandwidth = "100Gbps"\nlatency = "1us"\noversubscription = [2]', "oversubscription must be a number"),
    ('bandwidth = "100Gbps"\nlatency = "1us"\ntopology = 3', "topology must be a string"),
    ('bandwidth = "0Gbps"\nlatency = "1us"', "bandwidth must be a positive number"),
    ('bandwidth = "-5Gbps"\nlatency = "1us"', "bandwidth must be a positive number"),
    ('bandwidth = "100Gbps"\nlatency = "-1us"', "latency must be a non-negative number"),
    ('bandwidth = "100Gbps"\nlatency = "1us"\nbandwdith = "1Gbps"', "unknown network keys bandwdith"),
    ('bandwidth = 100\nlatency = "1us"', "bandwidth = 100 has no unit"),
    ('bandwidth = "100Gbps"\nlatency = 1e-6', "latency = 1e-06 has no unit"),
    ('latency = "1us"', "bandwidth is missing"),
    ('bandwidth = "100Gbps"', "latency is missing"),
    ('bandwidth = "100Gbps"\nlatency = "1us"\ntorus_dims = "4x4"', "torus_dims must be a list of whole"),
    ('bandwidth = "100Gbps"\nlatency = "1us"\nplacement = [0, true]', "placement must be block, cyclic"),
])
def test_a_bad_network_file_is_one_sentence_naming_the_file_and_the_key(tmp_path, capsys, body, words):
    network = tmp_path / "net.toml"
    network.write_text(body + "\n")
    assert main(["sim", "--no-save", "--network", str(network), "--ranks", "2", "--sizes", "1K"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"collbench: error: network file {network}: "), err
    assert words in err[0]


def test_numbers_from_json_or_python_must_be_numbers():
    from collbench.sim.network import NetworkSpec, SpecError

    with pytest.raises(SpecError, match="bandwidth must be a number, not True"):
        NetworkSpec(bandwidth=True)
    with pytest.raises(SpecError, match="hosts_per_leaf must be a number, not"):
        NetworkSpec.from_dict({"hosts_per_leaf": [16]})


@pytest.mark.timeout(120)
def test_ctrl_c_stops_a_parallel_sweep_at_once_and_quietly(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, twice) while two workers simulate long
    points: the command ends within seconds, with one line and no traceback, exit 130,
    leaving no worker behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "collbench", "sim", "--network", "ib-edr", "--algorithms", "ring",
            "--ranks", "4096,4095,4094", "--sizes", "256MiB", "--jobs", "2", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().startswith("# network")  # the sweep has begun
    time.sleep(3)  # the workers are simulating
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    began = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - began < 5
    assert proc.returncode == 130
    assert "Traceback" not in err and "collbench: interrupted" in err
    assert _alive_in_session(proc.pid) == []  # no worker left running


def _alive_in_session(sid: int) -> list[int]:
    """Processes of session *sid* that still run (zombies waiting for init excluded)."""
    from pathlib import Path

    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            alive.append(int(stat.parent.name))
    return alive


def test_message_counts_are_the_schedules_own():
    from collbench.algorithms import build
    from collbench.sim.predict import messages

    for algorithm in ("naive", "ring", "rabenseifner"):
        for p in (1, 2, 3, 5, 8, 12, 33):
            schedule = build(algorithm, p, 64 * p)
            steps = (step for r in range(p) for step in schedule.stream_fields(r))
            sent = sum(op[0].name == "SEND" for step in steps for op in step)
            assert messages(algorithm, p) == sent, (algorithm, p)


def test_an_expensive_simulation_is_announced_in_one_line_before_it_starts(capsys):
    """P = 100000 ring: 2e10 messages, hours; a small sweep says nothing."""
    import subprocess
    import sys

    with subprocess.Popen([sys.executable, "-m", "collbench", "sim", "--no-save", "--ranks", "100000",
                           "--sizes", "1MiB", "--algorithms", "ring"], stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True) as proc:
        try:
            line = proc.stderr.readline()
        finally:
            proc.kill()
    assert line.startswith("collbench: warning: this sweep simulates 2e+10 messages (ring at P = 100000")
    assert " h of one core" in line
    assert main(["sim", "--no-save", "--ranks", "2,4", "--sizes", "1K"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_overridden_preset_is_named_for_what_changed(tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["sim", "--network", "ib-edr", "--bandwidth", "200Gbps", "--topology", "fat-tree",
                 "--ranks", "4", "--sizes", "1M", "--algorithms", "ring", "--out", str(out)]) == 0
    assert "# network ib-edr+topology+bandwidth: fat-tree" in capsys.readouterr().out
    assert read_results(out)[0]["network"]["name"] == "ib-edr+topology+bandwidth"
    assert main(["sim", "--network", "ib-edr", "--bandwidth", "100Gbps", "--ranks", "4", "--sizes", "1M",
                 "--no-save"]) == 0  # the preset's own figure: still the preset
    assert "# network ib-edr: switch" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--topology", "fat-tree", "--hosts-per-leaf", "8", "--ranks", "4,8"],
     "the fat tree's 8 hosts per leaf hold all 8 nodes of these runs under one leaf: it is a single switch"),
    (["--oversubscription", "2", "--ranks", "16"], "oversubscription describes a fat tree and change"),
    (["--topology", "pcie-rails", "--pcie-bandwidth", "16GB/s", "--nics-per-node", "2", "--ranks", "4"],
     "1 rank(s) per node use 1 of its 2 rails"),
])
def test_a_setting_that_changes_nothing_is_named(capsys, args, words):
    base = ["sim", "--no-save", "--network", "ib-edr", "--sizes", "1M", "--algorithms", "ring"]
    assert main([*base, *args]) == 0
    err = capsys.readouterr().err
    assert f"collbench: warning: {words}" in err
    assert main(["sim", "--no-save", "--network", "ib-edr", "--sizes", "1M", "--ranks", "64",
                 "--topology", "fat-tree", "--hosts-per-leaf", "8"]) == 0
    assert "warning" not in capsys.readouterr().err


SMALL = ["sim", "--network", "ib-fdr", "--algorithms", "ring", "--ranks", "2,4", "--sizes", "1KiB"]


def table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip().startswith(("naive", "ring", "rabenseifner"))]


def test_a_rerun_into_the_same_folder_skips_the_points_it_holds_and_adds_the_new_ones(tmp_path, capsys):
    out = tmp_path / "pred"
    assert main([*SMALL, "--out", str(out)]) == 0
    first = read_results(out)[1]
    capsys.readouterr()
    assert main([*SMALL, "--out", str(out)]) == 0  # everything stored: nothing predicted again
    printed = capsys.readouterr().out
    assert f"# resuming: 2 point(s) already in {out} are skipped" in printed and not table_rows(printed)
    assert main([*SMALL[:-1], "1KiB,1MiB", "--algorithms", "ring,naive", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already in") == 1 and "# resuming: 2 point(s)" in printed
    assert len(table_rows(printed)) == 2 * 2 * 2 - 2
    provenance, summary, _ = read_results(out)
    assert len(summary) == 8 and not summary.duplicated(["algorithm", "nranks", "size_bytes"]).any()
    assert summary.iloc[:2].equals(first)  # the stored points are kept as they were
    assert len(provenance["resumed"]) == 2


@pytest.mark.parametrize("change, words", [
    (["--bandwidth", "200Gbps"], "network.bandwidth 6812500000.0 -> 25000000000.0"),
    (["--segments", "4"], "segments 1 -> 4"),
    (["--execution", "dataflow"], "execution 'step' -> 'dataflow'"),
    (["--model", "analytic"], "source 'simulated' -> 'model'; model 'sim' -> 'analytic'"),
    (["--dtype", "float64"], "dtype 'float32' -> 'float64'"),
])
def test_a_folder_predicted_with_other_settings_is_refused_in_one_sentence(tmp_path, capsys, change, words):
    out = tmp_path / "pred"
    assert main([*SMALL, "--out", str(out)]) == 0
    before = (out / "summary.csv").read_bytes()
    capsys.readouterr()
    assert main([*SMALL, *change, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and f"results folder {out} was written with other" in err[0]
    assert "--force-new" in err[0]
    assert (out / "summary.csv").read_bytes() == before


def test_force_new_sets_the_other_folder_aside_and_starts_afresh(tmp_path, capsys):
    out = tmp_path / "pred"
    assert main([*SMALL, "--out", str(out)]) == 0
    assert main([*SMALL, "--segments", "4", "--force-new", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("pred.")]
    assert f"moved the earlier results in {out} to {aside}" in err
    assert read_results(out)[0]["config"]["segments"] == 4 and "resumed" not in read_results(out)[0]
    assert read_results(aside)[0]["config"]["segments"] == 1 and len(read_results(aside)[1]) == 2


def test_a_measured_folder_is_not_extended_with_predictions(tmp_path, capsys):
    from collbench.sim.network import NetworkSpec

    from tests.sim_data import model_run

    model_run(tmp_path / "run", NetworkSpec(), (2,), (1,)).close()
    assert main([*SMALL, "--out", str(tmp_path / "run")]) == 2
    assert "source 'measured' -> 'simulated'" in capsys.readouterr().err


def test_sim_predict_resumes_with_its_calibration_and_refuses_another(tmp_path, capsys):
    from collbench.sim.network import NetworkSpec

    from tests.sim_data import model_run

    for name, bandwidth, start in (("a", 5e9, "2025-01-01T00:00:00Z"), ("b", 1e9, "2025-01-02T00:00:00Z")):
        spec = NetworkSpec(topology="switch", bandwidth=bandwidth, latency=2e-6, gamma=3e-10)
        model_run(tmp_path / name, spec, (2, 3, 4), (1, 256, 4096), provenance={"start_time": start}).close()
        assert main(["sim", "calibrate", str(tmp_path / name), "-o", str(tmp_path / f"{name}.json")]) == 0
    out = tmp_path / "pred"
    predict = ["sim", "predict", "--algorithms", "ring", "--ranks", "4", "--sizes", "1KiB,1MiB",
               "--out", str(out)]
    assert main([*predict, "--calibration", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    assert main([*predict, "--calibration", str(tmp_path / "a.json")]) == 0
    assert "# resuming: 2 point(s)" in capsys.readouterr().out
    assert main([*predict, "--calibration", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "network.bandwidth" in err[0] and "calibrated_from" in err[0]
