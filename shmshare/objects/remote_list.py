"""``SharedList(..., url=...)``: a list on a Redis store, with the SharedList API.

``SharedList(items, url="redis://...")`` (or with ``$SHMSHARE_URL`` set)
returns a :class:`RemoteList`, which ``isinstance(x, SharedList)`` accepts.
Its items are a Redis LIST (:mod:`shmshare.stores.redis.items`); its name,
lifetime, lock and pickling by reference are those of every object on a
store (:mod:`.remote`, :class:`.heap_object.HeapObject`).

Every method is atomic on the server: index reads and writes, ``append``,
``extend``, ``insert``/``pop``/``del`` at ``i`` and ``clear`` are one script
each; methods that compute the new list in Python (slice assignment and
deletion, ``remove``, ``sort``, ``reverse``, ``*=``) hold the list's lock,
read the items and write them back in one script, so no other writer comes
in between and no reader ever sees a half-done change.  Iteration reads
pages of items by position, as SharedList's walks indices: items another
process inserts or deletes meanwhile may shift under it; ``copy()`` (or
``lst[:]``) is a snapshot.  As on shared memory, ``lst[i]`` is a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableSequence
from typing import Any, SupportsIndex, TypeVar, cast

from ..errors import ShmValueError
from .codec import dumps, loads
from .heap_object import HeapObject
from .list_operators import ListOperators
from .options import refuse_str_data, store_url
from .shared_object import HandleMethods

__all__ = ["RemoteList"]

T = TypeVar("T")
_PAGE = 256  # items per round trip when iterating


def _index(i: Any) -> int:
    if not hasattr(i, "__index__"):
        raise TypeError(f"list indices must be integers or slices, not {type(i).__name__}")
    return int(i.__index__())


class RemoteList(HandleMethods, HeapObject, ListOperators, MutableSequence[T]):
    """A list on a Redis store (see the module docstring); made by ``SharedList(url=...)``."""

    KIND = "list"  # the kind on the server; the registry keeps SharedList for "list"
    _ON_STORES = True

    def __init__(self, iterable: Iterable[T] = (), /, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False, url: str | None = None) -> None:
        refuse_str_data("SharedList", iterable, "list")
        if project_dir is not None or store_url(url) is None:
            raise ShmValueError("a RemoteList lives on a store: pass url= (or set "
                                "$SHMSHARE_URL) and no project_dir; SharedList() without "
                                "url= is the shared-memory list")
        items = [(i, dumps(x)) for i, x in enumerate(iterable)]
        self._open(name=name, create=create, project_dir=None, persist=persist, mode=mode,
                   trust=trust, url=url, initial=items)

    def _open_remote(self, url: str, *, name: str | None, create: bool | None, persist: bool,
                     trust: bool, initial: Iterable[tuple[Any, bytes]],
                     anonymous: bool = False) -> bool:
        from ..segment import Segment
        from ..stores.redis.items import RedisItems
        from .lock import ObjectLock
        from .remote import open_remote

        handle, entries, lock, created = open_remote(
            self, url, name=name, create=create, persist=persist, trust=trust, initial=(),
            anonymous=anonymous, items=[v for _, v in initial], entries_class=RedisItems)
        self._bind_store(cast(Segment, handle), cast(Any, entries), cast(ObjectLock, lock))
        self._items = cast(RedisItems, entries)
        self._trust = trust
        return created

    def _label(self) -> str:
        n = self._seg.name
        return f"SharedList {n!r}" if n is not None else "anonymous SharedList"

    # -- reads ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._items.list_len()

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.copy()[i]
        data = self._items.list_get(_index(i))
        if data is None:
            raise IndexError("list index out of range")
        return loads(data)

    def _raw(self) -> list[bytes]:
        return self._items.list_range()

    def copy(self) -> list[Any]:
        """A plain list with a consistent snapshot of the items (one read)."""
        return [loads(d) for d in self._raw()]

    def __iter__(self) -> Iterator[Any]:
        start = 0
        while page := self._items.list_range(start, start + _PAGE - 1):
            for data in page:
                yield loads(data)
            start += len(page)

    def __reversed__(self) -> Iterator[Any]:
        return iter(self.copy()[::-1])

    def __contains__(self, value: Any) -> bool:
        return value in self.copy()

    def index(self, value: Any, start: SupportsIndex = 0, stop: SupportsIndex | None = None,
              /) -> int:
        items = self.copy()
        return items.index(value, start, len(items) if stop is None else stop)

    def count(self, value: Any) -> int:
        return self.copy().count(value)

    # -- writes: one script each ------------------------------------------------------

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            encoded = [dumps(v) for v in value]
            with self.lock:
                new = self._raw()
                new[i] = encoded  # raises as list does, before any change
                self._items.list_replace(new)
            return
        if not self._items.list_set(_index(i), dumps(value)):
            raise IndexError("list assignment index out of range")

    def __delitem__(self, i: Any) -> None:
        if isinstance(i, slice):
            with self.lock:
                new = self._raw()
                del new[i]
                self._items.list_replace(new)
            return
        try:
            self._items.list_pop(_index(i))
        except IndexError:
            raise IndexError("list assignment index out of range") from None

    def insert(self, index: SupportsIndex, value: Any) -> None:
        self._items.list_insert(_index(index), dumps(value))

    def append(self, value: Any) -> None:
        self._items.list_extend([dumps(value)])

    def extend(self, values: Iterable[Any]) -> None:
        if values is self:
            values = self.copy()
        encoded = [dumps(v) for v in values]  # pickled first: a bad value changes nothing
        if encoded:
            self._items.list_extend(encoded)

    def pop(self, index: SupportsIndex = -1) -> Any:
        return loads(self._items.list_pop(_index(index)))

    def clear(self) -> None:
        self._items.list_replace([])

    # -- writes computed in Python: under the lock, written back in one script -----------

    def remove(self, value: Any) -> None:
        with self.lock:
            old = self._raw()
            i = [loads(d) for d in old].index(value)  # ValueError as list
            self._items.list_pop(i)

    def reverse(self) -> None:
        with self.lock:
            self._items.list_replace(self._raw()[::-1])

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        with self.lock:
            old = self._raw()
            items = [loads(d) for d in old]
            keys = items if key is None else [key(v) for v in items]
            # Sort positions, stably as list.sort, and reuse the stored bytes.
            order = sorted(range(len(old)), key=keys.__getitem__, reverse=reverse)
            self._items.list_replace([old[j] for j in order])

    # -- operators, as ListProxy: + and * give plain lists; += and *= change in place ----

    def __iadd__(self, other: Iterable[T]) -> RemoteList[T]:  # type: ignore[misc, override]
        self.extend(other)
        return self

    def __imul__(self, n: SupportsIndex) -> RemoteList[T]:  # type: ignore[override]
        with self.lock:
            self._items.list_replace(self._raw() * n.__index__())
        return self

    def __repr__(self) -> str:
        if (gone := self._detached_repr()) is not None:
            return gone
        items = self.copy()
        body = repr(items) if len(items) <= 50 else repr(items[:50])[:-1] + ", ...]"
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"SharedList({body}{where})"
