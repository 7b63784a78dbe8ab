"""``SharedList``: a list in shared memory, used by many processes at once.

It is stored on the same heap engine as :class:`~shmshare.SharedDict`, item
``i`` under the integer key ``i``.  Appends add key ``len``; inserts and
deletes shift values by overwriting existing keys and only ever remove the
last key, so the engine's insertion order is always the list order and a
scan returns the items in order.

Every method is atomic (it runs under the list's robust lock).  Indexing is
O(1); ``insert``/``del``/``pop`` at position ``i`` move the ``len - i`` items
after it, as ``list`` does, but each move is a heap write, so prefer appends
and pops at the end for large lists.  Iterating walks indices 0, 1, 2...
until the end, like ``multiprocessing``'s ListProxy: items another process
inserts or deletes meanwhile may shift under the iteration; take a snapshot
with ``copy()`` (or ``lst[:]``) when that matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableSequence
from typing import Any, SupportsIndex, overload

from ._heapobj import HeapObject
from .codec import dumps, encode_key, loads

__all__ = ["SharedList"]


def _unchanged_prefix(s: slice, n: int) -> int:
    """How many leading items an assignment or deletion of slice ``s`` leaves alone."""
    start, stop, step = s.indices(n)
    if step == 1:
        return start  # a plain slice may also grow or shrink the list from here
    touched = range(start, stop, step)  # extended slices keep the length
    return min(touched) if touched else n


class SharedList(HeapObject, MutableSequence[Any]):
    """A list in shared memory, with no server process.

    ``SharedList()`` / ``SharedList(iterable)`` is anonymous and pickles by
    reference; ``SharedList("name")`` is found by name (``create=``,
    ``project_dir=``, ``persist=`` as for ``shmshare.SharedDict``).
    ``lst[i]`` returns a copy of the item: reassign it to change it.
    """

    KIND = "list"

    def __init__(self, name: Any = None, iterable: Iterable[Any] = (), /, *,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False) -> None:
        if name is not None and not isinstance(name, str):
            name, iterable = None, name  # SharedList([1, 2]), as with list()
        super().__init__(name, create=create, project_dir=project_dir, persist=persist,
                         mode=mode, trust=trust)
        if iterable:
            self.extend(iterable)

    # -- primitives (the caller holds the lock where several must be atomic) ----------

    def _get(self, i: int) -> Any:
        data = self._read(i)
        if data is None:
            raise IndexError("list index out of range")
        return loads(data)

    def _put(self, i: int, encoded: bytes) -> None:
        kb, n = encode_key(i)
        self._heap.dict_set(kb, n, encoded)

    def _drop_last(self, n: int) -> None:
        kb, k = encode_key(n - 1)
        self._heap.dict_pop(kb, k)

    def _all(self) -> list[Any]:
        out: list[Any] = []
        seq = -1
        while batch := self._heap.dict_scan(seq, values=True, held=self.lock.held()):
            out.extend(loads(v) for _, _, v in batch if v is not None)
            seq = batch[-1][0]
        return out

    def _rewrite(self, items: list[Any], start: int = 0) -> None:
        """Make the list ``self[:start] + items[start:]`` (lock held)."""
        encoded = [dumps(v) for v in items[start:]]
        n = len(self)
        for i, data in enumerate(encoded, start):
            self._put(i, data)
        for last in range(n, len(items), -1):
            self._drop_last(last)

    def _index(self, i: SupportsIndex, n: int) -> int:
        i = i.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("list index out of range")
        return i

    # -- sequence protocol ---------------------------------------------------------

    def __len__(self) -> int:
        return self._heap.dict_len(held=self.lock.held())

    @overload
    def __getitem__(self, i: SupportsIndex) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.copy()[i]
        if type(i) is int and i >= 0:
            return self._get(i)  # no length needed: a missing key is out of range
        with self.lock:
            return self._get(self._index(i, len(self)))

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            new = list(value)
            with self.lock:
                items = self._all()
                start = _unchanged_prefix(i, len(items))
                items[i] = new
                self._rewrite(items, min(start, len(items)))
            return
        data = dumps(value)
        with self.lock:
            self._put(self._index(i, len(self)), data)

    def __delitem__(self, i: Any) -> None:
        with self.lock:
            items = self._all()
            if isinstance(i, slice):
                start = _unchanged_prefix(i, len(items))
                del items[i]
            else:
                start = self._index(i, len(items))
                del items[start]
            self._rewrite(items, min(start, len(items)))

    def insert(self, index: SupportsIndex, value: Any) -> None:
        data = dumps(value)
        with self.lock:
            n = len(self)
            i = index.__index__()
            i = max(0, i + n) if i < 0 else min(i, n)
            for j in range(n, i, -1):  # shift the tail up by one, last first
                self._put(j, self._raw(j - 1))
            self._put(i, data)

    def _raw(self, i: int) -> bytes:
        data = self._read(i)
        assert data is not None
        return data

    def append(self, value: Any) -> None:
        data = dumps(value)
        with self.lock:
            self._put(len(self), data)

    def extend(self, values: Iterable[Any]) -> None:
        if values is self:
            values = self.copy()
        encoded = [dumps(v) for v in values]  # pickled first: a bad value changes nothing
        with self.lock:
            n = len(self)
            for i, data in enumerate(encoded, n):
                self._put(i, data)

    def pop(self, index: SupportsIndex = -1) -> Any:
        with self.lock:
            n = len(self)
            if n == 0:
                raise IndexError("pop from empty list")
            i = self._index(index, n)
            value = self._get(i)
            for j in range(i, n - 1):
                self._put(j, self._raw(j + 1))
            self._drop_last(n)
            return value

    def remove(self, value: Any) -> None:
        with self.lock:
            del self[self.index(value)]

    def clear(self) -> None:
        self._heap.dict_clear(held=self.lock.held())

    def index(self, value: Any, start: SupportsIndex = 0, stop: SupportsIndex | None = None,
              /) -> int:
        items = self.copy()
        return items.index(value, start, len(items) if stop is None else stop)

    def count(self, value: Any) -> int:
        return self.copy().count(value)

    def reverse(self) -> None:
        with self.lock:
            self._rewrite(self._all()[::-1])

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        with self.lock:
            items = self._all()
            items.sort(key=key, reverse=reverse)
            self._rewrite(items)

    def copy(self) -> list[Any]:
        """A plain list with a consistent snapshot of the items."""
        with self.lock:
            return self._all()

    def __iter__(self) -> Iterator[Any]:
        i = 0
        while True:
            try:
                yield self._get(i)
            except IndexError:
                return
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

    def __iadd__(self, other: Iterable[Any]) -> SharedList:  # type: ignore[misc]
        self.extend(other)
        return self

    def __mul__(self, n: SupportsIndex) -> list[Any]:
        return self.copy() * n

    __rmul__ = __mul__

    def __imul__(self, n: SupportsIndex) -> SharedList:
        with self.lock:
            self._rewrite(self._all() * n.__index__())
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

    def __repr__(self) -> str:
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        items = self.copy()
        body = repr(items) if len(items) <= 50 else repr(items[:50])[:-1] + ", ...]"
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"SharedList({body}{where})"
