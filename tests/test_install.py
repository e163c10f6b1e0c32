"""An installed wheel, not the work tree: one import package (``collbench.*``), templates and
presets as package data, and every sub-command working from a clean venv outside the repo."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"pip could not build the wheel (no network for setuptools?): {done.stderr[-300:]}")
    return next(out.glob("collbench-*.whl"))


def test_wheel_holds_one_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"collbench", wheel.name.split("-py")[0] + ".dist-info"}
    for data in ("collbench/templates/cpu.sbatch", "collbench/templates/gpu.sbatch",
                 "collbench/templates/ib.sbatch", "collbench/templates/profiles/localhost.toml",
                 "collbench/sim/networks/ib-edr.toml", "collbench/algorithms/ring.py",
                 "collbench/reports/build.py"):
        assert data in names, data


def test_every_subcommand_works_from_a_clean_install(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    pip = subprocess.run([bin_dir / "python", "-m", "pip", "install", "-q", f"{wheel}[mpi]"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        pytest.skip(f"pip could not install the wheel's dependencies: {pip.stderr[-300:]}")
    work = tmp_path / "elsewhere"  # not the repository: nothing can come from the work tree
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
        return done

    where = run(bin_dir / "python", "-c", "import collbench.sim, collbench.templates; "
                "print(collbench.sim.__file__); print(collbench.templates.__file__)")
    assert all(str(env_dir) in line for line in where.stdout.split())
    run(bin_dir / "collbench", "--version")
    run(bin_dir / "mpiexec", "-n", "2", bin_dir / "collbench", "run", "-b", "8", "-e", "1K", "-f", "32",
        "-n", "2", "-w", "1", "--out", work / "measured")
    run(bin_dir / "collbench", "sim", "--network", "ib-edr", "--ranks", "2,4", "--sizes", "1K,1M",
        "--out", work / "predicted")
    run(bin_dir / "collbench", "report", work / "measured", work / "predicted", "--out", work / "report")
    assert (work / "report" / "index.html").is_file()
    (work / "exp.toml").write_text('[run]\nalgorithms = ["ring"]\nminbytes = "8"\nmaxbytes = "1K"\n')
    rendered = run(bin_dir / "collbench", "slurm", "render", work / "exp.toml", "--nodes", "2",
                   "--time", "00:05:00", "--results", work / "results")
    assert "#SBATCH" in rendered.stdout and "collbench" in rendered.stdout
