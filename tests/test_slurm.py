"""Slurm rendering and submission without Slurm: settings, precedence, scripts, safety.

The hostile-string tests run the rendered script for real under bash, with ``srun`` and
``mpiexec`` replaced by stubs that record their arguments: every hostile value must arrive
as one verbatim argument, and no injected command may run.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from collbench.cli import main
from collbench.errors import CollbenchError
from collbench.slurm import dry_run, plan
from collbench.slurm.render import TEMPLATE_DIR, run_arguments
from collbench.slurm.settings import SHAPES, merge

RUN = """\
[run]
name = "demo"
algorithms = ["ring", "native"]
minbytes = "8"
maxbytes = "1K"
iters = 3
"""


def experiment(tmp_path: Path, slurm: str = "", run: str = RUN) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(run + ("\n[slurm]\n" + slurm if slurm else ""))
    return path


def sbatch_lines(script: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_templates_exist_for_every_shape():
    for shape in SHAPES:
        assert (TEMPLATE_DIR / f"{shape}.sbatch").is_file()


def test_one_job_per_configuration(tmp_path):
    sweep = plan(experiment(tmp_path), {"nodes": "2,4", "ntasks_per_node": "1,8", "run_id": "r1",
                                        "results": str(tmp_path / "res"), "partition": "p",
                                        "account": "a", "time": "00:30:00"})
    assert [job.configurations for job in sweep.jobs] == [((2, 1),), ((2, 8),), ((4, 1),), ((4, 8),)]
    assert sweep.folder == tmp_path / "res" / "demo-r1"
    lines = sbatch_lines(sweep.jobs[1].script)
    assert "--nodes=2" in lines and "--ntasks-per-node=8" in lines
    assert "--partition=p" in lines and "--account=a" in lines and "--time=00:30:00" in lines
    assert "--requeue" in lines and "--open-mode=append" in lines
    assert f"--output={sweep.folder}/slurm-%x-%j.out" in lines
    assert not any(job.after_previous for job in sweep.jobs)


def test_array_mode_is_one_script_sized_for_the_largest(tmp_path):
    sweep = plan(experiment(tmp_path), {"nodes": "1,2,4", "mode": "array", "run_id": "r"})
    (job,) = sweep.jobs
    lines = sbatch_lines(job.script)
    assert "--array=0-2" in lines and "--nodes=4" in lines
    assert "NODES=(1 2 4) TASKS=(1 1 1)" in job.script
    assert any(line.endswith("slurm-%x-%A_%a.out") for line in lines)


def test_chain_mode_links_each_job_to_the_previous(tmp_path):
    sweep = plan(experiment(tmp_path), {"nodes": "1,2,4", "mode": "chain", "run_id": "r"})
    assert [job.after_previous for job in sweep.jobs] == [False, True, True]
    text = dry_run(sweep)
    assert "--dependency=afterany:<job id of cb-demo-n1-t1>" in text
    assert "--dependency=afterany:<job id of cb-demo-n2-t1>" in text
    assert text.count("#!/bin/bash") == 3


def test_gpu_shape_follows_the_transport_and_runs_one_rank_per_gpu(tmp_path):
    run = RUN + 'transport = "nccl"\nbuffers = "cupy"\n'
    sweep = plan(experiment(tmp_path, "gpus_per_node = 4\n", run=run), {"run_id": "r"})
    lines = sbatch_lines(sweep.jobs[0].script)
    assert "--gpus-per-node=4" in lines and "--ntasks-per-node=4" in lines
    assert "nvidia-smi" in sweep.jobs[0].script
    assert "--transport nccl" in sweep.jobs[0].script and "--buffers cupy" in sweep.jobs[0].script


def test_ib_shape_and_explicit_shape(tmp_path):
    run = RUN.replace('["ring", "native"]', '["ring"]') + 'transport = "verbs"\ndevice = "mlx5_0"\n'
    assert "ibv_devices" in plan(experiment(tmp_path, run=run), {"run_id": "r"}).jobs[0].script
    assert "ibv_devices" in plan(experiment(tmp_path), {"shape": "ib", "run_id": "r"}).jobs[0].script


def test_native_over_verbs_is_refused_when_rendering(tmp_path):
    run = RUN + 'transport = "verbs"\n'
    with pytest.raises(CollbenchError, match="verbs transport has no native all-reduce"):
        plan(experiment(tmp_path, run=run), {"run_id": "r"})


def test_precedence_cli_over_experiment_over_profile(tmp_path):
    profile = tmp_path / "site.toml"
    profile.write_text('[slurm]\npartition = "site"\naccount = "site"\nqos = "site"\n'
                       'setup = ["module load mpi"]\n[slurm.env]\nA = "profile"\nB = "profile"\n')
    exp = experiment(tmp_path, 'account = "exp"\nqos = "exp"\n[slurm.env]\nB = "exp"\n')
    sweep = plan(exp, {"qos": "cli", "run_id": "r"}, profile)
    lines = sbatch_lines(sweep.jobs[0].script)
    assert {"--partition=site", "--account=exp", "--qos=cli"} <= set(lines)
    assert "module load mpi" in sweep.jobs[0].script
    assert "export A=profile" in sweep.jobs[0].script and "export B=exp" in sweep.jobs[0].script


def test_run_table_becomes_flags_and_out_is_the_sweep_folder(tmp_path):
    run = RUN + 'out = "/elsewhere"\nmodes = "in"\n'
    sweep = plan(experiment(tmp_path, run=run), {"run_id": "r"})
    assert run_arguments(sweep.config, {"algorithms": 1, "modes": 1}) == [
        "--algorithms", "ring,native", "--modes", "in", "--name", "demo"]
    script = sweep.jobs[0].script
    assert "/elsewhere" not in script
    assert 'srun --mpi=pmi2 --nodes="$N" --ntasks-per-node="$T"' in script
    assert "collbench run --algorithms ring,native -b 8 -e 1024 -n 3 --modes in --name demo" in script
    assert '--out "$RESULTS"' in script


def test_mpiexec_launcher_and_timeout_requeue(tmp_path):
    slurm = ('launcher = "mpiexec"\nmpiexec_args = ["-iface", "lo"]\n'
             'requeue_before_timeout = 120\nmax_restarts = 2\n')
    script = plan(experiment(tmp_path, slurm), {"run_id": "r"}).jobs[0].script
    assert "mpiexec -iface lo -n \"$((N * T))\" -ppn \"$T\" collbench run" in script
    assert "--signal=B:USR1@120" in sbatch_lines(script)
    assert "trap requeue_before_timeout USR1" in script and "-lt 2 ]" in script


def test_run_id_defaults_to_render_time_and_is_stable_when_given(tmp_path):
    a = plan(experiment(tmp_path), {"results": str(tmp_path)})
    assert a.folder.name.startswith("demo-20")
    b = plan(experiment(tmp_path), {"results": str(tmp_path), "run_id": "x"})
    c = plan(experiment(tmp_path), {"results": str(tmp_path), "run_id": "x"})
    assert b.jobs[0].script == c.jobs[0].script


def test_every_rendered_script_is_valid_bash(tmp_path):
    for mode in ("jobs", "array"):
        for shape in SHAPES:
            sweep = plan(experiment(tmp_path), {"nodes": "1,2", "mode": mode, "shape": shape,
                                                "requeue_before_timeout": "60", "run_id": "r"})
            for job in sweep.jobs:
                subprocess.run(["bash", "-n"], input=job.script, text=True, check=True)


@pytest.mark.parametrize("overrides, words", [
    ({"partition": "p\n#SBATCH --uid=0"}, "slurm partition"),
    ({"partition": "p; rm -rf /"}, "slurm partition"),
    ({"account": "$(id)"}, "slurm account"),
    ({"qos": "a b"}, "slurm qos"),
    ({"constraint": "x\ntouch /tmp/x"}, "slurm constraint"),
    ({"time": "00:30:00; id"}, "not a Slurm time"),
    ({"time": "soon"}, "not a Slurm time"),
    ({"sbatch": ["--exclusive\nid"]}, "sbatch option"),
    ({"sbatch": ["--comment=$(id)"]}, "sbatch option"),
    ({"sbatch": ["-x"]}, "sbatch option"),
    ({"sbatch": ["--nodes=9"]}, "set by collbench"),
    ({"results": "/tmp/a b"}, "results folder"),
    ({"results": "/tmp/$(id)"}, "results folder"),
    ({"results": "/tmp/%j"}, "results folder"),
    ({"run_id": "../x"}, "run_id"),
    ({"run_id": "a;b"}, "run_id"),
    ({"mpi": "pmi2 --x"}, "slurm mpi"),
    ({"ppn_flag": "-ppn;id"}, "ppn_flag"),
    ({"setup": ["module load x\nid"]}, "single line"),
    ({"setup": ["ok", "nul\0"]}, "single line"),
    ({"srun_args": ["--x\n--y"]}, "single line"),
    ({"env": {"A;id": "1"}}, "environment variable name"),
    ({"env": {"A": "1\nid"}}, "single line"),
    ({"nodes": "0"}, "positive"),
    ({"nodes": "two"}, "whole number"),
    ({"launcher": "ssh"}, "launcher"),
    ({"mode": "parallel"}, "submission mode"),
    ({"shape": "tpu"}, "cluster shape"),
    ({"setup": "x", "colour": "red"}, "unknown Slurm setting"),
])
def test_unsafe_or_wrong_values_are_refused(tmp_path, overrides, words):
    with pytest.raises(CollbenchError, match=words):
        plan(experiment(tmp_path), overrides)


def test_hostile_run_name_is_refused(tmp_path):
    run = RUN.replace('name = "demo"', 'name = "x; touch /tmp/owned"')
    with pytest.raises(CollbenchError, match="run name"):
        plan(experiment(tmp_path, run=run), {"run_id": "r"})


def test_bad_tables_and_files_are_one_sentence(tmp_path):
    with pytest.raises(CollbenchError, match="must be a table"):
        plan(experiment(tmp_path, run="slurm = 3\n" + RUN))
    with pytest.raises(CollbenchError, match="no \\[slurm\\] table"):
        bad = tmp_path / "p.toml"
        bad.write_text("x = 1\n")
        plan(experiment(tmp_path), {}, bad)
    with pytest.raises(CollbenchError, match="cannot read sbatch template"):
        plan(experiment(tmp_path), {}, None, tmp_path / "missing.sbatch")
    template = tmp_path / "t.sbatch"
    template.write_text("#!/bin/bash\n{{ sbatch }}\n{{ select }}\n{{ launch }}\n{{ oops }}\n")
    with pytest.raises(CollbenchError, match="unknown placeholder"):
        plan(experiment(tmp_path), {}, None, template)


def test_merge_rejects_wrong_types():
    with pytest.raises(CollbenchError, match="list of strings"):
        merge({"setup": [1, 2]})
    with pytest.raises(CollbenchError, match="true or false"):
        merge({"requeue": "yes"})
    with pytest.raises(CollbenchError, match="must be a string"):
        merge({"partition": 3})


HOSTILE = ["; touch {m}", "$(touch {m})", "`touch {m}`", "' ; touch {m}; '", '" ; touch {m}; "',
           "&& touch {m}", "| touch {m}", "$'\\x3b' touch {m}", "\\; touch {m}", "*", "~", "-- {m}"]


def _stub(bin_dir: Path, name: str, record: Path) -> None:
    """A fake launcher that records its arguments as JSON, one call per line."""
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_hostile_values_reach_the_launcher_verbatim_and_run_nothing(tmp_path, launcher):
    marker = tmp_path / "owned"
    values = [h.format(m=marker) for h in HOSTILE]
    bin_dir, record = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    _stub(bin_dir, "srun", record)
    _stub(bin_dir, "mpiexec", record)
    run = RUN + f"device = {json.dumps(values[0])}\n"
    overrides = {"launcher": launcher, "run_id": "r", "results": str(tmp_path / "res"),
                 "srun_args": values, "mpiexec_args": values,
                 "collbench": ["collbench", *values],
                 "env": {f"HOSTILE_{i}": v for i, v in enumerate(values)}}
    sweep = plan(experiment(tmp_path, run=run), overrides)
    script = tmp_path / "job.sbatch"
    script.write_text(sweep.jobs[0].script)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
           "SLURM_JOB_NODELIST": "n1"}
    done = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    (argv,) = [json.loads(line) for line in record.read_text().splitlines()]
    start = argv.index("collbench")
    assert argv[start + 1:start + 1 + len(values)] == values
    launcher_args = argv[:start]
    for v in values:
        assert v in launcher_args
    assert argv[argv.index("--device") + 1] == values[0]
    results = sweep.results_folder(1, 1)
    assert argv[argv.index("--out") + 1] == str(results)
    assert (results / "slurm-jobs.tsv").read_text().splitlines()[1].split("\t")[1] == "42"
    assert (sweep.folder / "job-42").resolve() == results


def test_hostile_env_values_are_exported_verbatim(tmp_path):
    marker = tmp_path / "owned"
    values = [h.format(m=marker) for h in HOSTILE]
    sweep = plan(experiment(tmp_path), {"env": {f"V{i}": v for i, v in enumerate(values)}})
    env_lines = "\n".join(line for line in sweep.jobs[0].script.splitlines()
                          if line.startswith("export V"))
    check = env_lines + "\n" + "\n".join(f'printf "%s\\0" "$V{i}"' for i in range(len(values)))
    out = subprocess.run(["bash", "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.split("\0")[:-1] == values
    assert not marker.exists()


def test_cli_render_prints_a_script_and_bad_input_exits_2(tmp_path, capsys):
    exp = experiment(tmp_path)
    assert main(["slurm", "render", str(exp), "--nodes", "2", "--partition", "p",
                 "--account", "a", "--time", "00:30:00", "--run-id", "r"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash\n") and "#SBATCH --partition=p" in out
    assert main(["slurm", "render", str(exp), "--partition", "p;id"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("collbench: error: slurm partition") and err.count("\n") == 1
    assert main(["slurm", "render", str(tmp_path / "none.toml")]) == 2


def test_cli_render_writes_files_and_dry_run_writes_nothing(tmp_path, capsys):
    exp = experiment(tmp_path)
    res = tmp_path / "res"
    assert main(["slurm", "render", str(exp), "--nodes", "1,2", "-o", str(tmp_path / "out"),
                 "--results", str(res), "--run-id", "r"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cb-demo-n1-t1.sbatch", "cb-demo-n2-t1.sbatch"]
    assert main(["slurm", "submit", str(exp), "--nodes", "1,2", "--mode", "chain", "--dry-run",
                 "--results", str(res), "--run-id", "r", "--sbatch-option", "exclusive",
                 "--sbatch-option=--mem=0"]) == 0
    out = capsys.readouterr().out
    first = shlex.join(["sbatch", "--parsable", str(res / "demo-r/jobs/cb-demo-n1-t1.sbatch")])
    assert f"# {first}\n" in out and "#SBATCH --exclusive\n#SBATCH --mem=0" in out
    assert not res.exists()


def test_profile_from_environment(tmp_path, monkeypatch, capsys):
    profile = tmp_path / "site.toml"
    profile.write_text('[slurm]\npartition = "from-env"\n')
    monkeypatch.setenv("COLLBENCH_SLURM_PROFILE", str(profile))
    assert main(["slurm", "render", str(experiment(tmp_path)), "--run-id", "r"]) == 0
    assert "#SBATCH --partition=from-env" in capsys.readouterr().out


def test_submit_without_sbatch_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["slurm", "submit", str(experiment(tmp_path)), "--results", str(tmp_path)]) == 2
    assert "sbatch not found" in capsys.readouterr().err
