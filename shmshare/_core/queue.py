"""Typed wrappers over ``src/queue.c``: a queue's items and counters, one C call
per ``put`` or ``get`` (plus one per wait slice while it waits)."""

from __future__ import annotations

import errno
import time

from ..errors import CorruptSegmentError
from ._lib import ffi, lib
from .heap import _BUSY, _ETOOSMALL, _SLICE_NS
from .sync import SyncRecord, _deadline, _ns

__all__ = ["QUEUE", "QueueRecord"]

QUEUE = 7
_DAMAGED_SIZE = (1 << 64) - 1  # shms_queue_state's qsize for damaged counters


class QueueRecord(SyncRecord):
    """The record of a SharedQueue; its items live in the same heap's dict."""

    __slots__ = ()

    def put(self, data: bytes, held: bool, timeout: float | None) -> bool:
        """True once queued; False if still full after ``timeout`` (0: try once)."""
        h = self._heap._handle()
        deadline = _deadline(timeout) if timeout else None  # no clock read when untimed
        ns = _SLICE_NS if timeout is None else _ns(deadline) if timeout else 0
        self._inflight += 1
        try:
            while True:
                rc = lib.shms_queue_put(h, self._r, data, len(data), held, ns)
                if rc == 0:
                    return True
                if rc == errno.EDEADLK:
                    held = True  # this thread holds the heap lock (with q.lock:)
                elif rc not in _BUSY:
                    self._fail(rc, "putting into the queue")
                elif timeout is not None and (not timeout or time.monotonic() >= deadline):  # type: ignore[operator]
                    return False
                ns = _ns(deadline)
        finally:
            self._inflight -= 1

    def get(self, held: bool, timeout: float | None) -> bytes | None:
        """The oldest item's bytes; None if still empty after ``timeout`` (0: try once)."""
        h = self._heap._handle()
        s = self._heap._scratch()
        deadline = _deadline(timeout) if timeout else None
        ns = _SLICE_NS if timeout is None else _ns(deadline) if timeout else 0
        self._inflight += 1
        try:
            while True:
                rc = lib.shms_queue_get(h, self._r, s.buf, s.cap, s.res, held, ns)
                if rc == 0:
                    return ffi.unpack(s.buf, s.res[0])  # type: ignore[no-any-return]
                if rc == _ETOOSMALL:
                    s.grow(int(s.res[0]))
                    continue
                if rc == errno.EDEADLK:
                    held = True
                elif rc not in _BUSY:
                    self._fail(rc, "getting from the queue")
                elif timeout is not None and (not timeout or time.monotonic() >= deadline):  # type: ignore[operator]
                    return None
                ns = _ns(deadline)
        finally:
            self._inflight -= 1

    def task_done(self) -> bool:
        """False if called more times than items were put."""
        rc = lib.shms_queue_task_done(self._r)
        if rc == errno.EINVAL:
            return False
        if rc:
            self._live()
        return True

    def join(self) -> None:
        self._inflight += 1
        try:
            while lib.shms_queue_join(self._live(), _SLICE_NS):
                pass
        finally:
            self._inflight -= 1

    def state(self) -> tuple[int, int, int]:
        """(qsize, maxsize, unfinished), read without any lock; CorruptSegmentError
        if the counters are damaged (head past tail, or more items than maxsize)."""
        out = ffi.new("uint64_t[3]")  # per call: threads share the record object
        lib.shms_queue_state(self._live(), out)
        if out[0] == _DAMAGED_SIZE:
            raise CorruptSegmentError("the queue's counters are damaged (head past tail, "
                                      "or more items than maxsize); remove the queue")
        return int(out[0]), int(out[1]), int(out[2])
