"""Silent and loud damage to a heap: a damaged seq cannot make iteration loop,
a flipped seed bit is caught by the header checksum, and a heap whose header
cannot be parsed is still removable by detach, ``rm`` and ``gc``."""

from __future__ import annotations

import struct
import textwrap
from pathlib import Path

import pytest
from conftest import HeapFactory
from helpers import run_python, segments_created_by

from shmshare import CorruptSegmentError, SharedDict
from shmshare._core.heap import SCAN_START, Heap
from shmshare.naming.header import HEADER_SIZE
from shmshare.naming.inventory import remove
from shmshare.naming.keys import list_names
from shmshare.naming.lifecycle import sweep
from shmshare.segment import Segment

HEAP_AT = 4096          # where HeapFactory puts the heap in its segment
SEED = 40               # offset of the hash seed in the heap header (src/heap_int.h)
MUTEX_KIND = 128 + 16   # the mutex's type word (glibc pthread_mutex_t.__kind)
ENTRY = 24              # one dict entry: hash, blob, seq (src/dict_int.h)


def _filled(make_heap: HeapFactory, n: int) -> tuple[Heap, memoryview, int]:
    """A heap holding n keys, a view of its segment, and where its dict entries start."""
    h = make_heap(1 << 22)
    for i in range(n):
        k = b"key%05d" % i
        h.dict_set(k, len(k), bytes(100))
    root = h.root_ref()
    assert root >> 48 == 0                         # the table is in extent 0
    mv = make_heap.made[-1][1].memoryview()
    return h, mv, HEAP_AT + (root & ((1 << 48) - 1)) + 64


def test_damaged_seq_ends_iteration_in_corrupt_error(make_heap: HeapFactory) -> None:
    """The last seq of a batch set back to 0 would restart every batch: CorruptSegmentError."""
    h, mv, entries = _filled(make_heap, 3000)
    last = len(h.dict_scan()) - 1                  # entry number of the batch's last record
    struct.pack_into("=Q", mv, entries + ENTRY * last + 16, 0)
    seq, batches = SCAN_START, 0
    with pytest.raises(CorruptSegmentError):
        while batch := h.dict_scan(seq):
            batches += 1
            assert batches < 100, "iteration returns batches forever"
            seq = batch[-1][0]
    mv.release()


def test_flipped_seed_bit_is_caught_at_open_and_by_check(make_heap: HeapFactory) -> None:
    """One bit of the hash seed: open refuses, check() names it, and the next operation
    fails loudly instead of missing keys (nothing is rehashed or rewritten)."""
    h, mv, _ = _filled(make_heap, 10)
    att = make_heap.made[-1][1]
    assert h.dict_get(b"key00003", 8) == bytes(100)
    mv[HEAP_AT + SEED] ^= 1
    with pytest.raises(CorruptSegmentError):
        Heap.open(att, HEAP_AT, 1 << 22)
    problem = h.check()
    assert problem is not None and "checksum" in problem
    with pytest.raises(CorruptSegmentError):
        h.dict_get(b"key00003", 8)
    with pytest.raises(CorruptSegmentError):
        h.dict_set(b"key00003", 8, b"new", held=False)
    mv.release()


def test_flipped_entry_hash_is_reported_by_check(make_heap: HeapFactory) -> None:
    """A key hidden from lookups by its entry's hash is named by check().  (One
    flipped bit is found and repaired by the lookup itself: test_entry_damage.)"""
    h, mv, entries = _filled(make_heap, 10)
    mv[entries + ENTRY * 3] ^= 3                  # two bits of entry 3's hash
    assert h.dict_get(b"key00003", 8) is None      # hidden: the damage check() must find
    problem = h.check()
    assert problem is not None and "hash" in problem
    mv.release()


@pytest.mark.parametrize("where", [0, 8, MUTEX_KIND], ids=["magic", "version", "mutex"])
def test_object_with_damaged_heap_header_detaches_clean(project_dir: Path, where: int) -> None:
    """detach() of a grown object whose heap header is damaged removes every segment."""
    d = SharedDict("x", project_dir=project_dir)
    d["big"] = b"x" * (1 << 20)
    assert d.stats()["extents"] > 1
    raw = Segment.from_id(d.segment.id)
    raw.buf[HEADER_SIZE + where] ^= 0xFF
    raw.detach()
    d.detach()
    assert list_names(project_dir) == []


def test_rm_removes_object_with_damaged_heap_header(project_dir: Path) -> None:
    """`shmshare rm` of a persistent object whose heap magic is damaged."""
    d = SharedDict("x", project_dir=project_dir, persist=True)
    d["big"] = b"x" * (1 << 20)
    raw = Segment.from_id(d.segment.id)
    raw.buf[HEADER_SIZE] ^= 0xFF
    raw.detach()
    assert remove(project_dir, "x") == 1
    d.detach()
    assert list_names(project_dir) == []


def test_gc_removes_damaged_orphans_and_goes_on(project_dir: Path) -> None:
    """gc meets an orphan whose heap cannot be parsed, removes it and the next one."""
    code = textwrap.dedent("""
        import os, sys
        from shmshare import SharedDict, Segment
        from shmshare.naming.header import HEADER_SIZE
        bad = SharedDict("a-bad", project_dir=sys.argv[1])
        bad["big"] = b"x" * (1 << 20)
        good = SharedDict("b-good", project_dir=sys.argv[1])
        good["big"] = b"y" * (1 << 20)
        raw = Segment.from_id(bad.segment.id)
        raw.buf[HEADER_SIZE] ^= 0xFF
        raw.detach()
        print(os.getpid(), flush=True)
        os._exit(0)                     # both orphaned: nattch 0, not persistent
    """)
    pid = int(run_python(code, str(project_dir)).stdout)
    assert segments_created_by(pid)
    results = sweep(project_dir)
    assert sorted((r.name, r.action) for r in results) == [("a-bad", "removed"),
                                                           ("b-good", "removed")]
    assert segments_created_by(pid) == []
    assert list_names(project_dir) == []


def test_gc_reports_a_payload_it_cannot_clean_up_and_goes_on(
        project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A destroy hook that raises: gc still removes every orphan, and says what failed."""
    from shmshare.naming import lifecycle

    def broken(*_: object) -> None:
        raise CorruptSegmentError("cannot parse this payload")
    monkeypatch.setattr(lifecycle, "_DESTROY_HOOKS", [*lifecycle._DESTROY_HOOKS, broken])
    code = textwrap.dedent("""
        import os, sys
        from shmshare import SharedDict
        a = SharedDict("a", project_dir=sys.argv[1])
        b = SharedDict("b", project_dir=sys.argv[1])
        print(os.getpid(), flush=True)
        os._exit(0)
    """)
    pid = int(run_python(code, str(project_dir)).stdout)
    results = sweep(project_dir)
    assert [(r.name, r.action) for r in sorted(results, key=lambda r: r.name)] == [
        ("a", "removed"), ("b", "removed")]
    assert all("cannot parse this payload" in r.reason for r in results)
    assert segments_created_by(pid) == []
