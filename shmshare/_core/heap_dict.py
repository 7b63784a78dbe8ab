"""The hash dict of a heap (``src/dict*.c``): the ``dict_*`` methods of ``Heap``
and the read cache's versioned reads.

Each method is one C call when uncontended; whatever else comes back goes
to the one retry loop (:meth:`HeapBase._until_done`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._hotpath import parse_scan
from ._lib import ffi, lib
from .heap_base import Scratch
from .heap_split import NOT_SPLIT, SplitMethods, SplitValue
from .results import DETACHED, ENOTFOUND, ETOOSMALL, OK
from .slices import SLICE_NS

__all__ = ["BIG_VALUE", "NOT_READ", "NO_VERSIONS", "READ_CACHE_MAX_BYTES", "SCAN_START",
           "DictMethods"]

#: ``dict_scan(SCAN_START)`` starts at the first (or, reverse, the last) entry.
SCAN_START = -1

_SCAN_BUF = 64 * 1024            # minimum buffer for a scan batch
_NVER = int(lib.SHMS_DICT_NVER)
#: What a handle without (or closed to) the dict's version stripes reads: 2**64-1
#: in every stripe, a version no stripe reaches, so no cached value matches it.
NO_VERSIONS = memoryview(bytearray(b"\xff" * 8 * _NVER)).cast("Q")
_NO_STRIPE = (1 << 64) - 1
_unpack = ffi.unpack
#: Values above this many bytes are unpickled from a lent buffer (_read_big).
BIG_VALUE = _BIG = 1 << 20
_ANSWERS = (OK, ENOTFOUND, ETOOSMALL)  # what a get into no buffer may answer
#: A read cache (objects/heap_object.py) is dropped past this many bytes.
READ_CACHE_MAX_BYTES = 64 << 20


class _NotRead:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_READ"


#: What ``Heap.get_hot`` returns when it did not read the value: the general
#: path decides (the key absent, the lock busy, a large value...).
NOT_READ: Any = _NotRead()


class DictMethods(SplitMethods):
    """``dict_*``: the heap's hash dict, keys compared on their first ``cmp_len`` bytes."""

    # Set by Heap.__init__, like HeapBase's.
    __slots__ = ("_fetch", "_peek", "store", "versions_view")
    _fetch: Callable[..., int]
    _hot: Any  # Heap's HotPath (ext/hotpath.c)
    _peek: Callable[[bytes], tuple[bytes, int, int] | int | None]
    store: Callable[[bytes, int, bytes, int], int]
    versions_view: memoryview

    def dict_get(self, key: bytes, cmp_len: int, *, held: bool = False) -> bytes | None:
        """The value stored under ``key`` (its first ``cmp_len`` bytes), or None."""
        return self.dict_read(key, cmp_len, held=held)[0]

    def dict_read(self, key: bytes, cmp_len: int, *,
                  held: bool = False) -> tuple[bytes | None, int]:
        """``(value or None, modcount)``: the counter the read is consistent with.

        The counter is bumped, under the lock, after every committed change
        and every crash recovery, so a caller may keep the value until
        ``modcount_view[0]`` moves.  One C call when uncontended.
        """
        # _ready() inlined: this is SharedList's read path.
        h = self._h
        if h is None:
            raise ValueError(DETACHED)
        try:
            s = self._tls.s
        except AttributeError:
            s = self._tls.s = Scratch()
        rc = lib.shms_dict_get(h, key, len(key), cmp_len, s.buf, s.cap, s.res, held, SLICE_NS)
        if rc not in (OK, ENOTFOUND):
            rc = self._until_done(
                "dict get", lambda held: lib.shms_dict_get(
                    h, key, len(key), cmp_len, s.buf, s.cap, s.res, held, SLICE_NS),
                rc, held, done=(OK, ENOTFOUND), grow=lambda: s.grow(int(s.res[0])),
                key=(key, cmp_len))
        if rc == OK:
            return s.take(s.res[0]), int(s.res[1])
        return None, int(s.res[1])

    def dict_contains(self, key: bytes, cmp_len: int, *, held: bool = False) -> bool:
        """Whether ``key`` is stored, its value not copied: a get into no buffer
        finds the entry and answers "too small" (or, for an empty value, done)."""
        h, s = self._ready()
        res = s.res

        def call(held: bool) -> int:
            return int(lib.shms_dict_get(h, key, len(key), cmp_len, ffi.NULL, 0, res, held,
                                         SLICE_NS))

        rc = call(held)
        if rc not in _ANSWERS:
            rc = self._until_done("dict contains", call, rc, held, done=_ANSWERS,
                                  key=(key, cmp_len))
        return rc != ENOTFOUND

    def dict_read_versioned(self, key: bytes, cmp_len: int
                            ) -> tuple[bytes | memoryview | SplitValue | None, int, int]:
        """``(value or None, stripe, version)``: the value may be kept while
        ``versions_view[stripe] == version`` (stripe -1: it may not).

        Every change of the key bumps its stripe before it commits, so a
        value whose stripe still reads the same version is current (dict.c,
        READ CACHE).
        """
        if cmp_len == len(key):
            # The hot path (a changed key's re-read): one C call, returning the
            # tuple the read cache keeps; an int code takes the paths below.
            got = self._peek(key)
            if type(got) is tuple:
                if got[1] >= 0 and self.versions_view is NO_VERSIONS:
                    self._map_versions()
                return got
            if got is None:
                return None, -1, 0
        try:
            s = self._tls.s
        except AttributeError:
            s = self._tls.s = Scratch()
        rc = self._fetch(key, cmp_len, s.buf, s.cap, s.res) if cmp_len == len(key) else -1
        if rc == OK:
            res = s.res_view
            stripe = res[2]
            data: bytes | memoryview | None = _unpack(s.buf, res[0])
        elif rc == ENOTFOUND:
            return None, -1, 0
        elif rc == ETOOSMALL and s.res_view[0] > _BIG:
            return self._read_big(key, cmp_len, s), -1, 0
        else:  # the general path: a larger buffer, the lock held here, waits, errors
            data, _ = self.dict_read(key, cmp_len, held=self.held_here())
            res = self._tls.s.res_view
            stripe = res[2]
        if data is None or stripe == _NO_STRIPE:
            return data, -1, 0
        if self.versions_view is NO_VERSIONS:
            self._map_versions()
        return data, stripe, res[3]

    def _read_big(self, key: bytes, cmp_len: int, s: Scratch
                  ) -> memoryview | SplitValue | None:
        """A large value: one stored split (a large array's, heap_split.py) read
        with its data copied once, into the new object's memory; any other copied
        once into this thread's big buffer and lent out (HeapBase._read_lent)."""
        split: SplitValue | None = self._read_split(key, cmp_len, s)
        if split is not NOT_SPLIT:
            return split
        got = self._read_lent(lambda buf, cap: self._fetch(key, cmp_len, buf, cap, s.res), s)
        if type(got) is memoryview:
            return got
        if got == ENOTFOUND:
            return None
        # the general path: the lock held here, waits, errors
        data, _ = self.dict_read(key, cmp_len, held=self.held_here())
        return None if data is None else memoryview(data)

    def _map_versions(self) -> None:
        h = self._handle()
        out = ffi.new("const volatile uint64_t **")

        def call(held: bool) -> int:
            return int(lib.shms_dict_versions(h, out, held, SLICE_NS))

        self._until_done("mapping the dict's versions", call, call(False))
        if out[0] != ffi.NULL and self._h is not None:
            self.versions_view = memoryview(ffi.buffer(out[0], 8 * _NVER)).cast("Q")
            # get_hot may now serve and fill the read cache
            self._hot.versions_mapped(int(ffi.cast("uintptr_t", out[0])))

    def dict_set(self, key: bytes, cmp_len: int, value: bytes, *,
                 only_if_absent: bool = False, held: bool = False) -> bool:
        """Store ``value``; True if ``key`` was new.  An existing key keeps its
        stored bytes and position.  ``only_if_absent``: leave an existing
        value alone (setdefault)."""
        h, s = self._ready()
        rc = lib.shms_dict_set(h, key, len(key), cmp_len, value, len(value), only_if_absent,
                               s.res, held, SLICE_NS)
        if rc != OK:
            self._until_done("dict set", lambda held: lib.shms_dict_set(
                h, key, len(key), cmp_len, value, len(value), only_if_absent, s.res, held,
                SLICE_NS), rc, held, key=(key, cmp_len))
        elif self._extents_view[0] != self._extents_seen:
            self._note_growth()
        return bool(s.res[0])

    def dict_store(self, key: bytes, cmp_len: int, value: bytes) -> None:
        """``dict_set`` without its result: ``d[k] = v``.

        One C call (``store``) when it succeeds; any other outcome (lock held
        by this thread, busy, the heap must grow, an error) goes through
        ``dict_set``, which retries, grows or raises (an op that failed
        changed nothing, so running it again is safe) -- at once under the
        lock when this thread holds it (``with v.get_lock(): v.value += 1``).
        """
        if cmp_len != len(key) or self.store(key, cmp_len, value, len(value)):
            self.dict_set(key, cmp_len, value, held=self.held_here())

    def dict_pop(self, key: bytes, cmp_len: int, *, held: bool = False) -> bytes | None:
        """Remove ``key`` and return its value; None if absent."""
        h, s = self._ready()

        def call(held: bool) -> int:
            return int(lib.shms_dict_pop(h, key, len(key), cmp_len, s.buf, s.cap, s.res, held,
                                         SLICE_NS))

        rc = call(held)
        if rc not in (OK, ENOTFOUND):
            rc = self._until_done("dict pop", call, rc, held, done=(OK, ENOTFOUND),
                                  grow=lambda: s.grow(int(s.res[0])), key=(key, cmp_len))
        return s.take(s.res[0]) if rc == OK else None

    def dict_len(self, *, held: bool = False) -> int:
        n: int = self._hot.len()  # one C call: the lock tried once, or run under our hold
        if n >= 0:
            return n
        return self.dict_len_waiting(held=held)

    def dict_len_waiting(self, *, held: bool = False) -> int:
        """``dict_len`` after its one C call found the lock busy: waits for it."""
        h, s = self._ready()

        def call(held: bool) -> int:
            return int(lib.shms_dict_len(h, s.res, held, SLICE_NS))

        rc = call(held)
        if rc != OK:
            self._until_done("dict len", call, rc, held)
        return int(s.res[0])

    def dict_clear(self, *, held: bool = False) -> None:
        h = self._handle()

        def call(held: bool) -> int:
            return int(lib.shms_dict_clear(h, held, SLICE_NS))

        rc = call(held)
        if rc != OK:
            self._until_done("dict clear", call, rc, held)

    def dict_popitem(self, *, held: bool = False) -> tuple[bytes, bytes] | None:
        """Remove and return the last inserted (key, value); None if empty."""
        h, s = self._ready()

        def call(held: bool) -> int:
            return int(lib.shms_dict_popitem(h, s.buf, s.cap, s.res, held, SLICE_NS))

        rc = call(held)
        if rc not in (OK, ENOTFOUND):
            rc = self._until_done("dict popitem", call, rc, held, done=(OK, ENOTFOUND),
                                  grow=lambda: s.grow(int(s.res[2])))
        if rc != OK:
            return None
        klen, vlen = int(s.res[0]), int(s.res[1])
        data = s.take(klen + vlen)
        return data[:klen], data[klen:]

    def dict_scan(self, after_seq: int = SCAN_START, *, reverse: bool = False,
                  values: bool = True, held: bool = False,
                  decode: Callable[[bytes], Any] | None = None
                  ) -> list[tuple[int, Any, bytes | None]]:
        """A batch of live records ``(seq, key, value)`` in insertion order: the
        key's bytes, or ``decode``'s key object for them (codec.decode_key, which
        C spares for str and int keys: ext/hotscan.c).

        Starts strictly after ``after_seq`` (reverse: strictly before it);
        ``SCAN_START`` (-1) starts at the first (reverse: last) entry.  Pass
        the last seq of a batch to get the next; an empty list ends.  A key
        re-set keeps its seq; a deleted and re-added key gets a new one.
        """
        h, s = self._ready()
        if s.cap < _SCAN_BUF:
            s.grow(_SCAN_BUF)

        def call(held: bool) -> int:
            return int(lib.shms_dict_scan(h, after_seq, reverse, values, s.buf, s.cap, s.res,
                                          held, SLICE_NS))

        rc = call(held)
        if rc != OK:
            self._until_done("dict scan", call, rc, held, grow=lambda: s.grow(int(s.res[2])))
        return parse_scan(s.take(s.res[1]), int(s.res[0]), decode)

