"""``SharedList``: a list in shared memory, used by many processes at once.

It is stored on the same heap engine as :class:`~shmshare.SharedDict`, item
``i`` under the integer key ``i``.  Appends add key ``len``; inserts and
deletes shift values by overwriting existing keys and only ever remove the
last keys, so the engine's insertion order is always the list order and a
scan returns the items in order.

**Atomicity.**  Every method is atomic, also against a process SIGKILLed in
the middle of it: afterwards the list is exactly as before the method or as
after it (the redo record: :mod:`shmshare.objects.list_journal`).

Methods that change the list run under its lock, which is also the heap's
lock: a live writer's half-done state is never visible, since every read is
a heap operation that waits for the lock.  Reads that do not take the object
lock (``lst[i]``, ``len``, iteration) also check, in a second heap read
consistent with the first (the heap's modification counter did not move in
between), that no record is pending; they skip that check while the counter
has not moved since this process last saw the list without one, and replay
a pending record under the lock before answering.

Indexing is O(1); ``insert``/``del``/``pop`` at position ``i`` move the
``len - i`` items after it, as ``list`` does, but each move is a heap write,
so prefer appends and pops at the end for large lists.  Iterating walks
indices 0, 1, 2... until the end, like ``multiprocessing``'s ListProxy: items
another process inserts or deletes meanwhile may shift under the iteration;
take a snapshot with ``copy()`` (or ``lst[:]``) when that matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableSequence
from typing import Any, SupportsIndex, TypeVar, overload

from .._core.heap import Heap
from ..errors import CorruptSegmentError
from ..segment import Segment
from .codec import dumps, encode_key, loads
from .heap_object import _CACHE_MAX_BYTES, _CACHE_MAX_VALUE
from .list_journal import JournaledList, _diff
from .remote import StoreDispatch
from .shared_object import HandleMethods, refuse_str_data

__all__ = ["SharedList"]

T = TypeVar("T")

_SHORT_TAIL = 16  # a tail this short is read key by key; a longer one by a scan
_TRIES = 3  # unlocked reads retried while other processes write, then locked


class SharedList(StoreDispatch, HandleMethods, JournaledList, MutableSequence[T], kind="list"):
    """A list in shared memory, with no server process.

    ``SharedList(iterable=(), *, name=None, create=None, project_dir=None,
    persist=False, mode=0o600, trust=False, url=None)``: anonymous unless named (it
    pickles by reference); the items are stored only when this call creates
    the list.  A str first argument is refused (``list("abc")`` would be its
    characters, older shmshare took it as a name): pass ``name=``.
    ``lst[i]`` returns a copy of the item: reassign it to change it.
    ``url=`` (or ``$SHMSHARE_URL``) returns the list on a Redis store instead
    (:class:`~shmshare.objects.remote_list.RemoteList`, an instance of SharedList).
    """

    _len_memo: tuple[int, int]  # (modification counter, length) last read clean

    def __init__(self, iterable: Iterable[T] = (), /, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False, url: str | None = None) -> None:
        refuse_str_data("SharedList", iterable, "list")
        items = [(i, dumps(x)) for i, x in enumerate(iterable)]  # item i under key i
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url, initial=items)

    def _attach(self, seg: Segment, heap: Heap) -> None:
        super()._attach(seg, heap)
        # (heap modification counter, length) last read with no record pending:
        # valid while the counter has not moved (every change moves it).
        self._len_memo = (-1, 0)

    # -- reads ----------------------------------------------------------------------

    def _remember(self, i: int, data: bytes | None, mark: int) -> None:
        # As HeapObject._read, for marks at which no record was pending.
        if data is not None and len(data) <= _CACHE_MAX_VALUE:
            if mark != self._rmark or self._rbytes > _CACHE_MAX_BYTES:
                # A new dict, not clear(): other threads may be reading the old one.
                self._rcache, self._rbytes, self._rmark = {}, 0, mark
            self._rcache[i] = data
            self._rbytes += len(data)

    def _load(self, i: int) -> bytes | None:
        """Item ``i``'s pickled bytes (``i >= 0``), or None past the end."""
        heap = self._heap
        mark = heap.modcount_view[0]
        if mark == self._rmark == self._clean:
            data = self._rcache.get(i)
            if data is not None:
                return data
        kb, k = encode_key(i)
        if not self.lock.held():
            data, mark = heap.dict_read(kb, k)
            if mark == self._clean:  # read at a counter value known to have no record
                self._remember(i, data, mark)
                return data
            for _ in range(_TRIES):
                clean = self._clean_at(mark)
                if clean:
                    self._remember(i, data, mark)
                    return data
                if clean is None:
                    break
                data, mark = heap.dict_read(kb, k)
        with self.lock:
            self._settle()
            data, mark = heap.dict_read(kb, k, held=True)
            self._remember(i, data, mark)
            return data

    def _len(self) -> int:
        """The length, with the lock held."""
        self._settle()
        return self._heap.dict_len(held=True)

    def _all_raw(self) -> list[bytes]:
        """Every item's pickled bytes, in order (lock held, settled)."""
        out: list[bytes] = []
        seq = -1
        while batch := self._heap.dict_scan(seq, values=True, held=True):
            out.extend(v for _, _, v in batch if v is not None)
            seq = batch[-1][0]
        return out

    def _tail(self, i: int, n: int) -> list[bytes]:
        """The pickled items ``i..n-1`` (lock held, settled)."""
        if n - i > _SHORT_TAIL and (n - i) * 8 > n:  # a scan reads items ~8x faster
            return self._all_raw()[i:]
        out: list[bytes] = []
        for j in range(i, n):
            kb, k = encode_key(j)
            data = self._heap.dict_get(kb, k, held=True)
            if data is None:
                raise CorruptSegmentError(f"{self._label()}: item {j} of {n} is missing")
            out.append(data)
        return out

    def _splice(self, i: int, j: int, new: list[bytes], n: int) -> list[bytes]:
        """Replace items ``i..j-1`` by ``new`` (lock held, settled, ``n`` the
        length); the pickled items removed."""
        old = self._tail(i, n)
        self._commit(n, n - (j - i) + len(new), _diff(old, new + old[j - i:], i))
        return old[:j - i]

    def _rewrite(self, old: list[bytes], new: list[bytes]) -> None:
        """Make the list ``new`` (lock held, settled, ``old`` its items)."""
        self._commit(len(old), len(new), _diff(old, new))

    def _index(self, i: SupportsIndex, n: int) -> int:
        if not hasattr(i, "__index__"):
            raise TypeError(f"list indices must be integers or slices, not {type(i).__name__}")
        i = i.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("list index out of range")
        return i

    # -- sequence protocol ---------------------------------------------------------

    def __len__(self) -> int:
        heap = self._heap
        if not self.lock.held():
            view = heap.modcount_view
            memo = self._len_memo
            if memo[0] == view[0]:
                return memo[1]  # nothing changed since: no C call at all
            mark = view[0]
            n = heap.dict_len()
            if mark == self._clean == view[0]:
                self._len_memo = (mark, n)
                return n  # read at a counter value known to have no record pending
            for _ in range(_TRIES):
                clean = self._clean_at(mark)
                if clean:
                    return n
                if clean is None:
                    break
                mark = view[0]
                n = heap.dict_len()
        with self.lock:
            return self._len()

    @overload
    def __getitem__(self, i: SupportsIndex) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.copy()[i]
        if type(i) is int and i >= 0:
            data = self._load(i)  # no length needed: a missing key is out of range
            if data is None:
                data = self._missing(i)  # ... unless damage hides it
        else:
            with self.lock:
                i = self._index(i, self._len())
                data = self._load(i)
                if data is None:
                    raise self._hidden(i)
        if data is None:
            raise IndexError("list index out of range")
        return loads(data)

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            encoded = [dumps(v) for v in value]
            with self.lock:
                self._settle()
                old = self._all_raw()
                new = list(old)
                new[i] = encoded  # raises as list does, before any change
                self._rewrite(old, new)
            return
        data = dumps(value)
        heap = self._heap
        with self.lock:
            self._settle()
            self._overwrite(self._index(i, heap.dict_len(held=True)), data)  # one write
            self._clean = heap.modcount_view[0]

    def __delitem__(self, i: Any) -> None:
        with self.lock:
            if isinstance(i, slice):
                self._settle()
                old = self._all_raw()
                new = list(old)
                del new[i]
                self._rewrite(old, new)
                return
            n = self._len()
            start = self._index(i, n)
            self._splice(start, start + 1, [], n)

    def insert(self, index: SupportsIndex, value: Any) -> None:
        data = dumps(value)
        with self.lock:
            n = self._len()
            i = index.__index__()
            i = max(0, i + n) if i < 0 else min(i, n)
            self._splice(i, i, [data], n)

    def append(self, value: Any) -> None:
        data = dumps(value)
        heap = self._heap
        with self.lock:
            self._settle()
            kb, k = encode_key(heap.dict_len(held=True))
            heap.dict_set(kb, k, data, held=True)  # one write: atomic by itself
            self._clean = heap.modcount_view[0]

    def extend(self, values: Iterable[Any]) -> None:
        if values is self:
            values = self.copy()
        encoded = [dumps(v) for v in values]  # pickled first: a bad value changes nothing
        if not encoded:
            return
        with self.lock:
            n = self._len()
            self._commit(n, n + len(encoded), list(enumerate(encoded, n)))

    def pop(self, index: SupportsIndex = -1) -> Any:
        with self.lock:
            n = self._len()
            if n == 0:
                raise IndexError("pop from empty list")
            i = self._index(index, n)
            if i == n - 1:  # one heap operation reads and removes it
                kb, k = encode_key(i)
                data = self._heap.dict_pop(kb, k, held=True)
                self._clean = self._heap.modcount_view[0]
                if data is None:
                    raise CorruptSegmentError(f"{self._label()}: item {i} of {n} is missing")
            else:
                data = self._splice(i, i + 1, [], n)[0]
        return loads(data)

    def remove(self, value: Any) -> None:
        with self.lock:
            self._settle()
            old = self._all_raw()
            i = [loads(d) for d in old].index(value)  # ValueError as list
            self._rewrite(old, old[:i] + old[i + 1:])

    def clear(self) -> None:
        self._heap.dict_clear(held=self.lock.held())  # one operation: the record goes too

    def index(self, value: Any, start: SupportsIndex = 0, stop: SupportsIndex | None = None,
              /) -> int:
        items = self.copy()
        return items.index(value, start, len(items) if stop is None else stop)

    def count(self, value: Any) -> int:
        return self.copy().count(value)

    def reverse(self) -> None:
        with self.lock:
            self._settle()
            old = self._all_raw()
            self._rewrite(old, old[::-1])

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        with self.lock:
            self._settle()
            old = self._all_raw()
            items = [loads(d) for d in old]
            keys = items if key is None else [key(v) for v in items]
            # Sort positions, stably as list.sort, and reuse the stored bytes.
            order = sorted(range(len(old)), key=keys.__getitem__, reverse=reverse)
            self._rewrite(old, [old[j] for j in order])

    def copy(self) -> list[Any]:
        """A plain list with a consistent snapshot of the items."""
        with self.lock:
            self._settle()
            return [loads(d) for d in self._all_raw()]

    def __iter__(self) -> Iterator[Any]:
        i = 0
        while (data := self._load(i)) is not None or (data := self._missing(i)) is not None:
            yield loads(data)
            i += 1

    def __reversed__(self) -> Iterator[Any]:
        return iter(self.copy()[::-1])

    def __contains__(self, value: Any) -> bool:
        return value in self.copy()

    # -- operators, as ListProxy: + and * give plain lists; += and *= change in place ----

    def __add__(self, other: Any) -> list[Any]:
        return self.copy() + other  # type: ignore[no-any-return]

    def __radd__(self, other: Any) -> list[Any]:
        return other + self.copy()  # type: ignore[no-any-return]

    def __iadd__(self, other: Iterable[T]) -> SharedList[T]:  # type: ignore[misc]
        self.extend(other)
        return self

    def __mul__(self, n: SupportsIndex) -> list[Any]:
        return self.copy() * n

    __rmul__ = __mul__

    def __imul__(self, n: SupportsIndex) -> SharedList[T]:
        with self.lock:
            self._settle()
            old = self._all_raw()
            self._rewrite(old, old * n.__index__())
        return self

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SharedList):
            return self.copy() == other.copy()
        if isinstance(other, list):
            return self.copy() == other
        return NotImplemented

    def __lt__(self, other: Any) -> bool:
        mine: list[Any] = self.copy()
        return bool(mine < (other.copy() if isinstance(other, SharedList) else other))

    __hash__ = None  # type: ignore[assignment]

    # -- checking -----------------------------------------------------------------

    def _check_payload(self) -> None:
        """Verify the heap, then the list: a pending redo record is replayed
        (it must be well formed), and the keys must be exactly 0..len-1, in
        insertion order, with nothing else stored.  CorruptSegmentError if not."""
        super()._check_payload()
        with self.lock:
            self._settle()
            seq, i = -1, 0
            while batch := self._heap.dict_scan(seq, values=False, held=True):
                for _, key, _ in batch:
                    if key != encode_key(i)[0]:
                        raise CorruptSegmentError(
                            f"{self._label()}: entry {i} has key {key[:40]!r}, not the "
                            f"index {i}")
                    i += 1
                seq = batch[-1][0]

    def __repr__(self) -> str:
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        items = self.copy()
        body = repr(items) if len(items) <= 50 else repr(items[:50])[:-1] + ", ...]"
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"SharedList({body}{where})"


def _register_store_list() -> None:
    from .remote_list import RemoteList

    SharedList.register(RemoteList)  # SharedList(url=...) is a SharedList


_register_store_list()
