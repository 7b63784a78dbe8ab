"""The C heap allocator and hash dict, through shmshare._core.heap.Heap."""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
import types

import pytest
from conftest import HeapFactory
from helpers import fork_child, wait_child

from shmshare._core.heap import SCAN_START, Heap
from shmshare.errors import CorruptSegmentError, LockTimeoutError


def k(i: int) -> bytes:
    return b"key%d" % i


def items(h: Heap, reverse: bool = False) -> list[tuple[bytes, bytes]]:
    """Every (key, value) via scan, in batches."""
    out: list[tuple[bytes, bytes]] = []
    seq = SCAN_START
    while True:
        batch = h.dict_scan(seq, reverse=reverse)
        if not batch:
            return out
        out += [(key, val) for _, key, val in batch]  # type: ignore[misc]
        seq = batch[-1][0]


# ----------------------------------------------------------------- basics

def test_get_set_overwrite_pop_len(heap: Heap) -> None:
    assert heap.dict_len() == 0
    assert heap.dict_get(b"a", 1) is None
    assert heap.dict_set(b"a", 1, b"1") is True
    assert heap.dict_set(b"a", 1, b"2") is False
    assert heap.dict_get(b"a", 1) == b"2"
    assert heap.dict_set(b"b", 1, b"") is True
    assert heap.dict_get(b"b", 1) == b""
    assert heap.dict_len() == 2
    assert heap.dict_pop(b"a", 1) == b"2"
    assert heap.dict_pop(b"a", 1) is None
    assert heap.dict_len() == 1
    assert heap.check() is None


def test_per_thread_buffers_home_is_made_once_under_a_race(
        heap: Heap, monkeypatch: pytest.MonkeyPatch) -> None:
    """A heap makes the home of its per-thread buffers on first use: two threads
    racing there must get the same one (a second would strand the first thread's
    buffers in the middle of its operation)."""
    from shmshare._core import heap_base

    made: list[object] = []
    real = threading.local

    def slow_local() -> threading.local:
        time.sleep(0.05)  # both threads are inside the first use meanwhile
        made.append(real())
        return made[-1]  # type: ignore[return-value]

    monkeypatch.setattr(heap_base, "threading", types.SimpleNamespace(local=slow_local))
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(heap._tls)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    monkeypatch.undo()
    assert len(made) == 1 and got == [made[0], made[0]]
    heap.dict_set(b"k", 1, b"v")  # and the heap works with it
    assert heap.dict_get(b"k", 1) == b"v"


def test_only_if_absent(heap: Heap) -> None:
    assert heap.dict_set(b"x", 1, b"first", only_if_absent=True) is True
    assert heap.dict_set(b"x", 1, b"second", only_if_absent=True) is False
    assert heap.dict_get(b"x", 1) == b"first"


def test_cmp_len_keeps_stored_key(heap: Heap) -> None:
    # "1" with display suffix "i" then "1" with suffix "f": same key.
    heap.dict_set(b"1i", 1, b"int")
    assert heap.dict_set(b"1f", 1, b"float") is False
    assert items(heap) == [(b"1i", b"float")]
    assert heap.dict_get(b"1zzz", 1) == b"float"


def test_insertion_order_and_overwrite_keeps_position(heap: Heap) -> None:
    for i in range(100):
        heap.dict_set(k(i), len(k(i)), b"v%d" % i)
    heap.dict_set(k(5), len(k(5)), b"new")
    got = items(heap)
    assert [key for key, _ in got] == [k(i) for i in range(100)]
    assert got[5] == (k(5), b"new")
    assert items(heap, reverse=True) == got[::-1]
    heap.dict_pop(k(5), len(k(5)))
    heap.dict_set(k(5), len(k(5)), b"again")
    assert [key for key, _ in items(heap)][-1] == k(5)


def test_popitem_lifo_and_clear(heap: Heap) -> None:
    assert heap.dict_popitem() is None
    for i in range(10):
        heap.dict_set(k(i), len(k(i)), b"%d" % i)
    heap.dict_pop(k(9), len(k(9)))
    assert heap.dict_popitem() == (k(8), b"8")
    assert heap.dict_popitem() == (k(7), b"7")
    heap.dict_set(k(100), len(k(100)), b"x")
    assert heap.dict_popitem() == (k(100), b"x")
    assert heap.dict_len() == 7
    assert heap.check() is None
    heap.dict_clear()
    assert heap.dict_len() == 0 and items(heap) == []
    assert heap.check() is None
    heap.dict_set(b"z", 1, b"z")
    assert items(heap) == [(b"z", b"z")]


def test_scan_batches_positions_and_no_values(heap: Heap) -> None:
    n = 3000
    for i in range(n):
        heap.dict_set(k(i), len(k(i)), bytes(50))
    first = heap.dict_scan(SCAN_START)
    assert 0 < len(first) < n                    # a 64 KiB batch
    seqs = [s for s, _, _ in first]
    assert seqs == sorted(seqs)
    mid = first[10][0]
    assert heap.dict_scan(mid)[0][1] == k(11)
    assert heap.dict_scan(mid, reverse=True)[0][1] == k(9)
    assert heap.dict_scan(first[0][0], reverse=True) == []
    nov = heap.dict_scan(SCAN_START, values=False)
    assert nov[0][2] is None and len(nov) > len(first)
    assert len(items(heap)) == n


def test_scan_survives_mutation_between_batches(heap: Heap) -> None:
    for i in range(2000):
        heap.dict_set(k(i), len(k(i)), bytes(100))
    seen = []
    seq = SCAN_START
    j = 0
    while batch := heap.dict_scan(seq):
        seen += [key for _, key, _ in batch]
        seq = batch[-1][0]
        for _ in range(300):                    # deletes force compaction
            heap.dict_pop(k(j), len(k(j)))
            j += 1
    assert seen == sorted(set(seen), key=seen.index)   # no repeats
    assert heap.check() is None


def test_values_larger_than_scratch(heap: Heap) -> None:
    big = os.urandom(100_000)
    heap.dict_set(b"big", 3, big)
    assert heap.dict_get(b"big", 3) == big
    assert items(heap) == [(b"big", big)]
    assert heap.dict_popitem() == (b"big", big)
    heap.dict_set(b"big", 3, big)
    assert heap.dict_pop(b"big", 3) == big


def test_modcount_and_stats(heap: Heap) -> None:
    m = heap.modcount
    heap.dict_set(b"a", 1, b"1")
    heap.dict_set(b"a", 1, b"2")
    heap.dict_pop(b"a", 1)
    heap.dict_get(b"a", 1)
    assert heap.modcount == m + 3
    st = heap.stats()
    assert st["entries"] == 0 and st["extents"] == 1
    assert st["bytes_used"] + st["bytes_free"] == st["bytes_total"]


def test_open_existing_and_bad_magic(make_heap: HeapFactory) -> None:
    h = make_heap(1 << 16)
    h.dict_set(b"a", 1, b"1")
    att = make_heap.made[-1][1]
    h2 = Heap.open(att, 4096, 1 << 16)
    assert h2.dict_get(b"a", 1) == b"1"
    h2.close()
    h2.close()
    with pytest.raises(CorruptSegmentError):
        Heap.open(att, 8192, 1 << 15)
    with pytest.raises(ValueError):
        h2.dict_len()


def test_lock_held_ops_and_timeout(heap: Heap) -> None:
    assert heap.lock() is False
    try:
        heap.dict_set(b"a", 1, b"1", held=True)
        assert heap.dict_get(b"a", 1, held=True) == b"1"
        assert heap.dict_len(held=True) == 1
        with pytest.raises(RuntimeError):
            heap.lock(timeout=0)        # EDEADLK: this thread holds it

        def child() -> int:
            try:
                heap.lock(timeout=0.05)
            except LockTimeoutError:
                return 7
            return 0
        assert wait_child(fork_child(child)) == 7
    finally:
        heap.unlock()
    assert heap.check() is None


def test_op_lock_timeout_keeps_errno_and_says_what(heap: Heap) -> None:
    """An unlocked op that waits past ``lock_timeout`` raises LockTimeoutError
    carrying the lock's errno and naming the operation."""
    heap.lock()
    try:
        def child() -> int:
            heap.lock_timeout = 0.05
            try:
                heap.dict_get(b"a", 1)
            except LockTimeoutError as exc:
                ok = exc.errno in (errno.ETIMEDOUT, errno.EBUSY) and str(exc) == (
                    "dict get: the heap lock was not acquired in time")
                return 7 if ok else 3
            return 0
        assert wait_child(fork_child(child)) == 7
    finally:
        heap.unlock()


def test_corruption_is_detected_and_sticky(make_heap: HeapFactory) -> None:
    h = make_heap(1 << 16)
    for i in range(20):
        h.dict_set(k(i), len(k(i)), b"v")
    att = make_heap.made[-1][1]
    mv = att.memoryview()
    # Scribble over the first block header after the heap header.
    first = 4096 + Heap.HEADER_SIZE
    mv[first:first + 8] = struct.pack("<Q", 0xFFFFFFFFFFFF0)
    del mv
    assert h.check() is not None
    with pytest.raises(CorruptSegmentError):
        h.rebuild()
    with pytest.raises(CorruptSegmentError):
        h.dict_get(b"x", 1)
    assert "corrupt" in (h.check() or "")


# ------------------------------------------------------ model-based test

from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

KEYS = st.binary(min_size=0, max_size=6)
VALUES = st.binary(max_size=300) | st.builds(lambda n: b"L" * n, st.integers(0, 20000))


class DictMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.factory = HeapFactory()
        self.h = self.factory(1 << 16)       # small: growth happens
        self.model: dict[bytes, bytes] = {}

    @rule(key=KEYS, value=VALUES)
    def set(self, key: bytes, value: bytes) -> None:
        assert self.h.dict_set(key, len(key), value) == (key not in self.model)
        self.model[key] = value

    @rule(key=KEYS, value=VALUES)
    def setdefault(self, key: bytes, value: bytes) -> None:
        new = key not in self.model
        assert self.h.dict_set(key, len(key), value, only_if_absent=True) == new
        self.model.setdefault(key, value)

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        assert self.h.dict_get(key, len(key)) == self.model.get(key)

    @rule(key=KEYS)
    def pop(self, key: bytes) -> None:
        assert self.h.dict_pop(key, len(key)) == self.model.pop(key, None)

    @rule()
    def popitem(self) -> None:
        want = self.model.popitem() if self.model else None
        assert self.h.dict_popitem() == want

    @precondition(lambda self: len(self.model) > 5)
    @rule()
    def clear(self) -> None:
        self.h.dict_clear()
        self.model.clear()

    @rule()
    def rebuild(self) -> None:
        before = self.h.stats()
        self.h.rebuild()
        after = self.h.stats()
        for f in ("bytes_total", "bytes_used", "bytes_free", "used_blocks", "entries"):
            assert before[f] == after[f], f

    @invariant()
    def same(self) -> None:
        assert self.h.dict_len() == len(self.model)
        assert items(self.h) == list(self.model.items())
        assert items(self.h, reverse=True) == list(reversed(self.model.items()))
        assert self.h.check() is None

    def teardown(self) -> None:
        self.factory.close_all()


TestDictMachine = DictMachine.TestCase
TestDictMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# ---------------------------------------------------------------- growth

@pytest.mark.slow
def test_growth_64k_to_256mib_of_values(make_heap: HeapFactory) -> None:
    h = make_heap(1 << 16, anonymous=False)
    val = bytes(range(256)) * 4096              # 1 MiB
    for i in range(300):
        h.dict_set(k(i), len(k(i)), val[i % 256:] + val[:i % 256])
    st_ = h.stats()
    assert st_["bytes_total"] > 256 << 20 and st_["extents"] > 5
    for i in (0, 150, 299):
        assert h.dict_get(k(i), len(k(i))) == val[i % 256:] + val[:i % 256]
    assert h.check() is None
    for i in range(0, 300, 2):
        h.dict_pop(k(i), len(k(i)))
    assert h.check() is None


@pytest.mark.slow
def test_million_keys(make_heap: HeapFactory) -> None:
    h = make_heap(1 << 16)
    n = 1_000_000
    for i in range(n):
        h.dict_set(b"%d" % i, len(b"%d" % i), b"%d" % (i * 7))
    assert h.dict_len() == n
    for i in range(0, n, 9973):
        assert h.dict_get(b"%d" % i, len(b"%d" % i)) == b"%d" % (i * 7)
    assert h.check() is None
    seq, count = SCAN_START, 0
    while batch := h.dict_scan(seq, values=False):
        count += len(batch)
        seq = batch[-1][0]
    assert count == n


def test_large_values_50mb(make_heap: HeapFactory) -> None:
    h = make_heap(1 << 16)
    big = os.urandom(1 << 20) * 50
    h.dict_set(b"a", 1, big)
    h.dict_set(b"b", 1, big[::-1])
    assert h.dict_get(b"a", 1) == big
    assert h.dict_get(b"b", 1) == big[::-1]
    assert h.dict_pop(b"a", 1) == big
    h.dict_set(b"b", 1, b"small")
    assert h.check() is None
    st_ = h.stats()
    assert st_["bytes_used"] < 1 << 16


def test_destroy_extents_removes_keyed_segments(make_heap: HeapFactory) -> None:
    h = make_heap(1 << 16, anonymous=False)
    h.dict_set(b"a", 1, bytes(1 << 20))
    assert h.stats()["extents"] >= 2
    h.destroy_extents()
    h.destroy_extents()                          # idempotent
    # the no_segment_leaks fixture verifies they are gone at the end
