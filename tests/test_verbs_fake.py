"""The verbs transport's real code on a fake verbs device (:mod:`collbench.verbs.fake`): ranks are
threads, every byte of the all-reduce moves through registered memory by RDMA writes."""

from __future__ import annotations

import ctypes
import re
from types import SimpleNamespace

import numpy as np
import pytest
from collbench.algorithms import build
from collbench.algorithms.data import expected_output, make_input
from collbench.algorithms.ops import ReduceOp

from collbench.errors import CollbenchError
from collbench.executor import Executor
from collbench.transports.verbs import VerbsTransport
from collbench.verbs.fake import ENUMS, Fabric, FakeVerbsError, run_ranks
from collbench.verbs.protocol import WC_REM_ACCESS_ERR, Settings

CONFIG = SimpleNamespace(buffers="numpy", timeout=10.0, device=None)


def allreduce(nranks: int, algorithm: str, nbytes: int, settings=None, calls: int = 2,
              dtype: str = "float32", op: str = "sum", config=CONFIG, fabric=None, **options) -> list:
    """Every rank's ``(wrong elements, transport)`` after *calls* all-reduces, or its exception."""
    fabric = fabric or Fabric()
    itemsize = np.dtype(dtype).itemsize
    count = nbytes // itemsize
    reduce_op = ReduceOp.parse(op)

    def rank(comm):
        per_rank = settings[comm.rank] if isinstance(settings, list) else settings or Settings()
        transport = VerbsTransport(comm, config, device=fabric.device, settings=per_rank)
        try:
            schedule = build(algorithm, nranks, count, **options)
            executor = Executor(schedule, transport, dtype, reduce_op)
            recv = np.empty(count, dtype=dtype)
            for seed in range(calls):
                recv[...] = make_input(comm.rank, nranks, count, dtype, reduce_op, seed, np)
                executor.run(recv)
            expected = expected_output(nranks, count, dtype, reduce_op, calls - 1, np)
            return int((recv != expected).sum()), transport
        finally:
            transport.close()

    return run_ranks(nranks, rank)


def _raise_first(results):
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


# ---------------------------------------------------------------- the fake device itself

def test_fake_write_lands_in_the_peers_registered_memory_with_its_immediate():
    fabric = Fabric()
    a, b = fabric.device("a"), fabric.device("b")
    qa, qb = a.create_qp(4, 4), b.create_qp(4, 4)
    a.connect(qa, 0, b.address(qb, 0))
    b.connect(qb, 0, a.address(qa, 0))
    src, dst = np.arange(8, dtype=np.int32), np.zeros(8, dtype=np.int32)
    ms, md = a.register(src.ctypes.data, src.nbytes), b.register(dst.ctypes.data, dst.nbytes)
    ctl = b.alloc(64)
    a.post_write_imm(qa, 7, src.ctypes.data + 8, 16, ms.lkey, dst.ctypes.data + 8, md.rkey, 0x10002)
    assert b.poll(4) == [] and a.rnr_waits == 1 and dst.sum() == 0  # no receive posted yet
    b.post_recv(qb, 9, ctl.buf, 64, ctl.lkey)
    assert dst.tolist() == [0, 0, 2, 3, 4, 5, 0, 0]
    assert b.poll(4) == [(9, 0, ENUMS.IBV_WC_RECV_RDMA_WITH_IMM, 0x10002, 16)]
    assert a.poll(4) == [(7, 0, ENUMS.IBV_WC_RDMA_WRITE, 0, 0)]


def test_fake_write_to_a_deregistered_rkey_is_a_remote_access_error_and_flushes():
    fabric = Fabric()
    a, b = fabric.device("a"), fabric.device("b")
    qa, qb = a.create_qp(4, 4), b.create_qp(4, 4)
    a.connect(qa, 0, b.address(qb, 0))
    b.connect(qb, 0, a.address(qa, 0))
    src, dst = np.ones(4), np.zeros(4)
    ms, md, ctl = a.register(src.ctypes.data, 32), b.register(dst.ctypes.data, 32), b.alloc(128)
    b.post_recv(qb, 1, ctl.buf, 64, ctl.lkey)
    b.post_recv(qb, 2, ctl.buf + 64, 64, ctl.lkey)
    b.deregister(md)
    a.post_write_imm(qa, 5, src.ctypes.data, 32, ms.lkey, dst.ctypes.data, md.rkey, 0)
    assert dst.sum() == 0
    assert a.poll(4) == [(5, WC_REM_ACCESS_ERR, ENUMS.IBV_WC_RDMA_WRITE, 0, 0)]
    assert {wc[0]: a.status_text(wc[1]) for wc in b.poll(4)} == {1: "Work Request Flushed Error",
                                                                  2: "Work Request Flushed Error"}
    a.post_write_imm(qa, 6, src.ctypes.data, 8, ms.lkey, dst.ctypes.data, 1234, 0)  # QP in error
    assert a.poll(4)[0][:2] == (6, 5)


def test_fake_checks_bounds_and_queue_depths():
    fabric = Fabric()
    a, b = fabric.device("a"), fabric.device("b")
    qa, qb = a.create_qp(1, 1), b.create_qp(1, 1)
    a.connect(qa, 0, b.address(qb, 0))
    b.connect(qb, 0, a.address(qa, 0))
    src, dst = np.ones(4), np.zeros(4)
    ms, md = a.register(src.ctypes.data, 32), b.register(dst.ctypes.data, 32)
    ctl = b.alloc(64)
    b.post_recv(qb, 1, ctl.buf, 64, ctl.lkey)
    with pytest.raises(FakeVerbsError, match="receive queue"):
        b.post_recv(qb, 2, ctl.buf, 64, ctl.lkey)
    a.post_write_imm(qa, 3, src.ctypes.data, 32, ms.lkey, dst.ctypes.data + 8, md.rkey, 0)  # 8 B past
    assert a.poll(1)[0][1] == WC_REM_ACCESS_ERR and dst.sum() == 0
    assert ctypes.sizeof(ctypes.c_double) * 4 == 32


# ---------------------------------------------------------------- the transport on it

@pytest.mark.parametrize("algorithm", ["naive", "ring", "rabenseifner"])
@pytest.mark.parametrize("nranks", [2, 3, 5, 8])
def test_every_algorithm_is_exact_on_the_fake_device(algorithm, nranks):
    results = _raise_first(allreduce(nranks, algorithm, 3000 * 4))
    assert [wrong for wrong, _ in results] == [0] * nranks


@pytest.mark.parametrize("window", [1, 2, 3])
def test_windows_at_their_edges(window):
    """Writes in flight per peer at most *window*, with more segments than that per message."""
    settings = Settings(segment_bytes=512, window=window)
    results = _raise_first(allreduce(3, "rabenseifner", 12 << 10, settings, dtype="int64", op="max"))
    assert [wrong for wrong, _ in results] == [0] * 3


def test_segments_and_stop_and_wait_and_no_cache():
    settings = Settings(segment_bytes=1000, window=1, regcache=False)
    results = _raise_first(allreduce(4, "ring", 64 << 10, settings, dtype="int32"))
    assert [wrong for wrong, _ in results] == [0] * 4


def test_registration_cache_below_the_working_set_never_frees_a_buffer_a_peer_writes_into():
    """Ring, P = 3, 1 MiB: the user buffer (1 MiB) and the scratch area (1/3 MiB) do not both
    fit 1.2 MB. A cache that evicts by recency alone deregisters the scratch area while the
    clear-to-send naming its rkey is queued, and every rank's write fails with a remote access
    error; one that pins what a step uses keeps it until the step is done."""
    settings = Settings(regcache_limit=1_200_000)
    results = _raise_first(allreduce(3, "ring", 1 << 20, settings))
    assert [wrong for wrong, _ in results] == [0] * 3


def timed_registrations(nranks: int, algorithm: str, nbytes: int, limit: int) -> list:
    """Per rank: registrations made in each call of one point, timed as the harness times it."""
    from collbench.config import RunConfig
    from collbench.harness import COUNTERS, Point, PointRunner, time_point
    from collbench.transports.base import Progress

    fabric = Fabric()
    config = RunConfig(transport="verbs", iters=3, warmup_iters=1, timeout=10.0)

    def rank(comm):
        transport = VerbsTransport(comm, config, device=fabric.device,
                                   settings=Settings(regcache_limit=limit))
        try:
            runner = PointRunner(config, transport, Point(algorithm, nbytes, False), Progress())
            counts = np.zeros((5, len(COUNTERS)), dtype=np.int64)
            time_point(runner, comm, config, Progress(), counts)
            return counts[:, 0].tolist()
        finally:
            transport.close()

    return _raise_first(run_ranks(nranks, rank))


def test_registrations_inside_timed_calls_are_counted_per_call():
    """Naive, P = 4, 1 MiB: the root's scratch area is 3 MiB, 4 MiB with its buffer.
    Under a 3.5 MiB limit the root registers two buffers again in every call; the other ranks
    and a large enough limit never register after the first call."""
    small = timed_registrations(4, "naive", 1 << 20, limit=int(3.5 * (1 << 20)))
    assert small[0][1:] == [2, 2, 2, 2] and all(r[1:] == [0] * 4 for r in small[1:])
    assert small[0][0] >= 2
    large = timed_registrations(4, "naive", 1 << 20, limit=16 << 20)
    assert all(r[1:] == [0] * 4 for r in large)


def test_ranks_with_different_segment_sizes_agree_the_receiver_decides():
    """Each rank cuts what it receives by its own COLLBENCH_VERBS_SEGMENT; senders follow the
    receiver's, agreed when the queue pairs connect."""
    settings = [Settings(segment_bytes=0), Settings(segment_bytes=1000), Settings(segment_bytes=4096)]
    results = _raise_first(allreduce(3, "ring", 64 << 10, settings))
    assert [wrong for wrong, _ in results] == [0] * 3
    assert results[0][1].remote == {1: {"segment_bytes": 1000, "recv_depth": 512},
                                    2: {"segment_bytes": 4096, "recv_depth": 512}}


def test_blocking_poll_waits_on_the_completion_channel():
    fabric = Fabric()
    results = _raise_first(allreduce(3, "rabenseifner", 64 << 10, Settings(poll="block"), fabric=fabric))
    assert [wrong for wrong, _ in results] == [0] * 3
    assert sum(d.waits for d in fabric.devices) > 0


def test_spinning_never_waits_on_the_channel():
    fabric = Fabric()
    _raise_first(allreduce(2, "ring", 64 << 10, fabric=fabric))
    assert sum(d.waits for d in fabric.devices) == 0


def test_an_error_completion_is_one_line_naming_rank_peer_and_step():
    fabric = Fabric()
    config = SimpleNamespace(buffers="numpy", timeout=2.0, device=None)

    def rank(comm):
        transport = VerbsTransport(comm, config, device=fabric.device, settings=Settings())
        if comm.rank == 1:
            transport.dev.fail_next_send(WC_REM_ACCESS_ERR)
        try:
            count = 1024
            executor = Executor(build("ring", 3, count), transport, "float32", ReduceOp.parse("sum"))
            executor.run(np.ones(count, dtype=np.float32))
        finally:
            transport.close()

    results = run_ranks(3, rank)  # rank 1's first post is its clear-to-send to rank 0
    assert all(isinstance(r, CollbenchError) and "\n" not in str(r) for r in results)
    assert str(results[1]) == ("verbs: rank 1, peer 0, step 0: a clear-to-send to rank 0 failed on fake0 "
                               "(remote access error)")
    assert str(results[0]) == ("verbs: rank 0, peer 1, step 0: a receive from rank 1 failed on fake0 "
                               "(Work Request Flushed Error)")
    # rank 2 waits for rank 1's data: its own timeout, or a post to a rank that has gone
    assert re.fullmatch(r"verbs: rank 2, step 0: no progress for 2 s, waiting for data from rank\(s\) 1|"
                        r"verbs: rank 2, peer \d, step 0: .* \(transport retry counter exceeded\)",
                        str(results[2])), results[2]


def dataflow_allreduce(nranks: int, algorithm: str, nbytes: int, settings=None, fabric=None,
                       **options) -> list:
    """Every rank's ``(wrong elements, trace summary)`` after one dataflow all-reduce."""
    from collbench.dataflow import DataflowExecutor
    from collbench.trace import Trace, chrome_events, summary

    fabric, count = fabric or Fabric(), nbytes // 4
    op = ReduceOp.parse("sum")

    def rank(comm):
        transport = VerbsTransport(comm, CONFIG, device=fabric.device, settings=settings or Settings())
        try:
            trace = Trace()
            executor = DataflowExecutor(build(algorithm, nranks, count, **options), transport, "float32", op,
                                        trace=trace)
            recv = make_input(comm.rank, nranks, count, "float32", op, 0, np)
            trace.start()
            executor.run(recv)
            wrong = int((recv != expected_output(nranks, count, "float32", op, 0, np)).sum())
            events = chrome_events(comm.rank, executor.plan.ops, executor.plan.steps, trace.records)
            return wrong, summary(events)
        finally:
            transport.close()

    return _raise_first(run_ranks(nranks, rank))


@pytest.mark.parametrize("algorithm,options", [("naive", {}), ("ring", {}), ("rabenseifner", {}),
                                               ("ring", {"segments": 3})])
def test_dataflow_execution_is_exact_on_verbs(algorithm, options):
    results = dataflow_allreduce(4, algorithm, 40_000, Settings(segment_bytes=4096), **options)
    assert [wrong for wrong, _ in results] == [0] * 4


def test_dataflow_reduces_while_transfers_complete():
    """The pipelined ring reduces lane k in pieces while lane k + 1 moves; the transport takes
    completions between the pieces, so transfers complete during reductions."""
    results = dataflow_allreduce(3, "ring", 6 << 20, Settings(segment_bytes=64 << 10), segments=4)
    assert [wrong for wrong, _ in results] == [0] * 3
    assert sum(s["overlapped_reductions"] for _, s in results) > 0


@pytest.mark.parametrize("execution", ["step", "dataflow"])
def test_a_shallow_receive_queue_never_runs_dry(execution):
    """RECV_DEPTH 8, 1 KiB segments of ~22 KiB messages: a receiver that announced every segment
    would have more writes coming than receives posted (RNR). It shares its depth between the
    peer's clear-to-sends (4) and announced segments (4): messages are cut in at most 4
    segments and announced only while their segments fit."""
    fabric = Fabric()
    settings = Settings(recv_depth=8, segment_bytes=1024, window=2)
    if execution == "step":
        results = _raise_first(allreduce(3, "ring", 64 << 10, settings, fabric=fabric))
    else:
        results = dataflow_allreduce(3, "ring", 64 << 10, settings, fabric=fabric, segments=2)
    assert [wrong for wrong, _ in results] == [0] * 3
    assert [d.rnr_waits for d in fabric.devices] == [0, 0, 0]


def test_two_rails_stripe_segments_across_both_devices():
    """``--device fake0,fake1``: a queue pair per rail per peer; clear-to-sends on the first
    rail, segments alternating between the rails; each buffer registered on both devices."""
    fabric = Fabric()
    config = SimpleNamespace(buffers="numpy", timeout=10.0, device="fake0,fake1")
    results = _raise_first(allreduce(3, "ring", 64 << 10, Settings(segment_bytes=1024), config=config,
                                     fabric=fabric))
    assert [wrong for wrong, _ in results] == [0] * 3
    second = [d for d in fabric.devices if d.name == "fake1"]
    assert len(second) == 3 and all(d.posted > 0 for d in second)  # writes only: no CTS there
    first = [d for d in fabric.devices if d.name == "fake0"]
    assert sorted(d.registrations for d in second) == sorted(d.registrations for d in first)


def test_two_rails_at_four_ranks_with_the_cache_off():
    fabric = Fabric()
    config = SimpleNamespace(buffers="numpy", timeout=10.0, device="fake0,fake1:1")
    settings = Settings(segment_bytes=2048, regcache=False)
    results = _raise_first(allreduce(4, "rabenseifner", 32 << 10, settings, config=config, fabric=fabric))
    assert [wrong for wrong, _ in results] == [0] * 4


@pytest.mark.parametrize("device,message", [
    ("fake0,,fake1", "each rail is a device name"), ("fake0:x", "each rail is a device name"),
    ("fake0,fake0", "each named once"),
])
def test_a_bad_device_list_is_one_sentence_on_every_rank(device, message):
    config = SimpleNamespace(buffers="numpy", timeout=10.0, device=device)
    results = allreduce(2, "ring", 1024, config=config)
    assert all(isinstance(r, CollbenchError) and message in str(r) for r in results), results


def test_blocking_polls_need_a_single_rail():
    config = SimpleNamespace(buffers="numpy", timeout=10.0, device="fake0,fake1")
    results = allreduce(2, "ring", 1024, Settings(poll="block"), config=config)
    assert all(isinstance(r, CollbenchError) and "use spin with more than one rail" in str(r)
               for r in results)
