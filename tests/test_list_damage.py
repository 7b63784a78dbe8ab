"""A SharedList whose record is damaged (a stray write into its length word, ref
array header, an item ref or an item block) reports CorruptSegmentError: never a
wrong item, an IndexError below ``len``, a short iteration, or a segfault; check()
and ``shmshare check`` name the damage.  A damaged length word alone is derived
data: it is rewritten (a recovery) and the answers stay right."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shmshare import CorruptSegmentError, SharedList
from shmshare.cli import main
from shmshare.naming.header import HEADER_SIZE
from shmshare.segment import Segment

# The layout (src/list_int.h): record {magic, lenw, arr, pad}; ref array {cap, hn,
# refs[cap]}, hn = head << 32 | n; item block {vlen, tag, bytes}.
REC_LENW, REC_ARR = 8, 16
ARR_CAP, ARR_HN, ARR_REFS = 0, 8, 16


class Raw:
    """Byte access to a list's record through a second attachment of its segment."""

    def __init__(self, lst: SharedList[Any]) -> None:
        self.seg = Segment.from_id(lst.segment.id)
        self.rec = HEADER_SIZE + lst._heap.root_ref()
        assert lst._heap.root_ref() >> 48 == 0  # in extent 0

    def u64(self, at: int) -> int:
        return int.from_bytes(self.seg.buf[at:at + 8], "little")

    def put(self, at: int, value: int) -> None:
        self.seg.buf[at:at + 8] = value.to_bytes(8, "little")

    @property
    def arr(self) -> int:
        ref = self.u64(self.rec + REC_ARR)
        assert ref >> 48 == 0
        return HEADER_SIZE + ref

    def ref_at(self, i: int) -> int:
        """The segment offset of item i's ref (the ring slot)."""
        cap, hn = self.u64(self.arr + ARR_CAP), self.u64(self.arr + ARR_HN)
        return self.arr + ARR_REFS + 8 * (((hn >> 32) + i) % cap)


def _ref_off_by_16(raw: Raw, i: int) -> None:
    at = raw.ref_at(i)
    raw.put(at, raw.u64(at) + 16)  # lands inside the item's own block


def _ref_to_other_block(raw: Raw, i: int) -> None:
    at = raw.ref_at(i)
    raw.put(at, raw.u64(raw.rec + REC_ARR))  # the ref array: a used block, not an item


def _item_length(raw: Raw, i: int) -> None:
    item = HEADER_SIZE + raw.u64(raw.ref_at(i))
    raw.put(item, raw.u64(item) ^ (1 << 20))


def _item_tag(raw: Raw, i: int) -> None:
    item = HEADER_SIZE + raw.u64(raw.ref_at(i))
    raw.seg.buf[item + 8] ^= 4


DAMAGE = {"ref+16": _ref_off_by_16, "ref-to-array": _ref_to_other_block,
          "item-length": _item_length, "item-tag": _item_tag}


@pytest.fixture
def made() -> Iterator[Callable[..., tuple[SharedList[Any], Raw]]]:
    out: list[tuple[SharedList[Any], Raw]] = []

    def make(items: Any = range(10), **kw: Any) -> tuple[SharedList[Any], Raw]:
        lst: SharedList[Any] = SharedList(items, **kw)
        raw = Raw(lst)
        out.append((lst, raw))
        return lst, raw

    yield make
    for lst, raw in out:
        raw.seg.detach()
        lst.detach()


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_item_is_corrupt_not_a_wrong_answer(made: Any, damage: str) -> None:
    """lst[3], lst[-7], iteration, copy and pop(0) of a list whose item 3 is damaged
    raise CorruptSegmentError (now and on every retry); check() names item 3."""
    lst, raw = made()
    lst.pop(0)
    lst.insert(0, 0)  # the ring's head moved: the item is found through the offset
    DAMAGE[damage](raw, 3)
    for read in (lambda: lst[3], lambda: lst[-7], lambda: list(lst), lst.copy,
                 lambda: lst.pop(0), lambda: lst.insert(5, "x"), lst.reverse):
        with pytest.raises(CorruptSegmentError):
            read()
    assert len(lst) == 10
    with pytest.raises(CorruptSegmentError, match="list item 3 of 10"):
        lst.check()


def test_damaged_array_header_is_corrupt(made: Any) -> None:
    """A head past the capacity, a length past it, or a capacity past the block."""
    for field, value in ((ARR_HN, (99 << 32) | 10), (ARR_HN, 11 << 40 | 9999),
                         (ARR_CAP, 1 << 40)):
        lst, raw = made()
        raw.put(raw.arr + field, value)
        with pytest.raises(CorruptSegmentError):
            lst[0]
        with pytest.raises(CorruptSegmentError, match="list ref array header"):
            lst.check()


def test_damaged_record_is_corrupt(made: Any) -> None:
    """A bad magic, or an array ref that is no block."""
    lst, raw = made()
    raw.seg.buf[raw.rec] ^= 1
    with pytest.raises(CorruptSegmentError):
        lst.append(1)
    with pytest.raises(CorruptSegmentError, match="bad magic"):
        lst.check()
    lst, raw = made()
    raw.put(raw.rec + REC_ARR, raw.u64(raw.rec + REC_ARR) + 32)
    with pytest.raises(CorruptSegmentError):
        lst[0]


def test_damaged_length_word_is_rewritten(made: Any, recwarn: pytest.WarningsRecorder) -> None:
    """One flipped bit of the length word: len() does not trust it, the heap repairs
    it from the ref array, and len, check and later lock-free reads are right."""
    lst, raw = made()
    raw.seg.buf[raw.rec + REC_LENW] ^= 2
    assert len(lst) == 10
    lst.check()
    assert len(lst) == 10 and lst.copy() == list(range(10))
    raw.seg.buf[raw.rec + REC_LENW + 4] ^= 1
    with pytest.raises(CorruptSegmentError, match="length word"):
        lst.check()  # check reports it, changing nothing
    assert len(lst) == 10
    lst.check()


def test_cli_check_reports_the_damage(project_dir: Path, made: Any,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``shmshare check`` on a named list says it is damaged and what is wrong."""
    _, raw = made(name="hurt", project_dir=project_dir)
    assert main(["check", "hurt", "--project-dir", str(project_dir)]) == 0
    capsys.readouterr()
    _ref_off_by_16(raw, 2)
    code = main(["check", "hurt", "--project-dir", str(project_dir)])
    out, err = capsys.readouterr()
    assert code != 0 and "list item 2 of 10" in out + err


def test_a_list_too_damaged_to_open_still_says_why(project_dir: Path, made: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Another handle opens a list whose array header is damaged; its operations raise
    CorruptSegmentError and check() (and ``shmshare check``) give the reason."""
    lst, raw = made(name="broken", project_dir=project_dir)
    raw.put(raw.arr + ARR_HN, (99 << 32) | 10)
    with pytest.raises(CorruptSegmentError):
        lst[0]
    other: SharedList[Any] = SharedList(name="broken", project_dir=project_dir, create=False)
    try:
        with pytest.raises(CorruptSegmentError):
            len(other)
        with pytest.raises(CorruptSegmentError, match="list ref array header"):
            other.check()
    finally:
        other.detach()
    assert main(["check", "broken", "--project-dir", str(project_dir)]) != 0
    out, err = capsys.readouterr()
    assert "list ref array header" in out + err
