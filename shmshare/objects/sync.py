"""Lock, RLock, Semaphore, BoundedSemaphore and Event for ``shmshare.Manager()``.

Each keeps one state record on its heap — ``(value, holders)``, where holders
maps ``(pid, thread id)`` to the permits that thread holds — changed under the
heap's robust lock.  Waiting never holds that lock: it sleeps on the heap's
change futex (``Heap.wait_change``) in slices of at most ``_SLICE`` seconds.

Robustness: on every wake a waiter looks for holders whose process is gone
(SIGKILL, crash) and takes their permits back, emitting
:class:`~shmshare.OwnerDiedWarning` and counting it in ``recoveries``.  So a
process killed while holding a Lock, RLock or semaphore permit never
deadlocks the others.  (A reused pid can hide a dead holder until that new
process exits; pids are not reused quickly on Linux.)

Semantics follow the Manager's proxies, i.e. the ``threading`` objects in
its server: a ``Lock`` may be released by a process other than the one that
acquired it; an ``RLock`` only by its owner (RuntimeError otherwise).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any

from .._log import logger
from ..naming.lifecycle import pid_alive
from .base import HeapObject
from .codec import dumps, encode_key, loads
from .lock import OwnerDiedWarning

__all__ = ["SharedBoundedSemaphore", "SharedEvent", "SharedLock", "SharedRLock",
           "SharedSemaphore"]

_STATE = encode_key("state")
Holders = dict[tuple[int, int], int]


class _Waitable(HeapObject):
    """A state record shared by the primitives, and dead-holder recovery."""

    recoveries = 0  # permits taken back from dead holders, by this handle

    def _setup(self, initial: Any) -> None:
        with self.lock:
            self._heap.dict_set(_STATE[0], _STATE[1], dumps(initial), only_if_absent=True,
                                held=True)

    def _get(self) -> Any:
        data = self._heap.dict_get(_STATE[0], _STATE[1], held=True)
        return loads(data) if data is not None else None

    def _put(self, state: Any) -> None:
        self._heap.dict_set(_STATE[0], _STATE[1], dumps(state), held=True)

    @staticmethod
    def _deadline(block: bool, timeout: float | None) -> float | None:
        if not block:
            return time.monotonic()
        if timeout is None or timeout < 0:
            return None
        return time.monotonic() + timeout

    def _reap(self, holders: Holders) -> int:
        """Drop holders whose process died; return the permits they held."""
        freed = 0
        for who in [w for w in holders if not pid_alive(w[0])]:
            freed += holders.pop(who)
        if freed:
            self.recoveries += 1
            message = (f"a process died holding {freed} permit(s) of this "
                       f"{type(self).__name__.removeprefix('Shared')}; they were taken back")
            logger.warning("permits recovered: %s", message)
            warnings.warn(OwnerDiedWarning(message), stacklevel=4)
        return freed


class SharedSemaphore(_Waitable):
    """``Semaphore(value)``: acquire takes a permit, release gives one back."""

    KIND = "semaphore"
    _BOUNDED = False

    def __init__(self, value: int = 1, *, name: str | None = None, create: bool | None = None,
                 project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                 trust: bool = False) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        super().__init__(name, create=create, project_dir=project_dir, persist=persist,
                         mode=mode, trust=trust)
        self._setup((value, value if self._BOUNDED else None, {}))

    def acquire(self, block: bool = True, timeout: float | None = None, *,
                blocking: bool | None = None) -> bool:
        if blocking is not None:
            block = blocking
        deadline = self._deadline(block, timeout)
        me = (os.getpid(), threading.get_ident())
        with self.lock:
            while True:
                value, bound, holders = self._get()
                value += self._reap(holders)
                if value > 0:
                    holders[me] = holders.get(me, 0) + 1
                    self._put((value - 1, bound, holders))
                    return True
                self._put((value, bound, holders))
                if not self._wait_locked(deadline):
                    return False

    def release(self, n: int = 1) -> None:
        me = (os.getpid(), threading.get_ident())
        with self.lock:
            value, bound, holders = self._get()
            if bound is not None and value + n > bound:
                raise ValueError("Semaphore released too many times")
            for _ in range(n):
                # The releaser's own permit if it holds one, else any holder's.
                who = me if me in holders else next(iter(holders), None)
                if who is not None:
                    holders[who] -= 1
                    if not holders[who]:
                        del holders[who]
            self._put((value + n, bound, holders))

    def _owned(self) -> int:
        """Permits the calling thread holds (the recursion depth for an RLock)."""
        with self.lock:
            return int(self._get()[2].get((os.getpid(), threading.get_ident()), 0))

    def get_value(self) -> int:
        with self.lock:
            return int(self._get()[0])

    def __enter__(self) -> bool:  # type: ignore[override]  # with lock: acquire, not detach
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        return f"<{type(self).__name__}(value={self.get_value()})>"


class SharedBoundedSemaphore(SharedSemaphore):
    """``BoundedSemaphore(value)``: releasing above the initial value raises ValueError."""

    KIND = "bsemaphore"
    _BOUNDED = True


class SharedLock(SharedSemaphore):
    """``Lock()``: a binary semaphore, as the Manager's (threading) Lock."""

    KIND = "mlock"

    def __init__(self, *, name: str | None = None, **kw: Any) -> None:
        super().__init__(1, name=name, **kw)

    def release(self, n: int = 1) -> None:
        with self.lock:
            if self._get()[0] >= 1:
                raise RuntimeError("release unlocked lock")
            super().release()

    def locked(self) -> bool:
        return self.get_value() == 0


class SharedRLock(SharedSemaphore):
    """``RLock()``: reentrant, owned by one process's thread."""

    KIND = "rlock"

    def __init__(self, *, name: str | None = None, **kw: Any) -> None:
        super().__init__(1, name=name, **kw)

    def acquire(self, block: bool = True, timeout: float | None = None, *,
                blocking: bool | None = None) -> bool:
        me = (os.getpid(), threading.get_ident())
        with self.lock:
            value, bound, holders = self._get()
            if me in holders:
                holders[me] += 1
                self._put((value, bound, holders))
                return True
        return super().acquire(block, timeout, blocking=blocking)

    def release(self, n: int = 1) -> None:
        me = (os.getpid(), threading.get_ident())
        with self.lock:
            value, bound, holders = self._get()
            if me not in holders:
                raise RuntimeError("cannot release un-acquired lock")
            holders[me] -= 1
            if holders[me] == 0:
                del holders[me]
                value += 1
            self._put((value, bound, holders))


class SharedEvent(_Waitable):
    """``Event()``: set, clear, is_set, wait(timeout) -> bool."""

    KIND = "event"

    def __init__(self, *, name: str | None = None, create: bool | None = None,
                 project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                 trust: bool = False) -> None:
        super().__init__(name, create=create, project_dir=project_dir, persist=persist,
                         mode=mode, trust=trust)
        self._setup(False)

    def is_set(self) -> bool:
        with self.lock:
            return bool(self._get())

    def set(self) -> None:
        with self.lock:
            self._put(True)

    def clear(self) -> None:
        with self.lock:
            self._put(False)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = self._deadline(True, timeout)
        with self.lock:
            while not self._get():
                if not self._wait_locked(deadline):
                    return bool(self._get())
            return True
