"""Typed wrappers over ``src/queue.c``: a queue's items and counters, one C call
per ``put`` or ``get`` (plus one per wait slice while it waits).

The tries that need no wait (``QueueRecord.put_try``, ``take_try``) are
QueuePath's (``ext/hotqueue.c``): one C call that keeps the GIL, and a
get that copies the item once, from the heap into the bytes it returns."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import CorruptSegmentError
from ._hotpath import QueuePath, uninit_bytearray
from ._lib import ffi, lib
from .heap_split import SplitValue
from .results import ETOOSMALL
from .slices import SLICE_NS
from .sync import SyncRecord

if TYPE_CHECKING:
    from .heap import Heap

__all__ = ["QUEUE", "QueueRecord"]

QUEUE = 7
_DAMAGED_SIZE = (1 << 64) - 1  # shms_queue_state's qsize for damaged counters
_PUT_TRY = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_queue_put_try")))
_PUT_BYTES_TRY = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_queue_put_bytes_try")))
_TAKE = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_queue_take")))


class QueueRecord(SyncRecord):
    """The record of a SharedQueue; its items live in the same heap's dict."""

    __slots__ = ("_fast", "put_bytes_try", "put_try", "take_try")

    def __init__(self, heap: Heap, key: bytes, cmp_len: int, kind: int, value: int = 0,
                 *, held: bool = False) -> None:
        super().__init__(heap, key, cmp_len, kind, value, held=held)
        fast = self._fast = QueuePath(heap._hot, self.address(), _PUT_TRY, _PUT_BYTES_TRY,
                                      _TAKE)
        #: ``put_try(data) -> 0`` queued; any other code: nothing changed (full,
        #: the heap lock taken, the heap must grow, closed...), :meth:`put` does it all.
        self.put_try: Callable[[bytes], int] = fast.put
        #: ``put_bytes_try(b) -> 0``: put_try of a bytes object b, queued as its
        #: pickle written straight from b (one copy: STORE OF BYTES, src/dict_hot.c).
        self.put_bytes_try: Callable[[bytes], int] = fast.put_bytes
        #: ``take_try() -> bytes`` (the oldest item's pickle) ``| (item,)`` (a bytes
        #: item, unpickled) ``| (rest, data)`` (a split item: pickle.loads(rest,
        #: buffers=[data])) ``| int`` (nothing taken: empty, the lock taken, closed...).
        self.take_try: Callable[[], bytes | tuple[Any, ...] | int] = fast.take

    def close(self) -> None:
        self._fast.close()  # first: its calls must not reach the record any more
        super().close()

    def put(self, data: bytes, held: bool, timeout: float | None) -> bool:
        """True once queued; False if still full after ``timeout`` (0: try once)."""
        return self._put(lambda h, held, ns: lib.shms_queue_put(
            h, self._r, data, len(data), held, ns), held, timeout)

    def put_parts(self, head: bytes, data: Any, tail: bytes, held: bool,
                  timeout: float | None) -> bool:
        """:meth:`put` of the item ``head + data + tail`` (a split item, see
        heap_split.py), ``data`` any contiguous buffer, copied once."""
        with ffi.from_buffer(data) as p:
            n = len(p)
            return self._put(lambda h, held, ns: lib.shms_queue_put_parts(
                h, self._r, head, len(head), p, n, tail, len(tail), held, ns), held, timeout)

    def _put(self, put: Callable[[Any, bool, int], int], held: bool,
             timeout: float | None) -> bool:
        h = self._heap._handle()

        def call(ns: int) -> int:
            nonlocal held
            while True:
                rc = int(put(h, held, ns))
                if rc != errno.EDEADLK or held:
                    return rc
                held = True  # this thread holds the heap lock (with q.lock:)

        rc = self._wait(call, timeout)
        if rc is None:
            return False
        if rc:
            raise self._error(rc, "putting into the queue")
        heap = self._heap
        if heap._extents_view[0] != heap._extents_seen:
            heap._note_growth()
        return True

    def get(self, held: bool, timeout: float | None) -> bytes | SplitValue | None:
        """The oldest item's bytes (a split item's: a SplitValue); None if still
        empty after ``timeout`` (0: try once)."""
        h = self._heap._handle()
        s = self._heap._scratch()
        raw: bytearray | None = None  # a split item's data goes here

        def call(ns: int) -> int:
            nonlocal held, raw
            while True:
                with ffi.from_buffer(raw, require_writable=True) if raw is not None else (
                        contextlib.nullcontext(ffi.NULL)) as p:
                    rc = int(lib.shms_queue_get(h, self._r, s.buf, s.cap, p,
                                                0 if raw is None else len(raw), s.res, held, ns))
                if rc == ETOOSMALL:
                    n = int(s.res[1])  # a split item: its data, and the rest
                    if n and (raw is None or len(raw) < n):
                        raw = uninit_bytearray(n)
                    need = int(s.res[0]) - n - 8 if n else int(s.res[0])
                    if need > s.cap:
                        s.grow(need)
                elif rc == errno.EDEADLK and not held:
                    held = True  # this thread holds the heap lock (with q.lock:)
                else:
                    return rc

        rc = self._wait(call, timeout)
        if rc is None:
            return None
        if rc:
            raise self._error(rc, "getting from the queue")
        if s.res[1]:
            assert raw is not None
            del raw[s.res[1]:]
            return SplitValue(s.take(s.res[3]), raw)
        return s.take(s.res[0])

    def task_done(self) -> bool:
        """False if called more times than items were put."""
        rc = lib.shms_queue_task_done(self._r)
        if rc == errno.EINVAL:
            return False
        if rc:
            self._live()
        return True

    def join(self) -> None:
        self._waiting(1)
        try:
            while lib.shms_queue_join(self._live(), SLICE_NS):
                pass
        finally:
            self._waiting(-1)

    def state(self) -> tuple[int, int, int]:
        """(qsize, maxsize, unfinished), read without any lock; CorruptSegmentError
        if the counters are damaged (head past tail, or more items than maxsize)."""
        out = ffi.new("uint64_t[3]")  # per call: threads share the record object
        lib.shms_queue_state(self._live(), out)
        if out[0] == _DAMAGED_SIZE:
            raise CorruptSegmentError("the queue's counters are damaged (head past tail, "
                                      "or more items than maxsize); remove the queue")
        return int(out[0]), int(out[1]), int(out[2])
