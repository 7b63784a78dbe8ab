"""The redo record of :class:`~shmshare.SharedList`: how a change of several
heap writes stays atomic, and how a change left half-done is finished.

**Atomicity.**  Every method is atomic, also against a process SIGKILLed in
the middle of it: afterwards the list is exactly as before the method or as
after it.  A single heap write (append, ``lst[i] = x``, ``pop()`` at the end,
insert at the end...) is atomic by itself (the heap rebuilds itself after a
crash).  A method that needs several writes (``insert``/``pop``/``del`` at
``i``, slices, ``extend``, ``sort``, ``reverse``, ``remove``, ``*=``) first
stores a *redo record* under the key ``"journal"`` -- one write that commits
the change: the list's old and new length and every ``(index, pickled
item)`` to store -- then makes the writes and deletes the record.  Replaying
the record is idempotent (overwrite the listed keys, add the missing ones in
increasing order, drop the keys past the new length), so whoever finds a
record left behind by a dead process (or by an exception raised between the
writes) finishes the change before doing anything else, and tells the
process with :class:`~shmshare.OwnerDiedWarning`.

:class:`JournaledList` is the layer of SharedList that writes, replays and
checks for the record; ``list.py`` builds the sequence on it.
"""

from __future__ import annotations

import struct

from .._core.heap import Heap
from ..errors import CorruptSegmentError
from ..segment import Segment
from .codec import encode_key
from .heap_object import HeapObject

__all__ = ["JournaledList"]

# The redo record (see the module docstring): a str key, which never equals an
# item's integer key.  Layout: header (magic, old length, new length, number of
# puts), then per put its index and length, then the items' bytes.
_JOURNAL = encode_key("journal")
_J_MAGIC = b"SLJ1"
_J_HEAD = struct.Struct("<4sQQQ")
_J_PUT = struct.Struct("<QQ")


def _pack_journal(old_n: int, new_n: int, puts: list[tuple[int, bytes]]) -> bytes:
    head = _J_HEAD.pack(_J_MAGIC, old_n, new_n, len(puts))
    index = b"".join([_J_PUT.pack(i, len(d)) for i, d in puts])
    return b"".join([head, index, *[d for _, d in puts]])


def _unpack_journal(data: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    """``(old_n, new_n, puts)``; ValueError if the record is not well formed."""
    if len(data) < _J_HEAD.size:
        raise ValueError("truncated header")
    magic, old_n, new_n, count = _J_HEAD.unpack_from(data)
    if magic != _J_MAGIC:
        raise ValueError("bad magic")
    pos = _J_HEAD.size + count * _J_PUT.size
    if pos > len(data):
        raise ValueError("truncated index")
    puts: list[tuple[int, bytes]] = []
    last = -1
    for k in range(count):
        i, n = _J_PUT.unpack_from(data, _J_HEAD.size + k * _J_PUT.size)
        if i <= last or i >= new_n or pos + n > len(data):
            raise ValueError(f"put #{k} (index {i}, {n} bytes) out of order or range")
        puts.append((i, data[pos:pos + n]))
        pos += n
        last = i
    if pos != len(data):
        raise ValueError("trailing bytes")
    # Keys past the old length are added in increasing order: all must be listed.
    grown = [i for i, _ in puts if i >= old_n]
    if grown != list(range(old_n, new_n)):
        raise ValueError(f"items {old_n}..{new_n - 1} are not all listed")
    return old_n, new_n, puts


def _diff(old: list[bytes], new: list[bytes], start: int = 0) -> list[tuple[int, bytes]]:
    """The puts that turn ``old`` into ``new`` (both from index ``start``), length aside."""
    n = len(old)
    return [(i, d) for i, d in enumerate(new, start)
            if i >= start + n or old[i - start] != d]


class JournaledList(HeapObject):
    """A list's heap, changed through redo records (see the module docstring)."""

    # The heap modification counter at which this process last saw no redo
    # record pending (-1: never).  Every heap change moves the counter.
    _clean: int
    _hrec: int  # the heap handle's recovery count, last looked at
    _lrec: int  # the lock's warned recovery count, last looked at

    def _attach(self, seg: Segment, heap: Heap) -> None:
        super()._attach(seg, heap)
        self._clean = -1
        self._hrec = heap.recoveries
        self._lrec = self._lock.recoveries

    def _settle(self) -> None:
        """With the lock held: replay a redo record left pending, if any."""
        heap = self._heap
        if heap.modcount_view[0] == self._clean:
            return  # nothing changed since this process last saw none
        data = heap.dict_get(*_JOURNAL, held=True)
        if data is not None:
            try:
                old_n, new_n, puts = _unpack_journal(data)
            except ValueError as exc:
                raise CorruptSegmentError(
                    f"{self._label()}: unreadable redo record ({exc})") from None
            self._apply(old_n, new_n, puts, True)
            heap.dict_pop(*_JOURNAL, held=True)
        self._clean = heap.modcount_view[0]
        self._note_recoveries(data is not None)

    def _note_recoveries(self, replayed: bool) -> None:
        """Warn (OwnerDiedWarning) about a dead owner's state repaired by a heap
        operation rather than by this lock (which warns itself), or a change
        left half-done that was just completed."""
        total, warned = self._heap.recoveries, self._lock.recoveries
        silent = (total - self._hrec) - (warned - self._lrec)
        just_warned = warned != self._lrec
        self._hrec, self._lrec = total, warned
        if silent > 0 or (replayed and not just_warned):
            self._lrec += 1  # before warning: the warning may be raised as an error
            self._lock.note_recovery()

    def _clean_at(self, mark: int) -> bool | None:
        """Without the lock: is no redo record pending at counter ``mark``?
        True: none (and nothing changed since ``mark``); False: the heap
        changed meanwhile; None: one is pending (take the lock to replay it)."""
        data, now = self._heap.dict_read(*_JOURNAL)
        if data is not None:
            return None
        if now != mark:
            return False
        self._clean = mark
        self._note_recoveries(False)
        return True

    def _apply(self, old_n: int, new_n: int, puts: list[tuple[int, bytes]],
               journaled: bool) -> None:
        """Store ``puts`` (increasing indices), then drop keys ``new_n..old_n-1``.
        Idempotent, so a record may be replayed any number of times.
        ``journaled``: the redo record is stored (and counts in the length)."""
        heap = self._heap
        for i, data in puts:
            if i < old_n:
                self._overwrite(i, data)
            else:
                kb, k = encode_key(i)
                heap.dict_set(kb, k, data, held=True)
        for last in range(old_n - 1, new_n - 1, -1):
            kb, k = encode_key(last)
            heap.dict_pop(kb, k, held=True)
        if old_n > new_n and (stored := heap.dict_len(held=True) - journaled) != new_n:
            # A drop found no key (fine on a replay) yet the length is off: the
            # key is there but lookups miss it (damage).
            raise CorruptSegmentError(
                f"{self._label()}: {stored} items stored after shrinking to {new_n}: "
                f"the heap hides one of them")

    def _overwrite(self, i: int, data: bytes) -> None:
        """With the lock held: store item ``i < len`` over the one there.  A key
        the lookup does not find was hidden by damage: the new copy is taken out
        again (nothing existing is overwritten) and CorruptSegmentError raised."""
        kb, k = encode_key(i)
        if self._heap.dict_set(kb, k, data, held=True):
            self._heap.dict_pop(kb, k, held=True)
            raise self._hidden(i)

    def _len(self) -> int:
        """The list's length (SharedList's, with the lock held)."""
        raise NotImplementedError

    def _missing(self, i: int) -> bytes | None:
        """Item ``i`` (``i >= 0``) read as absent: under the lock, its bytes if
        it is there now, None if ``i`` is past the end, CorruptSegmentError if
        it is below the length (damage hides it: never an IndexError)."""
        with self._lock:
            n = self._len()
            kb, k = encode_key(i)
            data = self._heap.dict_get(kb, k, held=True)
            if data is None and i < n:
                raise self._hidden(i)
            return data

    def _hidden(self, i: int) -> CorruptSegmentError:
        return CorruptSegmentError(
            f"{self._label()}: item {i} is below the length but lookups do not find "
            f"it (a damaged entry); 'shmshare check' shows the damage, restore the "
            f"list from a copy")

    def _commit(self, old_n: int, new_n: int, puts: list[tuple[int, bytes]]) -> None:
        """With the lock held and settled: make the change atomically."""
        writes = len(puts) + max(0, old_n - new_n)
        if writes > 1:
            heap = self._heap
            heap.dict_set(*_JOURNAL, _pack_journal(old_n, new_n, puts), held=True)  # commit
            self._apply(old_n, new_n, puts, True)
            heap.dict_pop(*_JOURNAL, held=True)
        elif writes:
            self._apply(old_n, new_n, puts, False)
        self._clean = self._heap.modcount_view[0]
