"""The verbs transport on a real Soft-RoCE device (rxe0) inside the QEMU guest.

One guest boot runs everything (booting and importing under emulation are the slow parts):
a single ``mpiexec -n 4`` of this file as a driver, which splits the world into 2-, 3- and
4-rank communicators and runs ``collbench.harness.run_sweep`` over the verbs transport for every
case of :func:`cases` (all algorithms, several dtypes/ops, 0 B to several MiB, segmenting and the
registration cache switched on and off), each into its own results folder. Before that the
guest's shell checks the clean errors without a device (``rdma link delete rxe0``, before any
MPI job holds the device) and adds rxe0 back. The
tests then read the results folders: every point present and ``n_wrong == 0`` (the harness
checks every point against the exact expected result, the same numbers as numpy's reference).

Skipped, with the reason, when the guest cannot be built (not root, no apt, no QEMU).
Timings inside the emulated guest mean nothing and are not looked at.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "rxe-guest.sh"
VENV = ROOT / ".venv"
GUEST_DIR = Path(os.environ.get("RXEVM_DIR", "/tmp/collbench-rxe-vm"))
WORLD = 4
MIB = 1 << 20
pytestmark = pytest.mark.timeout(3000)  # one guest boot runs the whole matrix under emulation


def cases() -> list[dict]:
    """Every sweep run in the guest: name, ranks, run settings and COLLBENCH_VERBS_* switches."""
    all3 = "naive,ring,rabenseifner"

    def case(name, nranks, datatype, op, minbytes, maxbytes, stepfactor, env, **extra):
        return dict(name=name, nranks=nranks, algorithms=extra.pop("algorithms", all3),
                    datatype=datatype, op=op, minbytes=minbytes, maxbytes=maxbytes,
                    stepfactor=stepfactor, env=env, **extra)

    # Sizes step sparsely: under emulation a point costs seconds (about 5 a minute at P >= 3).
    return [
        # 0 B .. 4 MiB, every algorithm, for P = 2, 3, 4: segmenting on (16 KiB) and off
        case("p2-f32-sum-seg16k", 2, "float32", "sum", 0, 4 * MIB, 1024, {"SEGMENT": "16K"},
             modes="out,in"),
        case("p3-f32-sum-seg16k", 3, "float32", "sum", 0, 4 * MIB, 1024, {"SEGMENT": "16K", "WINDOW": "8"}),
        case("p4-f32-sum-seg16k", 4, "float32", "sum", 0, 4 * MIB, 1024, {"SEGMENT": "16K"}),
        case("p2-f32-sum-whole", 2, "float32", "sum", 4, 4 * MIB, 1024, {"SEGMENT": "0"}),
        case("p3-f32-sum-whole", 3, "float32", "sum", 4, MIB, 512, {"SEGMENT": "0"}),
        # other dtypes and ops
        case("p3-f64-max", 3, "float64", "max", 8, 64 << 10, 64, {"SEGMENT": "8K"}),
        case("p4-i32-prod", 4, "int32", "prod", 4, 16 << 10, 64, {}),
        case("p2-i64-min", 2, "int64", "min", 8, 512 << 10, 64, {"SEGMENT": "32K"}),
        case("p3-f16-sum", 3, "float16", "sum", 2, 8 << 10, 64, {}),
        # techniques switched off: no registration cache, stop-and-wait; ring with 4 lanes
        case("p4-nocache-stopwait", 4, "float32", "sum", 4, 256 << 10, 256,
             {"REGCACHE": "0", "WINDOW": "1", "SEGMENT": "64K"}),
        case("p3-ring-lanes4", 3, "float32", "sum", 4, 2 * MIB, 512, {"SEGMENT": "128K"},
             algorithms="ring", segments=4, modes="out,in"),
        # dataflow execution, blocking polls, a registration cache below a step's working set
        # (ring at 1 MiB holds 1.33 MiB; nothing a step pins may be deregistered)
        case("p3-dataflow-block-smallcache", 3, "float32", "sum", 4, MIB, 512,
             {"SEGMENT": "16K", "POLL": "block", "REGCACHE_LIMIT": "1200000"},
             algorithms="ring,rabenseifner", execution="dataflow"),
        # two rails: rxe0 on eth0 and rxe1 on eth1, segments striped across them
        case("p3-two-rails", 3, "float32", "sum", 4, MIB, 512, {"SEGMENT": "16K"},
             algorithms="ring,naive", device="rxe0,rxe1"),
    ]


def expected_points(case: dict) -> tuple[int, list[int]]:
    """Number of points of a case and its sizes in bytes."""
    from collbench.config import make_config

    config = make_config(_settings(case, "unused"))
    return len(config.sizes()) * len(config.algorithms) * len(config.modes), config.sizes()


def _settings(case: dict, out: str) -> dict:
    return dict(algorithms=case["algorithms"], transport="verbs", datatype=case["datatype"],
                op=case["op"], minbytes=case["minbytes"], maxbytes=case["maxbytes"],
                stepfactor=case["stepfactor"], segments=case.get("segments", 1), iters=1,
                modes=case.get("modes", "out"), execution=case.get("execution", "step"),
                device=case.get("device"),
                warmup_iters=0, check_iters=1, timeout=240, name=case["name"], out=out)


# ---------------------------------------------------------------- the driver (inside the guest)

def driver(outdir: str) -> int:
    """Run every case on sub-communicators of one 4-rank job; rank 0 of each writes status."""
    from mpi4py import MPI

    from collbench.config import make_config
    from collbench.errors import CollbenchError
    from collbench.harness import run_sweep

    world = MPI.COMM_WORLD
    if world.rank == 0:
        Path(outdir).mkdir(parents=True, exist_ok=True)
    only = os.environ.get("COLLBENCH_GUEST_ONLY")  # debugging: a comma list of case names
    for case in cases():
        if only and case["name"] not in only.split(","):
            continue
        inside = world.rank < case["nranks"]
        sub = world.Split(0 if inside else MPI.UNDEFINED, world.rank)
        if inside:
            for key in ("SEGMENT", "WINDOW", "REGCACHE", "REGCACHE_LIMIT", "POLL"):
                os.environ.pop(f"COLLBENCH_VERBS_{key}", None)
            os.environ.update({f"COLLBENCH_VERBS_{k}": v for k, v in case["env"].items()})
            folder = f"{outdir}/{case['name']}"
            try:
                rc = run_sweep(make_config(_settings(case, folder)), sub, output_format="table",
                               argv=["collbench", "run", "--transport", "verbs", case["name"]])
                error = None
            except CollbenchError as e:
                rc, error = 2, str(e)
            if sub.rank == 0:
                Path(f"{folder}.status.json").write_text(json.dumps({"rc": rc, "error": error}))
                print(f"case {case['name']}: rc {rc} {error or ''}", flush=True)
            sub.Free()
        world.Barrier()
    return 0


# ---------------------------------------------------------------- the host side

RAIL2 = ("ip link set eth1 up && ip addr add 10.0.3.15/24 dev eth1 && "
         "rdma link add rxe1 type rxe netdev eth1 || echo 'no second rail (eth1)'")
"""The guest's second rxe device, on its second NIC (RXEVM_NICS=2), for the multi-rail case."""


def _guest_job() -> str:
    """The guest's shell job. The device is removed and the no-device errors checked from the
    shell, before any MPI job starts: MPICH's network layer may open rxe0 in MPI_Init, and
    ``rdma link delete`` then waits for a device the job itself holds (the earlier in-MPI
    version of these checks hung exactly there)."""
    py, mpiexec, cb = VENV / "bin" / "python", VENV / "bin" / "mpiexec", VENV / "bin" / "collbench"
    probe = f"{py} -c 'import json; from collbench import rdma; print(json.dumps(rdma.probe()))'"
    attempt = (f"{mpiexec} -iface lo -n 2 {cb} run --transport verbs --algorithms ring -b 8 -e 8 -n 1 -w 0 "
               "--timeout 120")
    return "\n".join([
        f"cd {ROOT}",
        "date +%T; rdma link delete rxe0",
        f"{cb} doctor > $OUT/doctor-nodevice.txt 2>&1",
        f"{probe} > $OUT/probe-nodevice.json",
        f"{attempt} --out $OUT/nodevice > $OUT/nodevice.out 2> $OUT/nodevice.err; echo $? > $OUT/nodevice.rc",
        "rdma link add rxe0 type rxe netdev eth0 || exit 97",
        f"{probe} > $OUT/probe.json",
        f"{attempt} --device mlx5_9 --out $OUT/baddevice > $OUT/baddevice.out 2> $OUT/baddevice.err; "
        "echo $? > $OUT/baddevice.rc",
        f"{cb} run --transport verbs --algorithms ring,native > $OUT/native.out 2> $OUT/native.err; "
        "echo $? > $OUT/native.rc",
        RAIL2,
        f"date +%T; time {mpiexec} -iface lo -n {WORLD} {py} {Path(__file__)} driver $OUT/cases; "
        "echo driver rc $?; date +%T",
        "grep -H . /sys/class/infiniband/rxe*/ports/1/hw_counters/* > $OUT/hw_counters.txt 2>&1",
    ])


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> Path:
    """Boot the guest once and return its $OUT folder (copied out of the guest share)."""
    if os.environ.get("COLLBENCH_RXE_TESTS") == "0":
        pytest.skip("COLLBENCH_RXE_TESTS=0: the Soft-RoCE guest matrix (about 10 minutes) was "
                    "switched off for this run")
    if shutil.which("qemu-system-x86_64") is None or not (GUEST_DIR / "vmlinuz").exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("the Soft-RoCE guest needs root and apt-get to be built "
                        "(scripts/rxe-guest.sh setup)")
        setup = subprocess.run(["bash", str(SCRIPT), "setup"], capture_output=True, text=True,
                               env={**os.environ, "RXEVM_DIR": str(GUEST_DIR)})
        if setup.returncode:
            pytest.skip(f"could not build the Soft-RoCE guest: {setup.stderr.strip()[-400:]}")
    try:
        import pyverbs  # noqa: F401
    except ImportError:
        subprocess.run(["bash", str(SCRIPT), "venv"], check=False)
    env = {**os.environ, "RXEVM_DIR": str(GUEST_DIR), "RXEVM_TIMEOUT": "2700", "RXEVM_NICS": "2"}
    result = subprocess.run(["bash", str(SCRIPT), "run", _guest_job()], capture_output=True,
                            text=True, env=env)
    out = tmp_path_factory.mktemp("rxe") / "out"
    shutil.copytree(GUEST_DIR / "out", out)
    (out / "host-side.log").write_text(result.stdout + result.stderr)
    print(result.stdout[-6000:], result.stderr[-2000:])
    if not (out / "job.rc").exists():
        pytest.fail(f"the guest did not finish its job (console: {out / 'console.log'})")
    return out


def _attempt(guest: Path, label: str) -> tuple[int, str]:
    """Exit status and stderr of one error check the guest's shell ran."""
    rc = guest / f"{label}.rc"
    assert rc.exists(), f"the guest job did not get to {label}; see {guest / 'job.log'}"
    return int(rc.read_text()), (guest / f"{label}.err").read_text()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("collbench: error:")]


@pytest.mark.rxe
def test_doctor_without_device_says_so(guest):
    doctor = (guest / "doctor-nodevice.txt").read_text()
    line = [x for x in doctor.splitlines() if x.split()[1:2] == ["verbs"]]
    assert line and line[0].startswith("no ") and "supports verbs but there is no RDMA device" in line[0]
    probe = json.loads((guest / "probe-nodevice.json").read_text())
    assert probe[-1][0] is False and "no RDMA device" in probe[-1][2]


@pytest.mark.rxe
def test_run_without_device_fails_cleanly(guest):
    rc, stderr = _attempt(guest, "nodevice")
    errors = _error_lines(stderr)
    assert rc != 0 and errors and all("no RDMA device found" in e for e in errors), stderr
    assert "Traceback" not in stderr


@pytest.mark.rxe
def test_doctor_lists_rxe0(guest):
    probe = json.loads((guest / "probe.json").read_text())
    details = [d for ok, label, d in probe if ok and label == "rdma"]
    assert any(d.startswith("rxe0 port 1: ACTIVE, link layer Ethernet") for d in details), probe
    assert probe[-1] == [True, "verbs", "transport available on rxe0"]


@pytest.mark.rxe
def test_unknown_device_and_native_are_clean_errors(guest):
    rc, stderr = _attempt(guest, "baddevice")
    errors = _error_lines(stderr)
    assert rc != 0 and errors, stderr
    assert all(e.endswith("RDMA device 'mlx5_9' not found; devices here: rxe0") for e in errors), stderr
    rc, stderr = _attempt(guest, "native")
    assert rc == 2 and "has no native all-reduce" in stderr and "Traceback" not in stderr


@pytest.mark.rxe
@pytest.mark.parametrize("case", cases(), ids=lambda c: c["name"])
def test_case_verified(guest, case):
    folder = guest / "cases" / case["name"]
    status_file = Path(f"{folder}.status.json")
    assert status_file.exists(), f"case {case['name']} did not finish; see {guest / 'job.log'}"
    status = json.loads(status_file.read_text())
    assert status == {"rc": 0, "error": None}, status
    with open(folder / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    npoints, sizes = expected_points(case)
    assert len(rows) == npoints
    assert {r["transport"] for r in rows} == {"verbs"}
    assert {int(r["nranks"]) for r in rows} == {case["nranks"]}
    assert all(int(r["n_wrong"]) == 0 for r in rows), [r for r in rows if int(r["n_wrong"])]
    assert sorted({int(r["size_bytes"]) for r in rows}) == sizes
    assert all(r["reg_timed"].isdigit() and r["reg_hits"].isdigit() for r in rows)
    if case["name"] == "p3-dataflow-block-smallcache":
        assert all(r["reg_timed"] == "0" for r in rows if r["algorithm"] == "ring"), rows


@pytest.mark.rxe
def test_rxe_counted_no_rnr_or_retry_errors(guest):
    """rxe's hardware counters after the whole matrix: no receiver-not-ready NAKs (a receive
    queue that ran dry) and no retries exceeded (a lost peer). Plain retransmissions are not
    checked: under emulation an ack may simply come late."""
    text = (guest / "hw_counters.txt").read_text()
    counters = {}  # "rxe0/rcvd_rnr_err": 0 from ".../rxe0/ports/1/hw_counters/rcvd_rnr_err:0"
    for line in text.splitlines():
        path, _, value = line.rpartition(":")
        parts = path.split("/")
        if value.strip().isdigit() and len(parts) > 5:
            counters[f"{parts[-5]}/{parts[-1]}"] = int(value)
    assert counters, text
    bad = {k: v for k, v in counters.items()
           if ("rnr" in k.split("/")[1] or k.endswith("/retry_exceeded_err")) and v}
    assert not bad, bad


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "driver":
    sys.path.insert(0, str(ROOT))
    sys.exit(driver(sys.argv[2]))
