"""``SharedList``: a list in shared memory, used by many processes at once.

Its heap's root is a C record of value references (``_core/src/list.c``):
each item is pickled into a heap block of its own, and the list is a ring
array of references to them with a head offset.  Every method is one C call
under the heap lock (``remove``, ``sort``, slices and ``*=`` also read the
items first, inside the same hold of the lock), so:

- ``append``, ``pop()``, ``pop(0)``, ``insert(0, x)``, ``extend``, ``del
  lst[:k]``/``del lst[k:]`` are O(1) per item (amortised: the array grows by
  half when full and shrinks below a quarter full);
- an insert or delete in the middle, slices with a step, ``sort``,
  ``reverse`` and ``*=`` build a new reference array in C (O(n) reference
  copies, no value is copied or unpickled but by ``sort``/``remove``);
- ``len()`` and ``bool()`` read the record's length word without any lock
  or Python frame (a C base class, ``LengthWord``); ``lst[i]`` is O(1), and
  repeated reads of an unchanged list are answered from this process's copy
  of the bytes.

**Atomicity.**  Every method is atomic, also against a process SIGKILLed in
the middle of it: each change commits with one 8-byte store, and the heap's
recovery frees whatever a killed writer had made but not committed, so the
list is exactly as before the method or as after it (list.c, COMMIT POINTS).

Iterating reads the list in batches of items, each batch in one read,
like ``multiprocessing``'s ListProxy walking indices: items another process
inserts or deletes meanwhile may shift under the iteration; take a snapshot
with ``copy()`` (or ``lst[:]``) when that matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableSequence
from pickle import dumps as _pickle_dumps
from typing import Any, SupportsIndex, TypeVar, overload

from .._core import LengthWord
from .._core.heap import Heap
from .._core.heap_dict import READ_CACHE_MAX_BYTES as _CACHE_MAX_BYTES  # this cache's cap too
from .._core.heap_list import ANY_LENGTH, HeapList
from ..segment import Segment
from .codec import _PICKLE_REFUSED, PLAIN_TYPES, dumps, dumps_split, large_parts, loads
from .heap_object import _CACHE_MAX_VALUE, HeapObject
from .list_operators import ListOperators
from .options import refuse_str_data
from .remote import StoreDispatch
from .shared_object import HandleMethods

__all__ = ["SharedList"]

T = TypeVar("T")

_BATCH = 256  # items per read while iterating
_I64 = 1 << 63
_END = _I64 - 1  # an index past any end: insert clamps it to the length


def _clamp(i: int) -> int:
    """An index C can take (int64) that means the same to list's rules."""
    return max(-_I64, min(i, _I64 - 1))


class SharedList(StoreDispatch, LengthWord, HandleMethods, HeapObject, ListOperators,
                 MutableSequence[T], kind="list"):
    """A list in shared memory, with no server process.

    ``SharedList(iterable=(), /, *, name=None, create=None, project_dir=None,
    persist=False, mode=0o600, trust=False, url=None)``: anonymous unless named (it
    pickles by reference); the items are stored only when this call creates
    the list.  A str first argument is refused (``list("abc")`` would be its
    characters, older shmshare took it as a name): pass ``name=``.
    ``lst[i]`` returns a copy of the item: reassign it to change it.
    ``url=`` (or ``$SHMSHARE_URL``) returns the list on a Redis store instead
    (:class:`~shmshare.objects.remote_list.RemoteList`, an instance of SharedList).
    """

    _core: HeapList

    def __init__(self, iterable: Iterable[T] = (), /, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False, url: str | None = None) -> None:
        refuse_str_data("SharedList", iterable, "list")
        items = [(i, dumps_split(x)) for i, x in enumerate(iterable)]  # item i under key i
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url, initial=items)

    def _init_payload(self, att: Any, offset: int, size: int, *, mode: int, anonymous: bool,
                      initial: Iterable[tuple[Any, bytes]]) -> Heap:
        heap = Heap.create(att, offset, size, mode=mode, anonymous=anonymous)
        try:
            items = [data for _, data in initial]
            core = HeapList(heap)  # the heap's root becomes the list
            if items:
                core.splice(-1, -1, items, ANY_LENGTH)
        except BaseException:
            heap.destroy_extents()  # the segment is removed by the caller; its extents here
            heap.close()
            raise
        return heap

    def _attach(self, seg: Segment, heap: Heap) -> None:
        super()._attach(seg, heap)
        # A damaged list still opens: check() says what is wrong, operations raise.
        self._core = HeapList(heap, damaged_ok=True)
        self._bind_length(heap._hot)  # len() reads the length word in C (ext/hotslots.c)

    # -- reads ----------------------------------------------------------------------

    def _remember(self, i: int, data: bytes, mark: int) -> None:
        # Item bytes read at modcount ``mark``: valid while the counter reads it
        # (every change and every recovery moves it).
        if len(data) <= _CACHE_MAX_VALUE:
            if mark != self._rmark or self._rbytes > _CACHE_MAX_BYTES:
                # A new dict, not clear(): other threads may be reading the old one.
                self._rcache, self._rbytes, self._rmark = {}, 0, mark
            self._rcache[i] = data
            self._rbytes += len(data)

    def _raw(self, start: int = 0, stop: int = -1) -> list[bytes]:
        return self._core.read(start, stop)[0]

    # -- sequence protocol ---------------------------------------------------------

    # len() is LengthWord's: the length word read in C, no lock.  This is its
    # way out when the word does not check or the heap is gone.
    def _length_slow(self) -> int:
        return self._core.len()  # damaged (it is rebuilt), or detached (it raises)

    @overload
    def __getitem__(self, i: SupportsIndex) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: Any) -> Any:
        if type(i) is not int:
            if isinstance(i, slice):
                return self._slice(i)
            i = self._index_of(i)
        if i >= 0 and self._heap.modcount_view[0] == self._rmark:
            cached = self._rcache.get(i)
            if cached is not None:
                return loads(cached)
        data, mark = self._core.get(_clamp(i))
        if data is None:
            raise IndexError("list index out of range")
        if not isinstance(data, bytes):  # a large item (HeapList.get)
            if isinstance(data, memoryview):
                return self._loaded_lent(data)
            return data.load()  # read in one copy
        if i >= 0:
            self._remember(i, data, mark)
        return loads(data)

    def _slice(self, s: slice) -> list[Any]:
        with self.lock:
            start, stop, step = s.indices(len(self))
            if step == 1:
                return [loads(d) for d in self._raw(start, max(start, stop))]
            lo, hi = (start, stop) if step > 0 else (stop + 1, start + 1)
            if hi <= lo:
                return []
            raw = self._raw(lo, hi)
            return [loads(d) for d in raw[start - lo:stop - lo if stop >= lo else None:step]]

    @staticmethod
    def _index_of(i: Any) -> int:
        if not hasattr(i, "__index__"):
            raise TypeError(f"list indices must be integers or slices, not {type(i).__name__}")
        return int(i.__index__())

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            encoded = [dumps_split(v) for v in value]
            with self.lock:
                n = len(self)
                start, stop, step = i.indices(n)
                if step == 1:
                    self._core.splice(start, max(start, stop), encoded, n)
                    return
                plan: list[int] = list(range(n))
                plan[i] = range(-1, -1 - len(encoded), -1)  # raises as list does
                self._core.rebuild(plan, encoded, n)
            return
        if type(value) in PLAIN_TYPES:  # codec.dumps inlined: the hot path
            parts = None
            try:
                data = _pickle_dumps(value, 5)
            except _PICKLE_REFUSED:
                data = dumps(value)  # cloudpickle, or the same error
        else:
            parts = large_parts(value)
            data = dumps(value) if parts is None else b""  # pickled first, as always
        i = i if type(i) is int and -_I64 <= i < _I64 else _clamp(self._index_of(i))
        if parts is None and not self._heap.list_store(i, data, len(data)):
            return  # one C call (list_ops.c); else the general path decides
        if not (self._core.set(i, data) if parts is None else self._core.set_parts(i, *parts)):
            raise IndexError("list assignment index out of range")

    def __delitem__(self, i: Any) -> None:
        if isinstance(i, slice):
            with self.lock:
                n = len(self)
                start, stop, step = i.indices(n)
                if step == 1:
                    self._core.splice(start, max(start, stop), [], n)
                    return
                plan = list(range(n))
                del plan[i]
                if len(plan) != n:
                    self._core.rebuild(plan, [], n)
            return
        data = self._core.pop(_clamp(self._index_of(i)))[0]
        if data is None:
            raise IndexError("list assignment index out of range")
        if type(data) is memoryview:
            self._heap.recycle(data)  # a large item's buffer, lent: given back unread

    def insert(self, index: SupportsIndex, value: Any) -> None:
        i = index if type(index) is int and -_I64 <= index < _I64 else _clamp(
            self._index_of(index))
        if type(value) not in PLAIN_TYPES and self._insert_large(i, value):
            return
        try:
            data = _pickle_dumps(value, 5)
        except _PICKLE_REFUSED:
            data = dumps(value)  # cloudpickle, or the same error
        if self._heap.list_push(i, data, len(data)):
            self._core.insert(i, data)  # the general path: growth, waits, errors

    def append(self, value: Any) -> None:
        # codec.dumps and HeapList.append inlined: the hot path.
        if type(value) not in PLAIN_TYPES and self._insert_large(_END, value):
            return
        try:
            data = _pickle_dumps(value, 5)
        except _PICKLE_REFUSED:
            data = dumps(value)  # cloudpickle, or the same error
        if self._heap.list_push(_END, data, len(data)):
            self._core.append(data)  # the general path: growth, waits, errors

    def _insert_large(self, i: int, value: Any) -> bool:
        """Insert a large bytes, bytearray or array value in one copy of its data
        (codec.large_parts); False: not one, insert it pickled."""
        parts = large_parts(value)
        if parts is None:
            return False
        self._core.insert_parts(i, *parts)
        return True

    def extend(self, values: Iterable[Any]) -> None:
        if values is self:
            values = self.copy()
        encoded = [dumps_split(v) for v in values]  # pickled first: a bad value changes nothing
        if encoded:
            self._core.splice(-1, -1, encoded, ANY_LENGTH)

    def pop(self, index: SupportsIndex = -1) -> Any:
        i = index if type(index) is int and -_I64 <= index < _I64 else _clamp(
            self._index_of(index))
        data, n = self._core.pop(i)
        if data is None:
            raise IndexError("pop from empty list" if n == 0 else "pop index out of range")
        if isinstance(data, bytes):
            return loads(data)
        return self._loaded_lent(data) if isinstance(data, memoryview) else data.load()

    def _loaded_lent(self, data: memoryview) -> Any:
        """A large item, unpickled from the buffer the heap lent it in."""
        try:
            return loads(data)
        finally:
            self._heap.recycle(data)

    def remove(self, value: Any) -> None:
        with self.lock:
            raw = self._raw()
            for j, d in enumerate(raw):
                if loads(d) == value:
                    self._core.splice(j, j + 1, [], len(raw))
                    return
        raise ValueError("list.remove(x): x not in list")

    def clear(self) -> None:
        self._core.clear()

    def index(self, value: Any, start: SupportsIndex = 0, stop: SupportsIndex | None = None,
              /) -> int:
        items = self.copy()
        return items.index(value, start, len(items) if stop is None else stop)

    def count(self, value: Any) -> int:
        return self.copy().count(value)

    def reverse(self) -> None:
        with self.lock:
            n = len(self)
            if n > 1:
                self._core.rebuild(list(range(n - 1, -1, -1)), [], n)

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        with self.lock:
            raw = self._raw()
            items = [loads(d) for d in raw]
            keys = items if key is None else [key(v) for v in items]
            # Sort positions, stably as list.sort, and keep the stored items.
            order = sorted(range(len(raw)), key=keys.__getitem__, reverse=reverse)
            if order != list(range(len(raw))):
                self._core.rebuild(order, [], len(raw))

    def copy(self) -> list[Any]:
        """A plain list with a consistent snapshot of the items."""
        return [loads(d) for d in self._raw()]

    def __iter__(self) -> Iterator[Any]:
        i = 0
        while batch := self._raw(i, i + _BATCH):
            for d in batch:
                yield loads(d)
            i += len(batch)

    def __reversed__(self) -> Iterator[Any]:
        return iter(self.copy()[::-1])

    def __contains__(self, value: Any) -> bool:
        return value in self.copy()

    # -- operators, as ListProxy: + and * give plain lists; += and *= change in place ----

    def __iadd__(self, other: Iterable[T]) -> SharedList[T]:  # type: ignore[misc, override]
        self.extend(other)
        return self

    def __imul__(self, n: SupportsIndex) -> SharedList[T]:  # type: ignore[override]
        k = n.__index__()
        with self.lock:
            m = len(self)
            if k <= 0:
                self.clear()
            elif k > 1 and m:
                self._core.rebuild(list(range(m)) * k, [], m)
        return self

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
