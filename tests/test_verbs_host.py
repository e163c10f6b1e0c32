"""The verbs transport on a machine without RDMA: clean one-sentence errors, no traceback.

These run on CI's host (no kernel verbs support); on a machine that has RDMA devices they are
skipped, since the errors they check cannot happen there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collbench import rdma

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
no_kernel = pytest.mark.skipif(rdma.SYSFS_VERBS.is_dir(),
                               reason="this machine has kernel verbs support; the error cannot occur")


def _pyverbs_importable() -> bool:
    try:
        rdma.pyverbs_modules()
        return True
    except rdma.VerbsUnavailable:
        return False


def _expected_sentence() -> str:
    return "has no user-space verbs support" if _pyverbs_importable() else "needs pyverbs"


@no_kernel
def test_probe_says_why():
    lines = rdma.probe()
    assert lines[-1][0] is False and lines[-1][1] == "verbs"
    assert _expected_sentence() in lines[-1][2]


@no_kernel
def test_doctor_says_why_in_one_line():
    out = subprocess.run([str(BIN / "collbench"), "doctor"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    verbs = [line for line in out.stdout.splitlines() if line.split()[1:2] == ["verbs"]]
    assert len(verbs) == 1 and verbs[0].startswith("no ") and _expected_sentence() in verbs[0]


@pytest.mark.mpi
@no_kernel
def test_run_fails_cleanly_on_every_rank(tmp_path):
    mpiexec = BIN / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("no mpiexec beside the venv's python (pip install mpich)")
    out = subprocess.run([str(mpiexec), "-n", "2", str(BIN / "collbench"), "run", "--transport", "verbs",
                          "--algorithms", "ring", "-b", "8", "-e", "64", "--no-progress",
                          "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    assert _expected_sentence() in text


def test_pyverbs_shim_finds_an_enums_module_or_says_why():
    try:
        _, enums = rdma.pyverbs_modules()
    except rdma.VerbsUnavailable as e:
        assert "pyverbs" in str(e) and "docs/verbs.md" in str(e)
        return
    assert enums.__name__ in ("pyverbs.libibverbs_enums", "pyverbs.enums")
    assert hasattr(enums, "IBV_WR_RDMA_WRITE_WITH_IMM")


def test_a_machine_with_an_rdma_device_is_told_to_use_it_not_the_test_guest(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyverbs", None)  # pyverbs missing: the doctor's advice
    ib = tmp_path / "infiniband"
    (ib / "mlx5_0").mkdir(parents=True)
    monkeypatch.setattr(rdma, "SYSFS_IB", ib)
    (line,) = [d for ok, label, d in rdma.probe() if label == "verbs"]
    assert "RDMA devices (mlx5_0)" in line and "python3-pyverbs" in line
    assert "rxe-guest.sh setup" not in line and "Soft-RoCE" not in line
    (ib / "mlx5_0").rmdir()
    (line,) = [d for ok, label, d in rdma.probe() if label == "verbs"]
    assert "no RDMA device" in line and "rxe-guest.sh setup" in line and "without hardware" in line


def test_roce_gid_choice_prefers_v2_then_routable_then_lowest_index():
    link_local, mapped = "fe80:0000:0000:0000:5054:00ff:fe12:3456", "0000:0000:0000:0000:0000:ffff:0a00:020f"
    rxe = [(0, link_local, "IB/RoCE v1"), (1, link_local, "RoCE v2"),
           (2, mapped, "IB/RoCE v1"), (3, mapped, "RoCE v2")]
    assert rdma.choose_gid(rxe) == (3, mapped)
    assert rdma.choose_gid(rxe[:3]) == (1, link_local)  # v2 link-local before a v1 routable one
    assert rdma.choose_gid([rxe[0], rxe[2]]) == (2, mapped)
    assert rdma.choose_gid([(4, mapped, ""), (2, mapped, "")]) == (2, mapped)  # types unknown
    assert rdma.choose_gid([]) is None


def test_gid_type_is_read_from_sysfs(tmp_path, monkeypatch):
    types = tmp_path / "rxe0" / "ports" / "1" / "gid_attrs" / "types"
    types.mkdir(parents=True)
    (types / "1").write_text("RoCE v2\n")
    monkeypatch.setattr(rdma, "SYSFS_IB", tmp_path)
    assert rdma.gid_type("rxe0", 1, 1) == "RoCE v2" and rdma.gid_type("rxe0", 1, 0) == ""
