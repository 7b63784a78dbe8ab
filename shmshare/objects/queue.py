"""``SharedQueue``: a FIFO queue in shared memory, with ``queue.Queue``'s API.

``Manager().Queue()`` and ``Manager().JoinableQueue()`` return one (as in
multiprocessing's managers, both are a ``queue.Queue`` with ``task_done`` and
``join``).  Items are pickled into the heap's dict under their position;
head, tail, ``unfinished`` and ``maxsize`` are a C record beside them
(``_core/src/queue.c``), so each ``put`` and each ``get`` is one C call that
commits with one store under the queue's robust lock: ``put`` writes the
item, then moves the tail; ``get`` copies the item out (once, straight into
the bytes returned: ``_core/ext/hotqueue.c``), moves the head, then drops the
item.  See docs/concepts/heap.md, "The queue".

Blocking ``put``/``get``/``join`` never sleep holding the lock: they sleep on
the record's futex, in slices of at most 0.1 s so that signals are handled.
A process SIGKILLed while waiting blocks nobody; one killed while holding
the lock is repaired by the next locker; an item it was in the middle of
putting or getting is either wholly there or wholly not.  ``qsize``,
``empty`` and ``full`` read the counters without taking the lock.
"""

from __future__ import annotations

import queue
from typing import Any

from .._core._hotpath import DIRECT_BYTES_MIN
from .._core.heap import Heap
from .._core.queue import QUEUE, QueueRecord
from ..errors import ShmTypeError, ShmValueError
from ..segment import Segment
from .codec import dumps, encode_key, loads, split_pickle
from .heap_object import HeapObject
from .remote import StoreDispatch
from .shared_object import HandleMethods

__all__ = ["SharedQueue"]

_REC = encode_key("rec")


class SharedQueue(StoreDispatch, HandleMethods, HeapObject, kind="queue"):
    """A multi-producer, multi-consumer FIFO queue shared by processes (``queue.Queue`` API).

    ``SharedQueue(maxsize=0, *, name=None, create=None, project_dir=None,
    persist=False, mode=0o600, trust=False)``.  ``maxsize`` is an int, as
    for ``queue.Queue``; opening an existing queue with another maxsize is a
    ShmValueError, and ``maxsize=None`` opens whatever is there (0 when created).
    """

    def __init__(self, maxsize: int | None = None, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False, url: str | None = None) -> None:
        if maxsize is not None and (not isinstance(maxsize, int) or isinstance(maxsize, bool)):
            hint = f"; to name the queue pass name={maxsize!r}" if isinstance(maxsize, str) else ""
            raise ShmTypeError(f"maxsize must be an int, not {type(maxsize).__name__}{hint}")
        created = self._open(name=name, create=create, project_dir=project_dir,
                             persist=persist, mode=mode, trust=trust, url=url)
        self._open_record(True, max(0, maxsize or 0))
        if not created and maxsize is not None and self.maxsize != max(0, maxsize):
            stored = self.maxsize
            self._seg.detach()
            raise ShmValueError(f"{name!r} is a SharedQueue of maxsize {stored}, not {maxsize}; "
                                f"open it with maxsize={stored} or None")

    def _attach(self, seg: Segment, heap: Heap) -> None:
        super()._attach(seg, heap)
        self._q: QueueRecord | None = None
        self._open_record(False)

    def _open_record(self, create: bool, maxsize: int = 0) -> None:
        if self._q is not None:
            return
        with self.lock:
            if not create and self._heap.dict_get(_REC[0], _REC[1], held=True) is None:
                return
            rec = QueueRecord(self._heap, _REC[0], _REC[1], QUEUE, maxsize, held=True)
        self._q = rec
        self._seg._on_release(rec.close)

    @property
    def _r(self) -> QueueRecord:
        rec = self._q
        if rec is None:
            raise ValueError(f"{self._label()} has no queue record (not created by shmshare)")
        return rec

    @staticmethod
    def _timeout(block: bool, timeout: float | None) -> float | None:
        if not block:
            return 0
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        return timeout

    # -- queue.Queue API -----------------------------------------------------------

    @property
    def maxsize(self) -> int:
        return self._r.state()[1]

    def qsize(self) -> int:
        return self._r.state()[0]

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        n, maxsize, _ = self._r.state()
        return 0 < maxsize <= n

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        q = self._q
        if (q is not None and timeout is None and type(item) is bytes
                and len(item) >= DIRECT_BYTES_MIN and not q.put_bytes_try(item)):
            return  # one large bytes object: its pickle written straight from it
        parts = split_pickle(item)  # a large array: its data copied once, from it
        if parts is not None:
            if not self._r.put_parts(*parts, self.lock.held(), self._timeout(block, timeout)):
                raise queue.Full
            return
        data = dumps(item)  # before anything else: an unpicklable item changes nothing
        if q is not None and timeout is None and not q.put_try(data):
            return  # the common case: one C call, no wait
        if not self._r.put(data, self.lock.held(), self._timeout(block, timeout)):
            raise queue.Full

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        q = self._q
        if q is not None and timeout is None:  # the common case: one C call, no wait
            got = q.take_try()
            if type(got) is bytes:
                return loads(got)
            if type(got) is tuple:
                if len(got) == 1:
                    return got[0]  # a bytes item, unpickled in C
                return loads(got[0], buffers=got[1:])  # a split item: no copy more
        data = self._r.get(self.lock.held(), self._timeout(block, timeout))
        if data is None:  # still empty after the timeout
            raise queue.Empty
        return loads(data) if isinstance(data, bytes) else data.load()

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def task_done(self) -> None:
        if not self._r.task_done():
            raise ValueError("task_done() called too many times")

    def join(self) -> None:
        """Block until every item put has been got and marked task_done()."""
        self._r.join()

    def __repr__(self) -> str:
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        return f"<SharedQueue qsize={self.qsize()} maxsize={self.maxsize}>"
