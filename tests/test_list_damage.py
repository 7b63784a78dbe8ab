"""A SharedList whose heap hides an item (one flipped bit in an entry's hash or
key) reports CorruptSegmentError: never an IndexError below ``len``, a short
iteration, or a write that stores a second copy of the item."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shmshare import CorruptSegmentError, SharedList
from shmshare.naming.header import HEADER_SIZE
from shmshare.segment import Segment

ENTRY = 24  # one dict entry: hash, blob, seq (src/dict_int.h)
BLOB_HEAD = 16  # a key blob: klen, cmplen, vlen, then the key bytes


def _hash_of(raw: Segment, entries: int, i: int) -> None:
    raw.buf[entries + ENTRY * i] ^= 3  # two bits: one bit is repaired (test_entry_damage)


def _key_of(raw: Segment, entries: int, i: int) -> None:
    blob = int.from_bytes(raw.buf[entries + ENTRY * i + 8:entries + ENTRY * i + 16], "little")
    assert blob >> 48 == 0  # in extent 0
    raw.buf[HEADER_SIZE + blob + BLOB_HEAD + 2] ^= 1  # a byte of the integer key's tag/body


@pytest.fixture(params=[_hash_of, _key_of], ids=["hash", "key"])
def damaged(request: pytest.FixtureRequest) -> Iterator[Callable[[int], SharedList[Any]]]:
    """A factory: a SharedList of 0..9 whose item i the heap's lookups no longer find."""
    made: list[tuple[SharedList[Any], Segment]] = []

    def make(i: int) -> SharedList[Any]:
        lst: SharedList[Any] = SharedList(range(10))
        root = lst._heap.root_ref()
        assert root >> 48 == 0
        raw = Segment.from_id(lst.segment.id)
        made.append((lst, raw))
        request.param(raw, HEADER_SIZE + root + 64, i)
        return lst

    yield make
    for lst, raw in made:
        raw.detach()
        lst.detach()


def test_index_below_len_is_corrupt_not_index_error(
        damaged: Callable[[int], SharedList[Any]]) -> None:
    """lst[3] and lst[-7] of a 10-item list whose item 3 is hidden."""
    lst = damaged(3)
    assert len(lst) == 10
    with pytest.raises(CorruptSegmentError, match="item 3"):
        lst[3]
    with pytest.raises(CorruptSegmentError, match="item 3"):
        lst[-7]
    assert lst[9] == 9
    with pytest.raises(IndexError):
        lst[10]


def test_iteration_does_not_stop_short(damaged: Callable[[int], SharedList[Any]]) -> None:
    """Iteration raises at the hidden item instead of ending there."""
    lst = damaged(3)
    with pytest.raises(CorruptSegmentError):
        list(lst)


def test_setitem_does_not_store_a_second_copy(
        damaged: Callable[[int], SharedList[Any]]) -> None:
    """lst[3] = x on a hidden item raises and leaves the length and items as they were."""
    lst = damaged(3)
    with pytest.raises(CorruptSegmentError):
        lst[3] = "x"
    assert len(lst) == 10
    assert lst._heap.dict_len() == 10


@pytest.mark.parametrize("op", [
    lambda lst: lst.insert(0, "x"),
    lambda lst: lst.pop(0),
    lambda lst: lst.reverse(),
    lambda lst: lst.__delitem__(slice(5, None)),
    lambda lst: lst.pop(),
], ids=["insert", "pop0", "reverse", "del-tail", "pop-last"])
def test_multi_write_changes_detect_the_hidden_item(
        damaged: Callable[[int], SharedList[Any]], op: Callable[[SharedList[Any]], Any]) -> None:
    """Every change that rewrites or drops a hidden item raises, now and on every retry."""
    lst = damaged(9)
    with pytest.raises(CorruptSegmentError):
        op(lst)
    with pytest.raises(CorruptSegmentError):
        op(lst)
