"""A SharedQueue whose counters are damaged (head past tail, or more items than its
maxsize) says CorruptSegmentError on qsize, put and get, instead of "empty", "full"
forever (a bounded put would wait for good), or a count past the bound."""

from __future__ import annotations

import ctypes

import pytest

from shmshare import CorruptSegmentError, SharedQueue

HEAD, TAIL = 176, 184   # offsets of head and tail in the queue's record (src/sync_int.h)


def _poke(q: SharedQueue, offset: int, value: int) -> None:
    ctypes.c_uint64.from_address(q._r.address() + offset).value = value


@pytest.mark.parametrize("damage", ["head-past-tail", "past-maxsize"])
def test_damaged_counters_are_corrupt_not_empty_or_full(damage: str) -> None:
    """qsize, empty, full, put and get of a queue of 3 holding 2, with one counter off."""
    q = SharedQueue(3)
    try:
        q.put("a")
        q.put("b")
        if damage == "head-past-tail":
            _poke(q, HEAD, 5)          # head 5, tail 2
        else:
            _poke(q, TAIL, 1 << 40)    # 2**40 items in a queue of 3
        for op in (q.qsize, q.empty, q.full, lambda: q.put("c", timeout=5),
                   lambda: q.get(timeout=5), lambda: q.put_nowait("c"), q.get_nowait):
            with pytest.raises(CorruptSegmentError):
                op()
    finally:
        q.detach()
