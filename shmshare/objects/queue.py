"""``SharedQueue``: a FIFO queue in shared memory, with ``queue.Queue``'s API.

``Manager().Queue()`` and ``Manager().JoinableQueue()`` return one (as in
multiprocessing's managers, both are a ``queue.Queue`` with ``task_done`` and
``join``).  Items live on the heap dict engine under integer keys
``head .. tail-1``; ``(head, tail, unfinished, maxsize)`` is one record
beside them, so each operation commits with a single write under the queue's
robust lock: ``put`` writes the item, then the record; ``get`` writes the
record, then drops the item (a ``get`` killed in between leaves the item's
slot behind, and the next ``get`` drops it).

Blocking ``put``/``get``/``join`` never sleep holding the lock: they read the
heap's modification counter under the lock, release it, and sleep on a
futex until any change (see ``Heap.wait_change``), in slices of at most
0.1 s so that signals are handled.  A process SIGKILLed while
waiting blocks nobody; one killed while holding the lock is repaired by the
next locker, which is told (``OwnerDiedWarning``); an item it was in the
middle of putting or getting is either wholly there or wholly not.
"""

from __future__ import annotations

import queue
import time
from typing import Any

from ..errors import ShmTypeError, ShmValueError
from .codec import dumps, encode_key, loads
from .heap_object import HeapObject
from .shared_object import HandleMethods

__all__ = ["SharedQueue"]

_STATE = encode_key("state")  # (head, tail, unfinished, maxsize): one write commits a change


class SharedQueue(HandleMethods, HeapObject, kind="queue"):
    """A multi-producer, multi-consumer FIFO queue shared by processes (``queue.Queue`` API).

    ``SharedQueue(maxsize=0, *, name=None, create=None, project_dir=None,
    persist=False, mode=0o600, trust=False)``.  ``maxsize`` is an int, as
    for ``queue.Queue``; opening an existing queue with another maxsize is a
    ShmValueError, and ``maxsize=None`` opens whatever is there (0 when created).
    """

    def __init__(self, maxsize: int | None = None, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False) -> None:
        if maxsize is not None and (not isinstance(maxsize, int) or isinstance(maxsize, bool)):
            hint = f"; to name the queue pass name={maxsize!r}" if isinstance(maxsize, str) else ""
            raise ShmTypeError(f"maxsize must be an int, not {type(maxsize).__name__}{hint}")
        created = self._open(name=name, create=create, project_dir=project_dir,
                             persist=persist, mode=mode, trust=trust,
                             initial=[("state", dumps((0, 0, 0, maxsize or 0)))])
        if not created and maxsize is not None and self.maxsize != maxsize:
            stored = self.maxsize
            self._seg.detach()
            raise ShmValueError(f"{name!r} is a SharedQueue of maxsize {stored}, not {maxsize}; "
                                f"open it with maxsize={stored} or None")

    # -- state, read and written with the lock held ------------------------------------

    def _state(self) -> tuple[int, int, int, int]:
        data = self._heap.dict_get(_STATE[0], _STATE[1], held=True)
        assert data is not None, "queue state record missing"
        return loads(data)  # type: ignore[no-any-return]

    def _commit(self, head: int, tail: int, unfinished: int, maxsize: int) -> None:
        self._heap.dict_set(_STATE[0], _STATE[1], dumps((head, tail, unfinished, maxsize)),
                            held=True)

    @staticmethod
    def _deadline(block: bool, timeout: float | None) -> float | None:
        if not block:
            return time.monotonic()
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        return time.monotonic() + timeout

    # -- queue.Queue API -----------------------------------------------------------

    @property
    def maxsize(self) -> int:
        with self.lock:
            return self._state()[3]

    def qsize(self) -> int:
        with self.lock:
            head, tail, _, _ = self._state()
        return tail - head

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        with self.lock:
            head, tail, _, maxsize = self._state()
        return 0 < maxsize <= tail - head

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        data = dumps(item)  # before taking the lock: an unpicklable item changes nothing
        deadline = self._deadline(block, timeout)
        with self.lock:
            while True:
                head, tail, unfinished, maxsize = self._state()
                if maxsize <= 0 or tail - head < maxsize:
                    break
                if not self._wait_locked(deadline):
                    raise queue.Full
            kb, n = encode_key(tail)
            self._heap.dict_set(kb, n, data, held=True)  # the item first...
            self._commit(head, tail + 1, unfinished + 1, maxsize)  # ...then it is queued

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        deadline = self._deadline(block, timeout)
        with self.lock:
            while True:
                head, tail, unfinished, maxsize = self._state()
                if tail > head:
                    break
                if not self._wait_locked(deadline):
                    raise queue.Empty
            kb, n = encode_key(head)
            data = self._heap.dict_get(kb, n, held=True)
            self._commit(head + 1, tail, unfinished, maxsize)  # the item is taken
            self._heap.dict_pop(kb, n, held=True)
            if head:  # a slot a killed get() may have left behind
                pk, pn = encode_key(head - 1)
                self._heap.dict_pop(pk, pn, held=True)
        assert data is not None
        return loads(data)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def task_done(self) -> None:
        with self.lock:
            head, tail, unfinished, maxsize = self._state()
            if unfinished <= 0:
                raise ValueError("task_done() called too many times")
            self._commit(head, tail, unfinished - 1, maxsize)

    def join(self) -> None:
        """Block until every item put has been got and marked task_done()."""
        with self.lock:
            while self._state()[2]:
                self._wait_locked(None)

    def __repr__(self) -> str:
        if (gone := self._detached_repr()) is not None:
            return gone
        return f"<SharedQueue qsize={self.qsize()} maxsize={self.maxsize}>"
