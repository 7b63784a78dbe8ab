"""One flipped bit in a dict entry's stored hash no longer hides its key: the lookup
that meets the key under a hash one bit off reports damage, the heap's rebuild
recomputes the hash from the key (nothing stored is overwritten) and the operation
runs again -- so a get finds the key and a set or add never stores a second copy."""

from __future__ import annotations

from typing import Any

import pytest

from shmshare import SharedDict, SharedSet, check
from shmshare.naming.header import HEADER_SIZE
from shmshare.segment import Segment

ENTRY = 24  # one dict entry: hash, blob, seq (src/dict_int.h)


def _flip_hash_bit(obj: Any, entry: int, bit: int) -> None:
    root = obj._heap.root_ref()
    assert root >> 48 == 0  # the table is in extent 0
    raw = Segment.from_id(obj.segment.id)
    try:
        raw.buf[HEADER_SIZE + root + 64 + ENTRY * entry + bit // 8] ^= 1 << bit % 8
    finally:
        raw.detach()


@pytest.mark.parametrize("bit", [0, 13, 63])
def test_dict_key_under_a_flipped_hash_bit_is_found_and_not_stored_twice(bit: int) -> None:
    """d[k], k in d and d[k] = v after one bit of k's entry hash flipped."""
    d: SharedDict[str, int] = SharedDict({f"k{i}": i for i in range(10)})
    try:
        _flip_hash_bit(d, 3, bit)
        assert d["k3"] == 3
        _flip_hash_bit(d, 4, bit)
        d["k4"] = 44
        assert len(d) == 10 and d["k4"] == 44
        assert list(d) == [f"k{i}" for i in range(10)]
        check(d)
    finally:
        d.detach()


def test_set_item_under_a_flipped_hash_bit_is_found_and_not_added_twice() -> None:
    """x in s and s.add(x) after one bit of x's entry hash flipped."""
    s: SharedSet[int] = SharedSet(range(10))
    try:
        _flip_hash_bit(s, 3, 7)
        assert 3 in s
        _flip_hash_bit(s, 5, 40)
        s.add(5)
        assert len(s) == 10 and sorted(s) == list(range(10))
    finally:
        s.detach()
