"""The verbs transport's protocol logic, in plain Python (no pyverbs, no device needed)."""

from __future__ import annotations

import pytest

from collbench.verbs.protocol import (
    MAX_SEGMENTS,
    ClearToSend,
    CreditBook,
    Idle,
    ProtocolError,
    ReceiveBook,
    RegistrationCache,
    Settings,
    Window,
    pack_imm,
    plan_segments,
    receive_budget,
    unpack_imm,
)


def test_imm_round_trip_and_wrap():
    for seq, seg in [(0, 0), (1, 2), (65535, 65535), (70000, 5)]:
        assert unpack_imm(pack_imm(seq, seg)) == (seq % 65536, seg)
    assert pack_imm(1, 2) == 0x00010002
    with pytest.raises(ProtocolError):
        pack_imm(0, MAX_SEGMENTS)


def test_clear_to_send_round_trip_and_bad_input():
    cts = ClearToSend(tag=3 * 1024 + 1, seq=7, rkey=0xDEADBEEF, addr=0x7F00_0000_1000, nbytes=5 << 20)
    data = cts.pack()
    assert len(data) <= 64
    assert ClearToSend.unpack(data + b"\0" * 10) == cts
    with pytest.raises(ProtocolError, match="bad magic"):
        ClearToSend.unpack(b"XXXX" + data[4:])
    with pytest.raises(ProtocolError, match="bytes"):
        ClearToSend.unpack(data[:10])
    rails = ClearToSend(tag=1, seq=2, rkey=3, addr=4, nbytes=5, more_rkeys=(6, 7, 8, 9, 10, 11, 12))
    assert len(rails.pack()) <= 64 and ClearToSend.unpack(rails.pack()) == rails
    assert rails.rkeys_by_rail() == (3, 6, 7, 8, 9, 10, 11, 12)
    with pytest.raises(ProtocolError, match="more rkeys"):
        ClearToSend.unpack(rails.pack()[:40])


@pytest.mark.parametrize("nbytes,seg,expect", [
    (0, 0, []), (0, 16, []), (10, 0, [(0, 10)]), (10, 16, [(0, 10)]), (10, 10, [(0, 10)]),
    (10, 4, [(0, 4), (4, 4), (8, 2)]), (12, 4, [(0, 4), (4, 4), (8, 4)]),
])
def test_plan_segments(nbytes, seg, expect):
    assert plan_segments(nbytes, seg) == expect


def test_receive_budget_shares_the_depth_and_caps_segments():
    assert receive_budget(512, 64) == (64, 448)
    assert receive_budget(8, 64) == (4, 4) and receive_budget(4, 64) == (2, 2)
    assert plan_segments(22000, 1024, max_segments=4) == [(0, 5500), (5500, 5500), (11000, 5500),
                                                          (16500, 5500)]
    assert len(plan_segments(22000, 1024, max_segments=448)) == 22


def test_plan_segments_covers_and_caps():
    for nbytes in (1, 7, 4096, 1 << 20, (1 << 20) + 3):
        for seg in (1, 3, 1024):
            parts = plan_segments(nbytes, seg)
            assert len(parts) <= MAX_SEGMENTS
            assert parts[0][0] == 0 and sum(n for _, n in parts) == nbytes
            assert all(a + n == b for (a, n), (b, _) in zip(parts, parts[1:]))
    assert len(plan_segments(MAX_SEGMENTS * 4, 1)) == MAX_SEGMENTS


def test_receive_book_completes_after_all_segments_in_any_order():
    book = ReceiveBook()
    a = book.announce(peer=1, index=0, nsegments=3)
    b = book.announce(peer=1, index=1, nsegments=1)
    c = book.announce(peer=2, index=2, nsegments=2)
    assert a != b and len(book) == 3 and book.peers() == (1, 2)
    assert book.landed(1, b, 0) == 1
    assert book.landed(1, a, 2) is None
    assert book.landed(2, c, 1) is None
    assert book.landed(1, a, 0) is None
    assert book.landed(1, a, 1) == 0
    assert book.landed(2, c, 0) == 2
    assert len(book) == 0 and book.peers() == ()


def test_receive_book_rejects_protocol_violations():
    book = ReceiveBook()
    seq = book.announce(0, 0, 2)
    book.landed(0, seq, 0)
    with pytest.raises(ProtocolError, match="twice or out of range"):
        book.landed(0, seq, 0)
    with pytest.raises(ProtocolError, match="twice or out of range"):
        book.landed(0, seq, 2)
    with pytest.raises(ProtocolError, match="not announced"):
        book.landed(0, seq + 1, 0)
    with pytest.raises(ProtocolError, match="not announced"):
        book.landed(3, seq, 0)
    with pytest.raises(ProtocolError):
        book.announce(0, 1, 0)


def test_receive_book_sequence_skips_pending_after_wrap():
    book = ReceiveBook()
    stuck = book.announce(5, 0, 1)  # never lands
    seen = set()
    for i in range(70000):
        seq = book.announce(5, i, 1)
        assert seq != stuck
        seen.add(seq)
        assert book.landed(5, seq, 0) == i
    assert stuck not in seen


def test_credit_book_is_fifo_per_peer_and_tag():
    credits = CreditBook()
    first, second = ClearToSend(7, 0, 1, 100, 8), ClearToSend(7, 1, 1, 200, 8)
    other = ClearToSend(8, 2, 1, 300, 8)
    assert credits.take(1, 7) is None
    credits.add(1, first)
    credits.add(1, other)
    credits.add(1, second)  # e.g. the next call's CTS arriving early
    credits.add(2, ClearToSend(7, 0, 9, 0, 8))
    assert len(credits) == 4
    assert credits.take(1, 7) == first
    assert credits.take(1, 8) == other
    assert credits.take(1, 7) == second
    assert credits.take(1, 7) is None
    assert credits.take(2, 7).rkey == 9
    assert len(credits) == 0


def test_window_limits_writes_per_peer():
    window = Window(2)
    window.acquire(1)
    window.acquire(1)
    window.acquire(3)
    assert window.free(1) == 0 and window.free(3) == 1 and window.free(0) == 2
    with pytest.raises(ProtocolError):
        window.acquire(1)
    assert window.busy() == (1, 3) and window.in_flight() == 3
    window.release(1)
    window.release(1)
    window.release(3)
    assert window.busy() == () and window.in_flight() == 0
    with pytest.raises(ProtocolError):
        window.release(1)
    with pytest.raises(ValueError):
        Window(0)


class _FakeRegistrar:
    """Stands in for ibv_reg_mr/ibv_dereg_mr: records calls (the cache logic is what is tested)."""

    def __init__(self):
        self.live, self.calls = {}, []
        self._next = 0

    def register(self, addr, nbytes):
        self._next += 1
        self.live[self._next] = (addr, nbytes)
        self.calls.append(("reg", addr, nbytes))
        return self._next

    def deregister(self, handle):
        self.calls.append(("dereg", *self.live.pop(handle)))


def test_registration_cache_hits_and_keeps_owner_alive():
    fake = _FakeRegistrar()
    cache = RegistrationCache(fake.register, fake.deregister)
    owner = bytearray(100)
    a = cache.acquire(1000, 100, owner)
    b = cache.acquire(1000, 100, owner)
    c = cache.acquire(1000, 50, owner)  # a different length is a different registration
    assert a is b and a is not c and a.owner is owner
    assert cache.stats() == {"enabled": True, "entries": 2, "bytes": 150, "hits": 1, "misses": 2,
                                  "registrations": 2, "deregistrations": 0}
    cache.release(a)  # no-op when caching
    assert a.valid and len(fake.live) == 2
    cache.clear()
    assert not a.valid and a.owner is None and fake.live == {}


def _use(cache, addr, nbytes, owner):
    """Acquire and release at once: a registration touched, then left unpinned."""
    entry = cache.acquire(addr, nbytes, owner)
    cache.release(entry)
    return entry


def test_registration_cache_evicts_least_recently_used_unpinned():
    fake = _FakeRegistrar()
    cache = RegistrationCache(fake.register, fake.deregister, limit_bytes=250)
    a = _use(cache, 0, 100, "a")
    b = _use(cache, 1000, 100, "b")
    _use(cache, 0, 100, "a")  # touch a: b is now the oldest
    c = _use(cache, 2000, 100, "c")
    assert a.valid and not b.valid and c.valid and cache.bytes == 200
    assert ("dereg", 1000, 100) in fake.calls
    big = _use(cache, 5000, 1000, "big")  # alone over the limit: kept, the others go
    assert big.valid and not a.valid and not c.valid and len(cache) == 1


def test_registration_cache_never_evicts_what_a_step_has_pinned():
    """A step pins its user buffer and scratch area; together they exceed the limit, and
    neither may go while the step runs (a peer may be writing into it)."""
    fake = _FakeRegistrar()
    cache = RegistrationCache(fake.register, fake.deregister, limit_bytes=120)
    user = cache.acquire(0, 100, "user")
    scratch = cache.acquire(1000, 40, "scratch")
    again = cache.acquire(0, 100, "user")  # the same buffer twice in one step
    assert user is again and user.valid and scratch.valid and cache.bytes == 140
    assert cache.pinned() == 2
    for entry in (user, scratch, again):
        cache.release(entry)
    assert cache.pinned() == 0 and user.valid and scratch.valid  # eviction waits for a new one
    other = cache.acquire(2000, 10, "other")  # the scratch area was used least recently
    assert user.valid and not scratch.valid and other.valid and cache.bytes == 110
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 3


def test_registration_cache_off_registers_every_time():
    fake = _FakeRegistrar()
    cache = RegistrationCache(fake.register, fake.deregister, enabled=False)
    a = cache.acquire(0, 64, "x")
    b = cache.acquire(0, 64, "x")
    assert a is not b and len(cache) == 0 and len(fake.live) == 2
    cache.release(a)
    cache.release(b)
    cache.release(b)  # twice is harmless
    assert fake.live == {} and cache.stats()["deregistrations"] == 2


def test_idle_expires_after_timeout_without_progress():
    now = [0.0]
    idle = Idle(timeout=1.0, clock=lambda: now[0])
    now[0] = 0.9
    assert not idle.expired() and idle.remaining() == pytest.approx(0.1)
    idle.reset()
    now[0] = 1.8
    assert not idle.expired()
    now[0] = 2.0
    assert idle.expired()


def test_protocol_errors_are_one_sentence_collbench_errors():
    from collbench.errors import CollbenchError

    assert issubclass(ProtocolError, CollbenchError)


def test_settings_from_env():
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env({"COLLBENCH_VERBS_REGCACHE": "off", "COLLBENCH_VERBS_SEGMENT": "64K",
                           "COLLBENCH_VERBS_WINDOW": "1", "COLLBENCH_VERBS_GID_INDEX": "1",
                           "COLLBENCH_VERBS_REGCACHE_LIMIT": "1G"})
    assert (s.regcache, s.segment_bytes, s.window, s.gid_index, s.regcache_limit) == (
        False, 65536, 1, 1, 1 << 30)
    assert s.as_dict()["segment_bytes"] == 65536
    with pytest.raises(ValueError, match="COLLBENCH_VERBS_REGCACHE"):
        Settings.from_env({"COLLBENCH_VERBS_REGCACHE": "maybe"})
    with pytest.raises(ValueError, match="WINDOW"):
        Settings.from_env({"COLLBENCH_VERBS_WINDOW": "0"})
    assert Settings().poll == "spin" and Settings.from_env({"COLLBENCH_VERBS_POLL": "Block"}).poll == "block"
    with pytest.raises(ValueError, match="POLL"):
        Settings.from_env({"COLLBENCH_VERBS_POLL": "sleep"})


def test_views_register_their_whole_owning_buffer():
    import numpy as np

    from collbench.transports.verbs import _root

    base = np.zeros(100, dtype=np.float32)
    view = base[10:20]
    assert _root(view) is base and _root(view[2:4]) is base and _root(base) is base
    strided = np.zeros((10, 10))[:, 1]  # not contiguous: the view itself is registered
    assert _root(strided.copy()) is not strided
