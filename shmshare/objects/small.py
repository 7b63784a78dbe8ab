"""``SharedNamespace``, ``SharedValue`` and ``SharedSet``: the Manager's smaller types.

All three live on the heap dict engine (see :mod:`shmshare.objects.dict`),
pickle by reference, and make every single operation atomic under the
object's robust lock (``obj.lock`` for several at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import Any

from .base import HeapObject
from .codec import decode_key, dumps, encode_key, loads

__all__ = ["SharedNamespace", "SharedSet", "SharedValue"]

_LOCAL = ("_seg", "_heap", "lock", "_rcache", "_rbytes", "_rmark", "_read_cache",
          "_read_cache_bytes", "_trust")


class SharedNamespace(HeapObject):
    """Attributes in shared memory: ``ns.x = 1`` in one process, ``ns.x`` in another.

    As with multiprocessing's NamespaceProxy, names starting with ``_`` are
    local to the handle, not shared.
    """

    KIND = "namespace"

    def __init__(self, name: str | None = None, /, *, create: bool | None = None,
                 project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                 trust: bool = False, **attrs: Any) -> None:
        super().__init__(name, create=create, project_dir=project_dir, persist=persist,
                         mode=mode, trust=trust)
        for k, v in attrs.items():
            setattr(self, k, v)

    def __getattr__(self, key: str) -> Any:  # only called for names not found locally
        if key.startswith("_"):
            raise AttributeError(key)
        data = self._read(key)
        if data is None:
            raise AttributeError(f"'Namespace' object has no attribute {key!r}")
        return loads(data)

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_") or key in _LOCAL:
            object.__setattr__(self, key, value)
            return
        kb, n = encode_key(key)
        self._heap.dict_set(kb, n, dumps(value))

    def __delattr__(self, key: str) -> None:
        if key.startswith("_") or key in _LOCAL:
            object.__delattr__(self, key)
            return
        kb, n = encode_key(key)
        if self._heap.dict_pop(kb, n) is None:
            raise AttributeError(key)

    def _items(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        seq = -1
        while batch := self._heap.dict_scan(seq, values=True):
            out.extend((decode_key(k), loads(v)) for _, k, v in batch if v is not None)
            seq = batch[-1][0]
        return out

    def __repr__(self) -> str:
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        return "Namespace(" + ", ".join(f"{k}={v!r}" for k, v in sorted(self._items())) + ")"


_VALUE_KEY = encode_key("value")


class SharedValue(HeapObject):
    """One value in shared memory, as ``multiprocessing.Manager().Value``.

    Like the Manager's ValueProxy, the typecode is recorded but not enforced:
    ``value`` may be set to any picklable object.
    """

    KIND = "value"

    def __init__(self, typecode: Any = None, value: Any = None, lock: bool = True, /, *,
                 name: str | None = None, create: bool | None = None, project_dir: Any = None,
                 persist: bool = False, mode: int = 0o600, trust: bool = False) -> None:
        super().__init__(name, create=create, project_dir=project_dir, persist=persist,
                         mode=mode, trust=trust)
        kb, n = encode_key("typecode")
        self._heap.dict_set(kb, n, dumps(typecode), only_if_absent=True)
        self._heap.dict_set(_VALUE_KEY[0], _VALUE_KEY[1], dumps(value), only_if_absent=True)

    def get(self) -> Any:
        data = self._read("value")
        return loads(data) if data is not None else None

    def set(self, value: Any) -> None:
        self._heap.dict_set(_VALUE_KEY[0], _VALUE_KEY[1], dumps(value))

    value = property(get, set)

    @property
    def typecode(self) -> Any:
        data = self._read("typecode")
        return loads(data) if data is not None else None

    def __repr__(self) -> str:
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        return f"{type(self).__name__}({self.typecode!r}, {self.get()!r})"


class SharedSet(HeapObject, MutableSet[Any]):
    """A set in shared memory, with the whole ``set`` API (results of operators are plain sets)."""

    KIND = "set"

    def __init__(self, name: Any = None, iterable: Iterable[Any] = (), /, *,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False) -> None:
        if name is not None and not isinstance(name, str):
            name, iterable = None, name  # SharedSet({1, 2}), as with set()
        super().__init__(name, create=create, project_dir=project_dir, persist=persist,
                         mode=mode, trust=trust)
        if iterable:
            self.update(iterable)

    def __contains__(self, item: Any) -> bool:
        return self._read(item) is not None

    def __iter__(self) -> Iterator[Any]:
        seq = -1
        while batch := self._heap.dict_scan(seq, values=False):
            for _, k, _v in batch:
                yield decode_key(k)
            seq = batch[-1][0]

    def __len__(self) -> int:
        return self._heap.dict_len()

    def add(self, item: Any) -> None:
        kb, n = encode_key(item)
        self._heap.dict_set(kb, n, b"", only_if_absent=True)

    def discard(self, item: Any) -> None:
        kb, n = encode_key(item)
        self._heap.dict_pop(kb, n)

    def remove(self, item: Any) -> None:
        kb, n = encode_key(item)
        if self._heap.dict_pop(kb, n) is None:
            raise KeyError(item)

    def pop(self) -> Any:
        item = self._heap.dict_popitem()
        if item is None:
            raise KeyError("pop from an empty set")
        return decode_key(item[0])

    def clear(self) -> None:
        self._heap.dict_clear()

    def copy(self) -> set[Any]:
        """A plain set with a consistent snapshot of the items."""
        with self.lock:
            return set(self)

    def update(self, *others: Iterable[Any]) -> None:
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

    def __ior__(self, other: Any) -> SharedSet:
        self.update(other)
        return self

    def __iand__(self, other: Any) -> SharedSet:
        self.intersection_update(other)
        return self

    def __isub__(self, other: Any) -> SharedSet:
        self.difference_update(other)
        return self

    def __ixor__(self, other: Any) -> SharedSet:
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
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"SharedSet({self.copy()!r}{where})"
