"""``SharedTypedArray``: ``multiprocessing.Array(typecode, size_or_initializer)`` in shared memory.

What ``Manager().Array`` returns.  It behaves as multiprocessing's
synchronized arrays do, for every typecode of :mod:`array`: items and slices
are Python objects (ints, floats; ``bytes`` for ``'c'``, ``str`` for
``'u'``), never numpy views; values are checked as ``array.array`` checks
them (``Array('i', [1.7])`` is a TypeError); a ``'c'`` array has ``.value``
(up to the first NUL) and ``.raw``, a ``'u'`` array ``.value``.  It is a
:class:`~shmshare.SharedArray` underneath (same header, same lock), so
``numpy()`` still gives a zero-copy view.
"""

from __future__ import annotations

import array
import operator
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import _core
from ..errors import ShmTypeError, ShmValueError
from ..segment import Segment
from .array import _META, SharedArray
from .remote import StoreDispatch

__all__ = ["SharedTypedArray"]

TYPECODES = "cubBhHiIlLqQfd"
# Stored as: 'c' one byte; 'u' a code point in a uint32 (wchar_t on Linux); the
# rest as the struct format of the same letter (native sizes, as array/ctypes).
_STORED = {"u": "I"}


def _check_typecode(typecode: object) -> str:
    if not isinstance(typecode, str) or len(typecode) != 1 or typecode not in TYPECODES:
        raise ShmValueError(f"bad typecode {typecode!r} (must be one of {', '.join(TYPECODES)})")
    return typecode


def _encode(typecode: str, values: Any) -> bytes:
    """``values`` as the array's bytes, checked as array.array / ctypes check them."""
    if typecode == "c":
        if isinstance(values, (bytes, bytearray, memoryview)):
            return bytes(values)
        out = bytearray()
        for v in values:
            if not isinstance(v, (bytes, bytearray)) or len(v) != 1:
                raise ShmTypeError(f"one character bytes expected for typecode 'c', not {v!r}")
            out += v
        return bytes(out)
    if typecode == "u":
        if not isinstance(values, str):
            values = "".join(_one_char(v) for v in values)
        return array.array("I", map(ord, values)).tobytes()
    return array.array(typecode, values).tobytes()  # TypeError/OverflowError as array.array


def _one_char(v: object) -> str:
    if not isinstance(v, str) or len(v) != 1:
        raise ShmTypeError(f"unicode string of length 1 expected for typecode 'u', not {v!r}")
    return v


class TextValue:
    """``value`` of a ``'c'`` or ``'u'`` array, as ``multiprocessing.Array``'s: the text
    up to the first NUL; assigning pads with one NUL when shorter.  On any array
    that has ``_typecode``, ``raw``, ``len()`` and slices (here and on a store)."""

    _typecode: str

    if TYPE_CHECKING:  # what the classes using it have (declared here, never defined)
        raw: bytes

        def __len__(self) -> int: ...
        def __getitem__(self, i: Any) -> Any: ...
        def __setitem__(self, i: Any, value: Any) -> None: ...

    @property
    def value(self) -> Any:
        """``'c'``: the bytes up to the first NUL; ``'u'``: the str up to the first NUL."""
        if self._typecode == "c":
            return self.raw.split(b"\0", 1)[0]
        if self._typecode == "u":
            return self[:].split("\0", 1)[0]
        raise AttributeError(f"a typecode {self._typecode!r} array has no 'value'")

    @value.setter
    def value(self, new: Any) -> None:
        if self._typecode not in "cu":
            raise AttributeError(f"a typecode {self._typecode!r} array has no 'value'")
        if len(new) > len(self):
            raise ValueError("byte string too long" if self._typecode == "c" else
                             "string too long")
        pad = b"\0" if self._typecode == "c" else "\0"
        self[:len(new) + (len(new) < len(self))] = new + pad * (len(new) < len(self))


class SharedTypedArray(StoreDispatch, TextValue, SharedArray, kind="typed-array"):
    """``SharedTypedArray(typecode, size_or_initializer, *, lock=True, name=None, ...)``.

    ``size_or_initializer``: a length (zero-filled) or the initial items; they
    are stored only when this call creates the array.  Opening an existing
    one with another typecode or length is a ShmValueError; ``typecode=None``
    and no size open whatever is there.  ``lock`` is accepted for
    multiprocessing's sake; ``get_lock()`` is the array's lock either way.

    ``url=`` (or ``$SHMSHARE_URL``) returns the array on a Redis store instead
    (:class:`~shmshare.objects.remote_array.RemoteTypedArray`): the same items and
    slices, as copies, but no numpy view.
    """

    _typecode: str
    _asked: str | None  # the typecode this call asked for

    def __init__(self, typecode: str | None = None, size_or_initializer: Any = None, /, *,
                 lock: bool = True, name: str | None = None, create: bool | None = None,
                 project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                 trust: bool = False, url: str | None = None) -> None:
        if url is not None:  # StoreDispatch took every other url=: project_dir was given
            raise ShmTypeError("SharedTypedArray: pass url= (on a store) or project_dir= "
                               "(shared memory), not both")
        if not isinstance(lock, bool):
            raise ShmTypeError(f"lock must be True or False, not {lock!r}")
        if typecode is None:
            if size_or_initializer is not None:
                raise ShmTypeError("a SharedTypedArray's size or items need a typecode")
            self._initial = b""
            self._asked = None
            super().__init__(None, None, name=name, create=False if name else create,
                             project_dir=project_dir, persist=persist, mode=mode, trust=trust)
            return
        tc = self._typecode = _check_typecode(typecode)
        stored = _STORED.get(tc, tc)
        if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer, bool):
            if size_or_initializer < 0:
                raise ShmValueError(f"array size must be >= 0, not {size_or_initializer}")
            self._initial = bytes(size_or_initializer * array.array(stored).itemsize
                                  if tc != "c" else size_or_initializer)
        elif size_or_initializer is None:
            raise ShmTypeError("SharedTypedArray needs a size or the initial items")
        else:
            self._initial = _encode(tc, size_or_initializer)
        itemsize = 1 if tc == "c" else array.array(stored).itemsize
        n = len(self._initial) // itemsize
        self._asked = tc
        super().__init__((n,), stored, name=name, create=create,
                         project_dir=project_dir, persist=persist, mode=mode, trust=trust)

    def _verify_opened(self, name: str | None, shape: tuple[int, ...] | None,
                       descr: Any) -> None:
        if self._asked is not None and self._typecode != self._asked:
            raise ShmValueError(f"{name!r} is an array of typecode {self._typecode!r}, not "
                                f"{self._asked!r}; open it with typecode={self._typecode!r} "
                                "or None")
        super()._verify_opened(name, shape, descr)

    # -- layout ---------------------------------------------------------------------

    def _meta_extra(self) -> dict[str, Any]:
        return {"typecode": self._typecode}

    def _init_payload(self, att: _core.Attachment, offset: int, size: int, *, mode: int,
                      anonymous: bool, initial: Any) -> None:
        super()._init_payload(att, offset, size, mode=mode, anonymous=anonymous,
                              initial=initial)
        view = att.memoryview()
        try:
            start = offset + _META
            view[start:start + len(self._initial)] = self._initial
        finally:
            view.release()

    def _bind_payload(self, seg: Segment, made: Any) -> None:
        super()._bind_payload(seg, made)
        self._typecode = _check_typecode(self._meta.get("typecode"))

    def _make_view(self) -> memoryview:
        tc = self._typecode
        raw = self._raw().cast("B")
        return raw.cast("c" if tc == "c" else _STORED.get(tc, tc))  # type: ignore[call-overload, no-any-return]

    def _items(self) -> memoryview:
        view = self._cache
        return self._view() if view is None else view  # type: ignore[no-any-return]

    # -- multiprocessing.Array's API ------------------------------------------------------

    @property
    def typecode(self) -> str:
        return self._typecode

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def _fast_views(self, view: Any) -> None:
        # a[i] and a[i] = v go to the view in C (ViewItems) but for 'u' (an int to
        # turn into a str and back).  The view takes a subset of what array.array
        # takes, and stores it as array.array would; whatever it refuses comes to
        # _setitem (_set_retry), which converts it or raises array.array's error.
        if self._typecode != "u":
            self._fast_get = self._fast_set = view
            self._set_retry = True

    def _getitem(self, index: Any) -> Any:
        items = self._items()
        tc = self._typecode
        if isinstance(index, slice):
            part = items[index]
            if tc == "c":
                return part.tobytes()
            if tc == "u":
                return "".join(map(chr, part.tolist()))
            return part.tolist()
        v = items[operator.index(index)]
        return chr(v) if tc == "u" else v

    def _setitem(self, index: Any, value: Any) -> None:
        items = self._items()
        tc = self._typecode
        if isinstance(index, slice):
            data = _encode(tc, value)
            target = items[index]
            if len(data) != target.nbytes:
                raise ValueError("Can only assign sequence of same size")
            if target.contiguous:
                target.cast("B")[:] = data
            else:  # a step: item by item, as memoryview assigns strided slices
                items[index] = memoryview(data).cast(items.format)  # type: ignore[call-overload]
            return
        i = operator.index(index)
        if tc == "c":
            items[i] = _encode("c", [value])  # type: ignore[call-overload]
        elif tc == "u":
            items[i] = ord(_one_char(value))
        else:
            items[i] = array.array(tc, [value])[0]

    @property
    def raw(self) -> bytes:
        """``'c'`` only: every byte of the array."""
        if self._typecode != "c":
            raise AttributeError(f"a typecode {self._typecode!r} array has no 'raw'")
        return self._items().tobytes()

    @raw.setter
    def raw(self, new: bytes) -> None:
        if self._typecode != "c":
            raise AttributeError(f"a typecode {self._typecode!r} array has no 'raw'")
        if len(new) > len(self):
            raise ValueError("byte string too long")
        self[:len(new)] = new

    def get_obj(self) -> SharedTypedArray:
        """The array itself (multiprocessing returns the unsynchronized ctypes array)."""
        return self

    def __repr__(self) -> str:
        if (gone := self._detached_repr()) is not None:
            return gone
        where = f", name={self.name!r}" if self.name is not None else ""
        return f"SharedTypedArray({self._typecode!r}, {self[:]!r}{where})"
