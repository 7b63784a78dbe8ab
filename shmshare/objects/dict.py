"""``SharedDict``: a dict whose items live in shared memory, used by many processes at once.

Every operation is atomic: it runs under the dict's robust lock, inside one C
call.  Several operations become one atomic step under ``with d.lock:``.

Iteration (``for k in d``, ``keys()``, ``values()``, ``items()``,
``reversed(d)``) walks the items in insertion order in batches, each read
under the lock, so it never sees a torn value and never fails because other
processes change the dict meanwhile.  It yields every item that is present
for the whole iteration exactly once; an item added during the iteration is
yielded if it lands after the current position (as it is appended, it
usually does); an item deleted before it is reached is not yielded.  Unlike
``dict``, no RuntimeError is raised for a change of size during iteration.
For a consistent snapshot use ``d.copy()``.
"""

from __future__ import annotations

import pickle
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
)
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .._core import DictItems
from .._core.heap_dict import NOT_READ
from .codec import _PICKLE_REFUSED, decode_key, dumps, dumps_split, encode_key, loads
from .dict_views import _ItemsView, _KeysView, _ValuesView
from .heap_object import HeapObject
from .shared_object import HandleMethods

__all__ = ["SharedDict"]

_MISSING: Any = object()
_pickle_dumps = pickle.dumps
_REPR_LIMIT = 50
K = TypeVar("K")
V = TypeVar("V")


class SharedDict(DictItems, HandleMethods, HeapObject, MutableMapping[K, V], kind="dict"):
    """A dict in shared memory, with no server process.

    ``SharedDict(data=(), *, name=None, create=None, project_dir=None,
    persist=False, mode=0o600, trust=False, url=None)``.  ``data`` is a mapping or an
    iterable of pairs, as for ``dict``; it is stored only when this call
    creates the dict (reopening never resets changed values).  Keywords are
    never items: an unknown keyword is a TypeError.

    ``SharedDict()`` is anonymous: pass it to child processes (``Process``
    args, ``Pool``/``ProcessPoolExecutor`` tasks) and it pickles by
    reference.  ``SharedDict(name="jobs")`` -- or ``SharedDict("jobs")``, a
    str is never dict data -- is found by name by any process of the same
    user: ``create=None`` opens or creates, ``True`` must create
    (FileExistsError), ``False`` must exist (FileNotFoundError).

    Keys follow dict's equality (``d[1]``, ``d[1.0]`` and ``d[True]`` are one
    key) for str, bytes, numbers, None and tuples/frozensets of those; see
    ``shmshare.objects.codec`` for other keys.  Values are anything picklable,
    with cloudpickle as a fallback.  ``d[k]`` returns a *copy*: mutate nested
    values with ``mutate()`` or ``apply()``, or reassign them.

    ``url="redis://host:6379/0"`` (or ``$SHMSHARE_URL``) keeps the dict on a
    Redis server instead, for processes on several hosts; the same methods,
    with the differences in docs/concepts/redis-semantics.md.
    """

    _ON_STORES = True

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] | str = (),
                 data_after_name: Mapping[K, V] | Iterable[tuple[K, V]] = (), /, *,
                 name: str | None = None, create: bool | None = None, project_dir: Any = None,
                 persist: bool = False, mode: int = 0o600, trust: bool = False,
                 url: str | None = None) -> None:
        if isinstance(data, str):  # SharedDict("jobs", {...}): the name, then the data
            if name is not None:
                raise TypeError("SharedDict() got the name twice (positionally and name=)")
            name, data = data, data_after_name
        elif data_after_name:
            raise TypeError("SharedDict() takes one data argument (a mapping or pairs); "
                            "a second positional argument follows only a str name")
        # No data (the default, and every open by name): no call to make for it.
        initial = ([] if type(data) is tuple and not data else
                   [(k, dumps(v)) for k, v in _pairs(data)])
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url, initial=initial)

    # -- the hot paths ------------------------------------------------------------

    # d[k] and d[k] = v are DictItems' (ext/dictitems.c): for a non-empty str, an
    # int, a bytes or a tuple key (ext/hotkeys.c), one C call each -- a read
    # through the read cache (Heap.get_hot), or the key encoded, the value
    # pickled and the store tried.  The methods below are where they hand over.
    if TYPE_CHECKING:  # the slots' types, as MutableMapping[K, V] has them
        def __getitem__(self, key: K) -> V: ...
        def __setitem__(self, key: K, value: V) -> None: ...

    def _getitem(self, key: K) -> V:
        data = self._read(key)
        if data is None:
            return self.__missing__(key)
        return self._loaded(data)  # type: ignore[no-any-return]

    def __missing__(self, key: K) -> V:
        raise KeyError(key)

    def _bind_store(self, seg: Any, heap: Any, lock: Any) -> None:
        super()._bind_store(seg, heap, lock)
        hot = getattr(heap, "_hot", None)  # a heap's; a store's entries have none
        if hot is not None:
            self._bind_items(hot, _pickle_dumps, _PICKLE_REFUSED, self._read_cache)

    def _setitem(self, key: K, value: V) -> None:
        kb, n = encode_key(key)
        self._store(kb, n, value)

    def _delitem(self, key: K) -> None:
        if self._taken(key) is None:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self._has(key)

    # len(d) is DictItems' too (ext/dictitems.c): the lock tried once, in C.
    def _length_slow(self) -> int:
        # From len()'s C slot, whose one C call (a heap's) just found the lock busy:
        # not tried again; a store's entries have only dict_len.
        heap = self._heap
        return getattr(heap, "dict_len_waiting", heap.dict_len)(held=self._held())

    def get(self, key: K, default: Any = None) -> Any:
        value = self._get_hot(self._read_cache, key, default)  # d[k]'s C read (hotkeys.c)
        if value is not NOT_READ:
            return value
        data = self._read(key)
        return default if data is None else self._loaded(data)

    # -- iteration ----------------------------------------------------------------

    def _batches(self, *, values: bool, reverse: bool = False
                 ) -> Iterator[list[tuple[int, Any, Any]]]:
        """The records (seq, key, value bytes or None), a batch at a time."""
        seq = -1
        while batch := self._heap.dict_scan(seq, reverse=reverse, values=values,
                                            held=self._held(), decode=decode_key):
            yield batch
            seq = batch[-1][0]

    def __iter__(self) -> Iterator[K]:
        for batch in self._batches(values=False):
            for _, key, _ in batch:
                yield key

    def __reversed__(self) -> Iterator[K]:
        for batch in self._batches(values=False, reverse=True):
            for _, key, _ in batch:
                yield key

    def _iter_items(self) -> Iterator[tuple[K, V]]:
        for batch in self._batches(values=True):
            for _, key, vb in batch:
                yield key, loads(vb)

    def _iter_values(self) -> Iterator[V]:
        for batch in self._batches(values=True):
            for _, _, vb in batch:
                yield loads(vb)

    def keys(self) -> _KeysView[K]:
        return _KeysView(self)

    def items(self) -> _ItemsView[K, V]:
        return _ItemsView(self)

    def values(self) -> _ValuesView[V]:
        return _ValuesView(self)

    # -- compound operations: atomic under the lock ---------------------------------

    def setdefault(self, key: K, default: Any = None) -> Any:
        data = self._read(key)  # present, the common case: the default is not pickled
        if data is not None:
            return self._loaded(data)
        kb, n = encode_key(key)
        encoded = dumps_split(default)  # a large array stored split: read in one copy
        with self._lock:  # set only if still absent: another process may have set it
            if self._heap.dict_set(kb, n, encoded, only_if_absent=True, held=True):
                return default
            data = self._heap.dict_get(kb, n, held=True)
        assert data is not None
        return loads(data)

    def pop(self, key: K, default: Any = _MISSING) -> Any:
        data = self._taken(key)
        if data is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return loads(data)

    def popitem(self) -> tuple[K, V]:
        """Remove and return the last inserted (key, value) pair (LIFO)."""
        item = self._heap.dict_popitem(held=self._held())
        if item is None:
            raise KeyError("popitem(): dictionary is empty")
        return decode_key(item[0]), loads(item[1])

    def clear(self) -> None:
        self._heap.dict_clear(held=self._held())

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Like dict.update; atomic: all values are pickled first, then written under the lock."""
        pairs = _pairs(other)
        pairs.extend(kwargs.items())
        encoded = [(*encode_key(k), self._encoded(v)) for k, v in pairs]
        if not encoded:
            return
        with self._lock:
            for kb, n, vb in encoded:
                self._write(kb, n, vb, held=True)

    def copy(self) -> dict[K, V]:
        """A plain dict with a consistent snapshot of the items."""
        with self._lock:
            return dict(self._iter_items())

    def to_dict(self) -> dict[K, V]:
        return self.copy()

    def _get_or(self, key: Any, default: Any) -> Any:
        """``self[key]``, else ``default``; KeyError when there is no default."""
        value = self._get_hot(self._read_cache, key, _MISSING)  # one C call, held or not
        if value is not NOT_READ:
            if value is _MISSING and default is _MISSING:
                raise KeyError(key)
            return default if value is _MISSING else value
        data = self._read(key)
        if data is not None:
            return self._loaded(data)
        if default is _MISSING:
            raise KeyError(key)
        return default

    @contextmanager
    def mutate(self, key: K, default: Any = _MISSING) -> Iterator[Any]:
        """``with d.mutate(k) as v: v.append(x)`` — read, change in place, write back, atomically.

        The lock is held for the whole block; the value is written back only
        if the block finishes without an exception.  ``default`` is used (and
        stored) when the key is missing; without it a missing key raises
        KeyError.  To replace an immutable value, use ``apply()``.
        """
        with self._lock:
            value = self._get_or(key, default)
            yield value
            self[key] = value

    def apply(self, key: K, func: Callable[[V], V], default: Any = _MISSING) -> V:
        """Atomically set ``d[key] = func(d[key])`` and return the new value.

        ``d.apply("hits", lambda n: n + 1, default=0)`` is a lost-update-free
        counter across processes.
        """
        with self._lock:
            new = func(self._get_or(key, default))
            self[key] = new
            return new

    # -- dict protocol extras -------------------------------------------------------

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None, /,
                 **kwargs: Any) -> SharedDict[Any, Any]:
        """A new (by default anonymous) SharedDict with keys from ``iterable``;
        ``kwargs`` are the handle keywords (``name=``...)."""
        return cls([(k, value) for k in iterable], **kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        if other is self:
            return True
        return self.copy() == (other.copy() if isinstance(other, SharedDict) else dict(other))

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Any) -> dict[Any, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        result = self.copy()
        result.update(other)
        return result

    def __ror__(self, other: Any) -> dict[Any, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        result = dict(other)
        result.update(self.copy())
        return result

    def __ior__(self, other: Any) -> SharedDict[K, V]:
        self.update(other)
        return self

    def __repr__(self) -> str:
        if (gone := self._detached_repr()) is not None:
            return gone
        items = []
        for i, (k, v) in enumerate(self._iter_items()):
            if i == _REPR_LIMIT:
                items.append("...")
                break
            items.append(f"{k!r}: {v!r}")
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"SharedDict({{{', '.join(items)}}}{where})"


def _pairs(other: Any) -> list[tuple[Any, Any]]:
    """The (key, value) pairs of a mapping, a keys()-having object, or an iterable of pairs."""
    if type(other) is tuple and not other:
        return []  # no data (the default): the ABC check below costs more on first use
    if isinstance(other, Mapping):
        return list(other.items())
    if hasattr(other, "keys"):
        return [(k, other[k]) for k in other.keys()]  # noqa: SIM118 - dict.update semantics
    pairs = []
    for i, item in enumerate(other):
        try:
            k, v = item
        except (TypeError, ValueError):
            raise (TypeError if isinstance(item, (int, float)) else ValueError)(
                f"dictionary update sequence element #{i} has the wrong length "
                "or type; expected (key, value) pairs") from None
        pairs.append((k, v))
    return pairs
