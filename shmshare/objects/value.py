"""``SharedValue``: one value in shared memory, as ``multiprocessing.Value`` / ``Manager().Value``.

For the typecodes of :mod:`array` and :mod:`multiprocessing.sharedctypes`
(``'c'``, ``'u'``, ``'b'``, ``'B'``, ``'h'``, ``'H'``, ``'i'``, ``'I'``,
``'l'``, ``'L'``, ``'q'``, ``'Q'``, ``'f'``, ``'d'``) the value is checked
and converted as ``multiprocessing.Value`` does: ``Value('i', 1.5)`` is a
TypeError, ``Value('d', 1).value`` is ``1.0``, ``'c'`` holds one byte and
``'u'`` one character; a number out of the typecode's range is an
OverflowError, as :mod:`array` says (``multiprocessing.Value``'s ctypes wraps
it around silently: ``Value('b', 300).value`` is 44).  Any other typecode (a
ctypes type, a label...) is recorded and the value is any picklable object, as
with the Manager's proxy.
"""

from __future__ import annotations

import array
import pickle
from typing import Any

from .._core.heap_dict import NOT_READ
from ..errors import ShmTypeError, ShmValueError
from .codec import dumps, encode_key
from .heap_object import HeapObject
from .shared_object import HandleMethods

__all__ = ["SharedValue"]

_VALUE_KEY = encode_key("value")
_MISSING: Any = object()
_CTYPES_CODES = frozenset("cubBhHiIlLqQfd")
_PLAIN = frozenset({int, float, bytes, str})
_pickle_dumps = pickle.dumps


def _int_range(code: str) -> tuple[int, int]:
    bits = 8 * array.array(code).itemsize
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if code.islower() else (0, (1 << bits) - 1)


# The values an integer typecode holds as they are (array.array would keep them so).
_INT_RANGES = {code: _int_range(code) for code in "bBhHiIlLqQ"}


def _coerce(typecode: Any, value: Any) -> Any:
    """``value`` as multiprocessing.Value(typecode, value) would hold it."""
    if type(value) is int:
        bounds = _INT_RANGES.get(typecode) if type(typecode) is str else None
        if bounds is not None and bounds[0] <= value <= bounds[1]:
            return value
    elif type(value) is float and typecode == "d":
        return value
    if not (isinstance(typecode, str) and typecode in _CTYPES_CODES):
        return value
    if typecode == "c":
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 256:
            return bytes([value])
        if not isinstance(value, (bytes, bytearray)) or len(value) != 1:
            raise ShmTypeError(f"one character bytes, bytearray or integer expected for "
                               f"typecode 'c', not {value!r}")
        return bytes(value)
    if typecode == "u" and not (isinstance(value, str) and len(value) == 1):
        raise ShmTypeError(f"unicode string of length 1 expected for typecode 'u', not "
                           f"{value!r}")
    return array.array(typecode, [value])[0]  # TypeError/OverflowError as array.array


def _default(typecode: Any) -> Any:
    return {"c": b"\x00", "u": "\x00"}.get(typecode, 0) if typecode in _CTYPES_CODES else None


class SharedValue(HandleMethods, HeapObject, kind="value"):
    """``SharedValue(typecode=None, value=<zero>, *, lock=True, name=None, create=None,
    project_dir=None, persist=False, mode=0o600, trust=False, url=None)``.

    The value is stored only when this call creates the object.  Opening an
    existing one with another typecode is a ShmValueError; ``typecode=None``
    opens whatever is there.  ``lock`` is accepted for multiprocessing's sake:
    every read and write is atomic anyway, and ``get_lock()`` (or ``.lock``)
    is the object's lock.  The name is keyword-only (the typecode is a str).
    ``url=`` (or ``$SHMSHARE_URL``) keeps the value on a Redis store.
    """

    _typecode_seen: Any  # the typecode, once read (it never changes)

    _ON_STORES = True

    def __init__(self, typecode: Any = None, value: Any = _MISSING, /, *, lock: bool = True,
                 name: str | None = None, create: bool | None = None, project_dir: Any = None,
                 persist: bool = False, mode: int = 0o600, trust: bool = False,
                 url: str | None = None) -> None:
        if not isinstance(lock, bool):
            raise ShmTypeError(f"lock must be True or False, not {lock!r}")
        initial = _coerce(typecode, _default(typecode) if value is _MISSING else value)
        created = self._open(name=name, create=create, project_dir=project_dir,
                             persist=persist, mode=mode, trust=trust, url=url,
                             initial=[("typecode", dumps(typecode)), ("value", dumps(initial))])
        if not created and typecode is not None and self.typecode != typecode:
            stored = self.typecode
            self._seg.detach()
            raise ShmValueError(f"{name!r} is a SharedValue of typecode {stored!r}, not "
                                f"{typecode!r}; open it with typecode={stored!r} or None")

    def get(self) -> Any:
        value = self._get_hot(self._read_cache, "value", None)  # one C call, mostly
        if value is not NOT_READ:
            return value
        data = self._read("value")
        return self._loaded(data) if data is not None else None

    def set(self, value: Any) -> None:
        try:
            typecode = self._typecode_seen
        except AttributeError:
            typecode = self.typecode
        # _coerce's first case inline: an int the typecode holds as it is.
        bounds = (_INT_RANGES.get(typecode) if type(value) is int and type(typecode) is str
                  else None)
        if bounds is None or not bounds[0] <= value <= bounds[1]:
            value = _coerce(typecode, value)
        # A number, a byte or a character pickles as it is (no cloudpickle to fall
        # back to); then one C call, when the heap's lock is free (the store's).
        data = _pickle_dumps(value, 5) if type(value) in _PLAIN else dumps(value)
        store = self._store_value
        if store is None or store(_VALUE_KEY[0], _VALUE_KEY[1], data, len(data)):
            self._heap.dict_store(_VALUE_KEY[0], _VALUE_KEY[1], data)  # the general path

    def _bind_store(self, seg: Any, heap: Any, lock: Any) -> None:
        super()._bind_store(seg, heap, lock)
        # A heap's one-call store (Heap.store; a store's entries have none).
        self._store_value: Any = getattr(heap, "store", None)

    value = property(get, set)

    @property
    def typecode(self) -> Any:
        # Fixed at creation, so read once per handle (on a store, a read is a round trip).
        try:
            return self._typecode_seen
        except AttributeError:
            pass
        data = self._read("typecode")
        typecode = self._loaded(data) if data is not None else None
        if data is not None:
            self._typecode_seen = typecode
        return typecode

    def get_lock(self) -> Any:
        """The object's lock, as multiprocessing.Value's ``get_lock()``."""
        return self._lock

    def __repr__(self) -> str:
        if (gone := self._detached_repr()) is not None:
            return gone
        return f"{type(self).__name__}({self.typecode!r}, {self.get()!r})"
