"""The lock every shared object carries: robust, process-shared, reentrant per thread.

The mutex itself lives in the object's heap header (see ``_core.heap``).  This
wrapper adds what Python code expects: reentrancy for the owning thread (so a
SharedDict method called inside ``with d.lock:`` does not deadlock), the
``threading.Lock`` acquire signature, and a warning when the previous owner
died holding the lock.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from typing import Any, Protocol

from .._log import logger
from ..errors import LockTimeoutError

__all__ = ["ObjectLock", "OwnerDiedWarning"]


class OwnerDiedWarning(RuntimeWarning):
    """A process died holding a shared object's lock; the object was repaired.

    Raised as a warning by the acquirer that found the lock abandoned, after
    the object's heap was checked and rebuilt.  Writes that process had
    finished are intact; the one it was in the middle of is either complete
    (if it had reached its commit point) or absent, never half-done.
    """


class _Lockable(Protocol):
    def lock(self, timeout: float | None = None) -> bool: ...
    def unlock(self) -> None: ...


_ALL: weakref.WeakSet[ObjectLock] = weakref.WeakSet()


class ObjectLock:
    """``with obj.lock:`` — hold a shared object's lock across several operations.

    ``acquire(blocking=True, timeout=None)`` returns True, or False when a
    non-blocking or timed attempt fails, like ``threading.RLock``.
    ``recoveries`` counts the times this process found the lock abandoned
    by a dead owner (each also emits ``OwnerDiedWarning``).
    """

    __slots__ = ("__weakref__", "_count", "_holder", "_owner", "_target", "recoveries")

    def __init__(self, target: _Lockable, holder: object = None) -> None:
        self._target = target
        # The shared object this lock belongs to, for pickling by reference
        # (weak: a strong one would make a cycle and delay the object's detach).
        self._holder = weakref.ref(holder) if holder is not None else None
        self._owner: int | None = None
        self._count = 0
        self.recoveries = 0
        _ALL.add(self)

    def held(self) -> bool:
        """True if the calling thread holds the lock."""
        return self._owner is not None and self._owner == threading.get_ident()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            self._count += 1
            return True
        if timeout is not None and timeout < 0:
            timeout = None  # threading's "-1 means forever"
        try:
            recovered = self._target.lock(timeout=timeout if blocking else 0)
        except LockTimeoutError:
            return False
        self._owner, self._count = me, 1
        if recovered:
            try:
                self.note_recovery()
            except BaseException:
                # The warning was turned into an error: the caller gets it
                # and does not hold the lock (a `with` body does not run).
                self._owner, self._count = None, 0
                self._target.unlock()
                raise
        return True

    def note_recovery(self) -> None:
        self.recoveries += 1
        message = (f"a process died holding this lock (pid {os.getpid()} took it over); the "
                   "object was checked and repaired")
        logger.warning("lock recovered: %s", message)
        warnings.warn(OwnerDiedWarning(message), stacklevel=3)

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("cannot release a shared lock this thread does not hold")
        self._count -= 1
        if self._count == 0:
            self._owner = None
            self._target.unlock()

    def __enter__(self) -> ObjectLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        holder = self._holder() if self._holder is not None else None
        if holder is None:
            raise TypeError("this lock cannot be pickled: the object it belongs to is gone")
        return (getattr, (holder, "lock"))

    def __repr__(self) -> str:
        state = f"held by thread {self._owner}" if self._owner is not None else "not held here"
        return f"<shmshare.ObjectLock {state}>"


def _forget_owners_in_child() -> None:
    # A forked child inherits "I hold it" from the parent's Python state, but
    # the mutex belongs to the parent's thread: the child holds nothing.
    for lock in list(_ALL):
        lock._owner, lock._count = None, 0


os.register_at_fork(after_in_child=_forget_owners_in_child)
