"""``SharedSet``: a set in shared memory, on the heap dict engine (items are keys).

Every single operation is atomic under the set's robust lock (``s.lock``
for several at once); operators return plain sets, as the Manager's proxy does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import Any, TypeVar

from .codec import decode_key, encode_key
from .heap_object import HeapObject
from .options import refuse_str_data
from .shared_object import HandleMethods

__all__ = ["SharedSet"]

T = TypeVar("T")


class SharedSet(HandleMethods, HeapObject, MutableSet[T], kind="set"):
    """A set in shared memory, with the whole ``set`` API (results of operators are plain sets).

    ``SharedSet(iterable=(), *, name=None, create=None, project_dir=None,
    persist=False, mode=0o600, trust=False, url=None)``: the items are added only
    when this call creates the set.  A str first argument is refused (it would be
    a set of characters, as ``set("abc")``, or a name): pass ``name=``.

    ``url="redis://host:6379/0"`` (or ``$SHMSHARE_URL``) keeps the set on a Redis
    server: the same entries as a dict's there (items are keys, with the same
    equality: ``1``, ``1.0`` and ``True`` are one item), the same methods.
    """

    _ON_STORES = True  # written against the store interface: items are its keys

    def __init__(self, iterable: Iterable[T] = (), /, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False, url: str | None = None) -> None:
        refuse_str_data("SharedSet", iterable, "set")
        items = [(x, b"") for x in iterable]
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url, initial=items)

    def __contains__(self, item: object) -> bool:
        return self._has(item)

    def __iter__(self) -> Iterator[T]:
        seq = -1
        while batch := self._heap.dict_scan(seq, values=False, decode=decode_key):
            for _, item, _v in batch:
                yield item
            seq = batch[-1][0]

    def __len__(self) -> int:
        return self._heap.dict_len()

    def add(self, item: T) -> None:
        # One C call when it can: the item encoded in C and the store tried once
        # (a present item's empty value written again is the same set).
        add = self._add_hot
        if add is None or add(item, b""):
            kb, n = encode_key(item)  # any other item, the lock busy...: the general path
            self._heap.dict_set(kb, n, b"", only_if_absent=True)

    def _bind_store(self, seg: Any, heap: Any, lock: Any) -> None:
        super()._bind_store(seg, heap, lock)
        hot = getattr(heap, "_hot", None)  # a heap's; a store's entries have none
        self._add_hot: Any = hot.store_key if hot is not None else None

    def discard(self, item: T) -> None:
        self._taken(item)  # one C call when it can (HotPath.pop), under our hold too

    def remove(self, item: T) -> None:
        if self._taken(item) is None:
            raise KeyError(item)

    def pop(self) -> T:
        item = self._heap.dict_popitem()
        if item is None:
            raise KeyError("pop from an empty set")
        popped: T = decode_key(item[0])
        return popped

    def clear(self) -> None:
        self._heap.dict_clear()

    def copy(self) -> set[T]:
        """A plain set with a consistent snapshot of the items."""
        with self.lock:
            return set(self)

    def update(self, *others: Iterable[T]) -> None:
        encoded = [encode_key(x) for other in others for x in other]
        with self.lock:
            for kb, n in encoded:
                self._heap.dict_set(kb, n, b"", only_if_absent=True)

    def difference_update(self, *others: Iterable[Any]) -> None:
        with self.lock:
            for other in others:
                for x in list(other):
                    self.discard(x)

    def intersection_update(self, *others: Iterable[Any]) -> None:
        with self.lock:
            keep = self.copy().intersection(*others)
            for x in self.copy() - keep:
                self.discard(x)

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        with self.lock:
            for x in set(other):
                if x in self:
                    self.discard(x)
                else:
                    self.add(x)

    def union(self, *others: Iterable[Any]) -> set[Any]:
        return self.copy().union(*others)

    def intersection(self, *others: Iterable[Any]) -> set[Any]:
        return self.copy().intersection(*others)

    def difference(self, *others: Iterable[Any]) -> set[Any]:
        return self.copy().difference(*others)

    def symmetric_difference(self, other: Iterable[Any]) -> set[Any]:
        return self.copy().symmetric_difference(other)

    def issubset(self, other: Iterable[Any]) -> bool:
        return self.copy().issubset(other)

    def issuperset(self, other: Iterable[Any]) -> bool:
        return self.copy().issuperset(other)

    def __ior__(self, other: Any) -> SharedSet[T]:
        self.update(other)
        return self

    def __iand__(self, other: Any) -> SharedSet[T]:
        self.intersection_update(other)
        return self

    def __isub__(self, other: Any) -> SharedSet[T]:
        self.difference_update(other)
        return self

    def __ixor__(self, other: Any) -> SharedSet[T]:
        self.symmetric_difference_update(other)
        return self

    # Operators give plain sets, as the Manager's set proxy does.
    def __or__(self, other: Any) -> set[Any]:
        return self.copy() | set(other)

    __ror__ = __or__

    def __and__(self, other: Any) -> set[Any]:
        return self.copy() & set(other)

    __rand__ = __and__

    def __sub__(self, other: Any) -> set[Any]:
        return self.copy() - set(other)

    def __rsub__(self, other: Any) -> set[Any]:
        return set(other) - self.copy()

    def __xor__(self, other: Any) -> set[Any]:
        return self.copy() ^ set(other)

    __rxor__ = __xor__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (set, frozenset, SharedSet)):
            return self.copy() == (other.copy() if isinstance(other, SharedSet) else other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if (gone := self._detached_repr()) is not None:
            return gone
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"SharedSet({self.copy()!r}{where})"
