"""Heaps whose main shmids agree in the extent key bits share extent keys (on a
kernel booted with ``ipcmni_extend``, shmids agreeing in their low 15 bits; here
forced with a narrower test mask): growth steps over the other heap's keys, and
nobody adopts or removes an extent of the other heap (src/extent.c)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import fork_child, segments_created_by, wait_child

from shmshare import _core
from shmshare._core.extents import reap_extents, set_test_fail_point, set_test_key_mask
from shmshare._core.heap import Heap
from shmshare.naming.lifecycle import sweep_extents

MASK = 7
SIZE = 1 << 16
BIG = bytes(200_000)   # more than a heap of SIZE holds: one extent


class Heaps:
    """Heaps on named-style main segments (not marked for removal, so an extent
    outlives its creator's sole attachment), two of them sharing key bits."""

    def __init__(self) -> None:
        self.made: list[tuple[Heap, _core.Attachment]] = []

    def make(self) -> Heap:
        sid = _core.shmget(_core.IPC_PRIVATE, SIZE + 4096, _core.IPC_CREAT | 0o600)
        att = _core.shmat(sid, SIZE + 4096)
        heap = Heap.create(att, 4096, SIZE, anonymous=False)
        self.made.append((heap, att))
        return heap

    def colliding_pair(self) -> tuple[Heap, Heap]:
        first = self.make()
        while True:
            other = self.make()
            if other._att.shmid & MASK == first._att.shmid & MASK:
                return first, other

    def close(self) -> None:
        for heap, att in self.made:
            sid = att.shmid
            if heap._h is not None:
                heap.destroy_extents()
                heap.close()
            if att.attached:
                att.detach()
            try:
                _core.rmid(sid)
            except OSError:
                pass


@pytest.fixture
def heaps() -> Iterator[Heaps]:
    set_test_key_mask(MASK)
    h = Heaps()
    try:
        yield h
    finally:
        h.close()
        set_test_key_mask(0)


def _extent_ids(heap: Heap) -> list[int]:
    """The segments whose extent header names ``heap``'s main segment."""
    main = heap._att.shmid
    out = []
    for sid in _core.list_ids():
        try:
            st = _core.stat(sid)
            if not (0 < st.key < 1 << 24 and st.key >> 9 == main & MASK):
                continue
            att = _core.shmat(sid, 64)
        except OSError:
            continue
        head = bytes(att.memoryview()[:40])
        att.detach()
        if head[:8] == b"SHMSEXT\0" and int.from_bytes(head[32:40], "little") == main + 1:
            out.append(sid)
    return sorted(out)


def test_heaps_sharing_key_bits_both_grow(heaps: Heaps) -> None:
    """The second heap's growth steps over the first's key; each keeps its own data."""
    a, b = heaps.colliding_pair()
    a.dict_set(b"k", 1, BIG)
    b.dict_set(b"k", 1, BIG[:-1])
    ea, eb = _extent_ids(a), _extent_ids(b)
    assert len(ea) == len(eb) == 1 and ea != eb
    assert a.dict_get(b"k", 1) == BIG and b.dict_get(b"k", 1) == BIG[:-1]
    assert a.check() is None and b.check() is None


def test_removing_one_heap_leaves_the_other_heaps_extent(heaps: Heaps) -> None:
    """Forced destroy, the last detach's reap and gc of one heap never take the other's."""
    a, b = heaps.colliding_pair()
    a.dict_set(b"k", 1, BIG)
    b.dict_set(b"k", 1, BIG)
    eb = _extent_ids(b)
    a.destroy_extents()
    main_a = a._att.shmid
    a.close()
    a._att.detach()
    _core.rmid(main_a)
    assert reap_extents(main_a) == 0       # token 0: as for a damaged header
    assert sweep_extents(ids=eb) == []
    assert _extent_ids(b) == eb and b.dict_get(b"k", 1) == BIG


def test_unfinished_extent_under_shared_keys_waits_for_its_own_heap(heaps: Heaps) -> None:
    """A creator of b's extent dies right after the shmget: a's forced destroy and gc
    leave that segment (it may be b's extent in the making), b's recovery removes it."""
    a, b = heaps.colliding_pair()

    def child() -> int:
        set_test_fail_point(1)
        b.dict_set(b"k", 1, BIG)
        return 0
    pid = fork_child(child)
    assert wait_child(pid) == 70
    left = segments_created_by(pid)
    assert len(left) == 1
    a.destroy_extents()
    assert sweep_extents(ids=left) == []
    assert segments_created_by(pid) == left
    b.dict_set(b"k", 1, b"small")          # recovers the dead creator's PENDING slot
    assert b.recoveries == 1
    assert segments_created_by(pid) == []


def test_recovery_of_a_pending_slot_spares_the_other_heaps_extent(heaps: Heaps) -> None:
    """One process grows b (key K), then dies growing a right after writing {K, pid,
    size} into a's table: a's recovery must not remove b's extent, which has them all."""
    a, b = heaps.colliding_pair()

    def child() -> int:
        b.dict_set(b"k", 1, BIG)
        set_test_fail_point(2)
        a.dict_set(b"k", 1, BIG)
        return 0
    pid = fork_child(child)
    assert wait_child(pid) == 70
    eb = segments_created_by(pid)
    assert len(eb) == 1
    a.dict_set(b"x", 1, b"1")              # recovers the PENDING slot
    assert a.recoveries == 1
    assert segments_created_by(pid) == eb
    assert b.dict_get(b"k", 1) == BIG and _extent_ids(b) == eb
