"""Typed wrapper over ``src/list.c`` (named heap_list: a submodule ``list`` would
shadow the builtin in the package): a heap whose root is a list of value
references, every method one C call under the heap lock (plus the one retry
loop of :meth:`HeapBase._until_done` when the lock is busy, held by this
thread, or a buffer too small).

The length is also readable without any lock or Python frame: opening a
HeapList tells the heap's HotPath where the list record's length word is
(``list_mapped``, forgotten when the heap is closed), and an object whose
class derives from ``LengthWord`` (``ext/hotslots.c``) and is bound to
that HotPath answers ``len()`` from the word in C, calling its
``_length_slow()`` (:meth:`HeapList.len`) when the word does not check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CorruptSegmentError
from ._lib import ffi, lib
from .heap import Heap
from .heap_base import SCRATCH_KEEP, Scratch, new_uncleared
from .heap_dict import BIG_VALUE, NOT_READ
from .heap_split import SplitValue, Unpickled
from .results import ENOTFOUND, ETOOSMALL, OK
from .slices import SLICE_NS

__all__ = ["ANY_LENGTH", "HeapList"]

#: ``expect`` of :meth:`HeapList.splice` that accepts whatever length the list has.
ANY_LENGTH = (1 << 64) - 1
_END = (1 << 63) - 1  # an index past any end: insert clamps it to the length
_LIST_PEEK = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_list_peek")))
#: A large item read in one copy: ``.load()`` is its value.
BigRead = SplitValue | Unpickled


def _values(datas: Sequence[bytes]) -> tuple[bytes, Any]:
    return b"".join(datas), ffi.new("uint64_t[]", [len(d) for d in datas])


class HeapList:
    """The list operations of ``heap`` (whose root it makes a list if it has none)."""

    __slots__ = ("_heap",)

    def __init__(self, heap: Heap, *, damaged_ok: bool = False) -> None:
        """``damaged_ok``: a heap marked corrupt is bound anyway (its length word
        unmapped), so that ``check()`` can say why; every operation then raises."""
        self._heap = heap
        h = heap._handle()
        p = ffi.new("const volatile uint64_t **")
        try:
            self._run("opening the list", lambda held: lib.shms_list_open(h, p, held, SLICE_NS))
        except CorruptSegmentError:
            if not damaged_ok:
                raise
            return
        heap._hot.list_mapped(int(ffi.cast("uintptr_t", p[0])), _LIST_PEEK)

    def _run(self, what: str, call: Callable[[bool], int], rc: int | None = None, *,
             done: tuple[int, ...] = (OK,), grow: Callable[[], None] | None = None) -> int:
        return self._heap._until_done(what, call, call(False) if rc is None else rc,
                                      done=done, grow=grow)

    def len(self) -> int:
        """The length, read under the lock (the length word checked, repaired if damaged)."""
        h, s = self._heap._ready()
        self._run("reading the list length",
                  lambda held: lib.shms_list_len(h, s.res, held, SLICE_NS))
        return int(s.res_view[0])

    def get(self, i: int) -> tuple[bytes | memoryview | BigRead | None, int]:
        """``(item i's bytes or None past the end, modcount)``; ``i < 0`` from the end.
        A large item comes read in one copy when it is a bytes object or stored
        split (``.load()`` gives the value, see heap_split.py), else in a buffer
        lent by the heap: give that back with ``Heap.recycle`` once unpickled
        (HeapBase._read_lent)."""
        return self._copy_item(lib.shms_list_get, i, "reading a list item", 1)

    def _read_big(self, i: int, s: Scratch, remove: bool) -> BigRead | None:
        """Item i in one copy (``remove``: and taken out, a pop), if it is a bytes
        object (``HotPath.list_read_bytes``) or stored split (as the dict's
        _read_split); else None, and the list unchanged."""
        heap = self._heap
        value = heap._hot.list_read_bytes(i, remove)
        if value is not NOT_READ:
            return Unpickled(value)
        h = heap._handle()
        got = heap._split_read(lambda raw, n: lib.shms_list_fetch_split(
            h, i, remove, s.buf, s.cap, raw, n, s.res, False, SLICE_NS), s)
        return got if type(got) is SplitValue else None

    def pop(self, i: int) -> tuple[bytes | memoryview | BigRead | None, int]:
        """``(item i's bytes, removed; or None if out of range, the length)``; a
        large item as :meth:`get` gives it."""
        return self._copy_item(lib.shms_list_pop, i, "popping a list item", 2)

    def _copy_item(self, op: Callable[..., int], i: int, what: str,
                   at: int) -> tuple[bytes | memoryview | BigRead | None, int]:
        # op(h, i, buf, cap, res, held, ns): item i copied out (too small: nothing
        # done, res[0] the length needed); with res[at] returned beside it.
        # An item above BIG_VALUE is not copied into the scratch buffer, however
        # large that has grown: first it is tried in one copy (_read_big).
        h, s = self._heap._ready()
        rc = op(h, i, s.buf, min(s.cap, BIG_VALUE), s.res, 0, SLICE_NS)
        if rc == ETOOSMALL and s.res_view[0] > BIG_VALUE:
            big = self._read_big(i, s, remove=at == 2)
            if big is not None:
                return big, -1
            rc = op(h, i, s.buf, s.cap, s.res, 0, SLICE_NS)  # nothing done: res[0] again
        if rc == ETOOSMALL and s.res_view[0] > SCRATCH_KEEP:
            got = self._heap._read_lent(lambda buf, cap: op(h, i, buf, cap, s.res, 0,
                                                            SLICE_NS), s)
            if type(got) is memoryview:
                return got, s.res_view[at]
            rc = got  # for the general path below
        if rc != OK:
            rc = self._run(what, lambda held: op(h, i, s.buf, s.cap, s.res, held, SLICE_NS),
                           rc, done=(OK, ENOTFOUND), grow=lambda: s.grow(int(s.res[0])))
            if rc == ENOTFOUND:
                return None, s.res_view[at]
        res = s.res_view
        return s.take(res[0]), res[at]

    def set(self, i: int, data: bytes) -> bool:
        """Store item i; False if ``i`` is out of range."""
        h, s = self._heap._ready()
        n = len(data)
        rc = int(lib.shms_list_set(h, i, data, n, s.res, 0, SLICE_NS))
        if rc not in (OK, ENOTFOUND):  # waits, errors, the lock held here
            rc = self._run("storing a list item", lambda held: lib.shms_list_set(
                h, i, data, n, s.res, held, SLICE_NS), rc, done=(OK, ENOTFOUND))
        self._note_growth()
        return rc == OK

    def insert(self, i: int, data: bytes) -> None:
        """``list.insert(i, x)`` (``i`` clamped to the list as list does)."""
        h = self._heap._handle()
        n = len(data)
        rc = lib.shms_list_insert(h, i, data, n, 0, SLICE_NS)
        if rc != OK:
            self._run("inserting a list item", lambda held: lib.shms_list_insert(
                h, i, data, n, held, SLICE_NS), rc)
        self._note_growth()

    def append(self, data: bytes) -> None:
        self.insert(_END, data)

    def set_parts(self, i: int, head: bytes, data: Any, tail: bytes) -> bool:
        """:meth:`set` of the item ``head + data + tail``, ``data`` any contiguous
        buffer, copied once (a split item: heap_split.py)."""
        h, s = self._heap._ready()
        with ffi.from_buffer(data) as p:
            n = len(p)
            rc = self._run("storing a list item", lambda held: lib.shms_list_set_parts(
                h, i, head, len(head), p, n, tail, len(tail), s.res, held, SLICE_NS),
                done=(OK, ENOTFOUND))
        self._note_growth()
        return rc == OK

    def insert_parts(self, i: int, head: bytes, data: Any, tail: bytes) -> None:
        """:meth:`insert` of the item ``head + data + tail`` (see :meth:`set_parts`)."""
        h = self._heap._handle()
        with ffi.from_buffer(data) as p:
            n = len(p)
            self._run("inserting a list item", lambda held: lib.shms_list_insert_parts(
                h, i, head, len(head), p, n, tail, len(tail), held, SLICE_NS))
        self._note_growth()

    def _note_growth(self) -> None:
        heap = self._heap
        if heap._extents_view[0] != heap._extents_seen:
            heap._note_growth()

    def splice(self, start: int, stop: int, datas: Sequence[bytes], expect: int) -> None:
        """Items ``start..stop-1`` replaced by ``datas`` (``start < 0``: appended);
        the list must have ``expect`` items (:data:`ANY_LENGTH`: any)."""
        h = self._heap._handle()
        vals, lens = _values(datas)
        k = len(datas)
        self._run("changing the list", lambda held: lib.shms_list_splice(
            h, start, stop, vals, lens, k, expect, held, SLICE_NS))

    def rebuild(self, plan: Sequence[int], datas: Sequence[bytes], expect: int) -> None:
        """The list made anew: ``plan[k] >= 0`` is the old item ``plan[k]``, ``-1``,
        ``-2``... ``datas[0]``, ``datas[1]``...; the list must have ``expect`` items."""
        h = self._heap._handle()
        if datas:  # C takes the new values in the order the plan uses them
            used: list[bytes] = []
            renumbered: list[int] = []
            for q in plan:
                if q < 0:
                    used.append(datas[-1 - q])
                    q = -len(used)
                renumbered.append(q)
            plan, datas = renumbered, used
        p = ffi.new("int64_t[]", plan)
        m = len(plan)
        vals, lens = _values(datas)
        k = len(datas)
        self._run("rebuilding the list", lambda held: lib.shms_list_rebuild(
            h, p, m, vals, lens, k, expect, held, SLICE_NS))

    def clear(self) -> None:
        h = self._heap._handle()
        self._run("clearing the list", lambda held: lib.shms_list_clear(h, held, SLICE_NS))

    def read(self, start: int = 0, stop: int = -1) -> tuple[list[bytes], int]:
        """``(the items start..stop-1 (stop < 0: to the end), modcount)``, in one read."""
        heap = self._heap
        h, s = heap._ready()
        box: list[Any] = [s.buf, s.cap]

        def call(held: bool) -> int:
            return int(lib.shms_list_read(h, start, stop, box[0], box[1], s.res, held,
                                          SLICE_NS))

        def grow() -> None:
            need = int(s.res[0])
            if need <= SCRATCH_KEEP:
                s.grow(need)
                box[:] = [s.buf, s.cap]
            else:  # a large copy: a buffer of its own, not kept per thread
                box[:] = [new_uncleared("char[]", need), need]

        self._run("reading the list", call, done=(OK,), grow=grow)
        total, k, mark = int(s.res[0]), int(s.res[1]), int(s.res[2])
        if not k:
            return [], mark
        lens = ffi.unpack(ffi.cast("uint64_t *", box[0]), k)
        raw = ffi.buffer(box[0], total)[8 * k:]
        out: list[bytes] = []
        pos = 0
        for n in lens:
            out.append(raw[pos:pos + n])
            pos += n
        return out, mark

