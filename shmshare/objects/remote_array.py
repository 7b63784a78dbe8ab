"""``SharedTypedArray(..., url=...)`` (``Manager(url=...).Array``): a typed array on a store.

The array is one Redis STRING under the object's hash tag: a byte naming the
typecode, then the items, little-endian whatever the host, in the sizes of
:mod:`array` (``'u'`` as a uint32).  ``a[i]``, ``a[i] = x`` and contiguous
slices are one GETRANGE or SETRANGE script each, atomic on the server;
a slice with a step is read, changed and written back under the array's
lock.  Items and slices are Python objects, as on shared memory; but there
is **no numpy view** (the items are on the server: ``numpy()`` and
``memoryview()`` raise; ``numpy.array(a[:])`` is a copy).
"""

from __future__ import annotations

import array
import operator
import sys
from collections.abc import Iterator
from typing import Any, cast

from ..errors import ShmTypeError, ShmValueError
from .heap_object import HeapObject
from .options import store_url
from .shared_object import HandleMethods
from .typed_array import _STORED, TextValue, _check_typecode, _encode, _one_char

__all__ = ["RemoteTypedArray"]

_HEAD = 1  # the typecode byte


def _itemsize(tc: str) -> int:
    return 1 if tc == "c" else array.array(_STORED.get(tc, tc)).itemsize


def _swap(tc: str, data: bytes) -> bytes:
    """Native <-> little-endian (the same operation both ways)."""
    if sys.byteorder == "little" or tc == "c":
        return data
    a = array.array(_STORED.get(tc, tc), data)
    a.byteswap()
    return a.tobytes()


def _decode(tc: str, data: bytes) -> Any:
    if tc == "c":
        return data
    values = array.array(_STORED.get(tc, tc), _swap(tc, data)).tolist()
    return "".join(map(chr, values)) if tc == "u" else values


class RemoteTypedArray(TextValue, HandleMethods, HeapObject):
    """A typed array on a Redis store (see the module docstring)."""

    KIND = "typed-array"  # the kind on the server; the registry keeps SharedTypedArray
    _ON_STORES = True
    _typecode: str
    _n: int

    def __init__(self, typecode: str | None = None, size_or_initializer: Any = None, /, *,
                 lock: bool = True, name: str | None = None, create: bool | None = None,
                 project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                 trust: bool = False, url: str | None = None) -> None:
        if not isinstance(lock, bool):
            raise ShmTypeError(f"lock must be True or False, not {lock!r}")
        if project_dir is not None or store_url(url) is None:
            raise ShmValueError("a RemoteTypedArray lives on a store: pass url= (or set "
                                "$SHMSHARE_URL) and no project_dir")
        asked: tuple[str, int] | None = None
        blob = b""
        if typecode is None:
            if size_or_initializer is not None:
                raise ShmTypeError("a SharedTypedArray's size or items need a typecode")
            create = False if name else create
        else:
            tc = _check_typecode(typecode)
            if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer,
                                                                       bool):
                if size_or_initializer < 0:
                    raise ShmValueError(f"array size must be >= 0, not {size_or_initializer}")
                data = bytes(size_or_initializer * _itemsize(tc))
            elif size_or_initializer is None:
                raise ShmTypeError("SharedTypedArray needs a size or the initial items")
            else:
                data = _swap(tc, _encode(tc, size_or_initializer))
            asked = (tc, len(data) // _itemsize(tc))
            blob = tc.encode() + data
        self._blob = blob
        self._open(name=name, create=create, project_dir=None, persist=persist, mode=mode,
                   trust=trust, url=url)
        if asked is not None and asked != (self._typecode, self._n):
            stored = (self._typecode, self._n)
            self._seg.detach()
            raise ShmValueError(f"{name!r} is an array of typecode {stored[0]!r} and length "
                                f"{stored[1]}, not {asked[0]!r} and {asked[1]}; open it with "
                                "typecode=None")

    def _open_remote(self, url: str, *, name: str | None, create: bool | None, persist: bool,
                     trust: bool, initial: Any, anonymous: bool = False) -> bool:
        from ..segment import Segment
        from ..stores.redis.items import RedisBytes
        from .lock import ObjectLock
        from .remote import open_remote

        handle, entries, lock, created = open_remote(
            self, url, name=name, create=create, persist=persist, trust=trust, initial=(),
            anonymous=anonymous, string=getattr(self, "_blob", b""), entries_class=RedisBytes)
        self._bind_store(cast(Segment, handle), cast(Any, entries), cast(ObjectLock, lock))
        self._trust = trust
        b = self._b = cast(RedisBytes, entries)
        self._typecode = _check_typecode(b.bytes_get(0, _HEAD).decode())
        self._size = _itemsize(self._typecode)
        self._n = (b.bytes_len() - _HEAD) // self._size
        return created

    def _label(self) -> str:
        n = self._seg.name
        return f"SharedTypedArray {n!r}" if n is not None else "anonymous SharedTypedArray"

    # -- multiprocessing.Array's API ------------------------------------------------------

    @property
    def typecode(self) -> str:
        return self._typecode

    def __len__(self) -> int:
        return self._n

    def _bytes(self, start: int, stop: int) -> bytes:
        if stop <= start:
            return b""
        return self._b.bytes_get(_HEAD + start * self._size, _HEAD + stop * self._size)

    def __iter__(self) -> Iterator[Any]:
        return iter(self[:] if self._typecode != "c" else
                    [bytes([c]) for c in self._bytes(0, self._n)])

    def __getitem__(self, index: Any) -> Any:
        tc = self._typecode
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if step == 1:
                return _decode(tc, self._bytes(start, stop))
            return _decode(tc, self._bytes(0, self._n))[index]
        i = self._index(index)
        item = _decode(tc, self._bytes(i, i + 1))
        return item if tc in "cu" else item[0]

    def _index(self, index: Any) -> int:
        i = operator.index(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("array index out of range")
        return i

    def __setitem__(self, index: Any, value: Any) -> None:
        tc = self._typecode
        if isinstance(index, slice):
            data = _swap(tc, _encode(tc, value))
            start, stop, step = index.indices(self._n)
            count = len(range(start, stop, step))
            if len(data) != count * self._size:
                raise ValueError("Can only assign sequence of same size")
            if step == 1:
                if data:
                    self._b.bytes_set(_HEAD + start * self._size, data)
                return
            with self.lock:  # several items apart: read, change, write back as one
                whole = bytearray(self._bytes(0, self._n))
                for k, i in enumerate(range(start, stop, step)):
                    whole[i * self._size:(i + 1) * self._size] = \
                        data[k * self._size:(k + 1) * self._size]
                self._b.bytes_set(_HEAD, bytes(whole))
            return
        i = self._index(index)
        if tc == "c":
            data = _encode("c", [value])
        elif tc == "u":
            data = _encode("u", _one_char(value))
        else:
            data = array.array(tc, [value]).tobytes()
        self._b.bytes_set(_HEAD + i * self._size, _swap(tc, data))

    @property
    def raw(self) -> bytes:
        """``'c'`` only: every byte of the array."""
        if self._typecode != "c":
            raise AttributeError(f"a typecode {self._typecode!r} array has no 'raw'")
        return self._bytes(0, self._n)

    @raw.setter
    def raw(self, new: bytes) -> None:
        if self._typecode != "c":
            raise AttributeError(f"a typecode {self._typecode!r} array has no 'raw'")
        if len(new) > len(self):
            raise ValueError("byte string too long")
        self[:len(new)] = new

    def get_lock(self) -> Any:
        """The array's lock (a leased lock on the server): ``with a.get_lock(): a[0] += 1``."""
        return self._lock

    def get_obj(self) -> RemoteTypedArray:
        """The array itself (multiprocessing returns the unsynchronized ctypes array)."""
        return self

    def numpy(self) -> Any:
        raise ShmTypeError(f"{self._label()} is on a store: there is no numpy view of it "
                           "(its items are on the server); numpy.array(a[:]) is a copy, "
                           "or use a SharedTypedArray in shared memory for views")

    memoryview = numpy

    def __repr__(self) -> str:
        if (gone := self._detached_repr()) is not None:
            return gone
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"SharedTypedArray({self._typecode!r}, {self[:]!r}{where})"
