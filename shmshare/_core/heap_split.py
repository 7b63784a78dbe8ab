"""Large buffer values in one copy each way (``src/dict_split.c``).

``dict_store_parts`` stores a value given as the three parts of its ordinary
pickle -- head, data, tail (``objects.codec.split_pickle``) -- copying the
data once, from where it lies.  ``_read_split`` reads such a value with its
data copied once, straight into the bytearray that becomes the new object's
memory: :meth:`SplitValue.load` unpickles it without another copy.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from ._hotpath import uninit_bytearray
from ._lib import ffi, lib
from .heap_base import HeapBase, Scratch
from .results import ENOTFOUND, ETOOSMALL, OK
from .slices import SLICE_NS

__all__ = ["NOT_SPLIT", "SplitMethods", "SplitValue", "Unpickled"]

#: What ``_read_split`` returns for a value it does not read: not stored split,
#: or an outcome (the lock busy or held here, damage) for the whole read to handle.
NOT_SPLIT: Any = object()


class SplitValue:
    """A large value as ``_read_split`` read it: ``load()`` unpickles it."""

    __slots__ = ("data", "rest")

    def __init__(self, rest: bytes, data: bytearray) -> None:
        self.rest = rest  # the pickle, NEXT_BUFFER where the data was
        self.data = data

    def load(self) -> Any:
        # NEXT_BUFFER pushes the bytearray itself, as BYTEARRAY8 would push a copy.
        return pickle.loads(self.rest, buffers=(self.data,))


class Unpickled:
    """A large value a read already unpickled (a list's bytes item, copied once
    by ``HotPath.list_read_bytes``): ``load()`` returns it, as SplitValue's does."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def load(self) -> Any:
        return self.value


class SplitMethods(HeapBase):
    """The split store and read of the heap's dict (see the module docstring)."""

    __slots__ = ()

    def dict_store_parts(self, key: bytes, cmp_len: int, head: bytes, data: Any,
                         tail: bytes, *, held: bool = False) -> None:
        """``dict_set`` of the value ``head + data + tail``, ``data`` any contiguous
        buffer, copied once."""
        h, s = self._ready()
        with ffi.from_buffer(data) as p:
            n = len(p)

            def call(held: bool) -> int:
                return int(lib.shms_dict_set_parts(h, key, len(key), cmp_len, head, len(head),
                                                   p, n, tail, len(tail), s.res, held,
                                                   SLICE_NS))

            rc = call(held)
            if rc != OK:
                self._until_done("dict set", call, rc, held, key=(key, cmp_len))
            elif self._extents_view[0] != self._extents_seen:
                self._note_growth()

    def _read_split(self, key: bytes, cmp_len: int, s: Scratch) -> Any:
        """``key``'s value if it is stored split (None: absent), else NOT_SPLIT.
        ``s.res[0]`` holds the stored length (a read found it too large)."""
        h = self._handle()
        return self._split_read(lambda raw, n: lib.shms_dict_fetch_split(
            h, key, len(key), cmp_len, s.buf, s.cap, raw, n, s.res, False, SLICE_NS), s)

    def _split_read(self, fetch: Callable[[Any, int], int], s: Scratch) -> Any:
        """A split read (``_read_split``'s, or a list item's: heap_list.py):
        ``fetch(raw, n)`` the C call that copies the data into the n bytes at
        raw and the rest into ``s.buf``, as shms_dict_fetch_split does."""
        data = uninit_bytearray(int(s.res_view[0]))
        while True:
            with ffi.from_buffer(data, require_writable=True) as raw:
                rc = fetch(raw, len(data))
            res = s.res_view
            if rc == OK:
                del data[res[1]:]  # no more than the few bytes of the rest
                return SplitValue(s.take(res[3]), data)
            if rc == ENOTFOUND:
                return None
            if rc != ETOOSMALL:
                return NOT_SPLIT  # ENOSPLIT, or for the whole read to handle
            if res[1] > len(data):  # it changed since: larger buffers, and again
                data = uninit_bytearray(int(res[1]))
            if res[0] - res[1] > s.cap:
                s.grow(int(res[0] - res[1]))

