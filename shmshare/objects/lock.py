"""The lock every shared object carries: robust, process-shared, reentrant per thread.

The mutex itself lives in the object's heap header (see ``_core.heap``).  This
wrapper adds what Python code expects: reentrancy for the owning thread (so a
SharedDict method called inside ``with d.lock:`` does not deadlock), the
``threading.Lock`` acquire signature, and a warning when the previous owner
died holding the lock.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .._core import fork_hooks
from .._core.guard import LockGuard
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
    """What ObjectLock locks: a Heap or a RobustMutex."""

    guard: LockGuard
    same_namespace: Callable[[], bool] | None


_ALL: weakref.WeakSet[ObjectLock] = weakref.WeakSet()


class ObjectLock:
    """``with obj.lock:`` — hold a shared object's lock across several operations.

    ``acquire(blocking=True, timeout=None)`` returns True, or False when a
    non-blocking or timed attempt fails, like ``threading.RLock``.
    ``recoveries`` counts the times this process found the lock abandoned
    by a dead owner (each also emits ``OwnerDiedWarning``).

    ``with`` never leaves the lock held, whatever exception -- Ctrl-C, or any
    signal handler that raises -- arrives at whatever moment: taking it is
    undone by the handler of the ``try`` that follows the C call that took it,
    and ``__exit__`` is a C function called directly by ``with`` (a slot, not
    a method: see ``shmshare._core.guard``).  Explicit ``acquire()`` /
    ``release()`` pairs cannot promise that (an exception may land between
    them and your ``try``); prefer ``with``.
    """

    __slots__ = ("__exit__", "__weakref__", "_guard", "_holder", "_keep", "_new_ticket",
                 "_release_level", "_target", "_try_level", "_undo", "recoveries")

    def __init__(self, target: _Lockable, holder: object = None) -> None:
        guard = target.guard
        self._target = target
        self._guard = guard
        self._undo = guard.undo
        self._new_ticket = guard.new_ticket
        self._try_level = guard.try_level
        self._release_level = guard.release_level
        # The shared object this lock belongs to, for pickling by reference
        # (weak: a strong one would make a cycle and delay the object's detach).
        self._holder = weakref.ref(holder) if holder is not None else None
        # Its segment, though, strongly (no cycle: a segment refers to no lock): the
        # lock of a handle that is gone -- ``with SharedDict(name).lock:`` -- keeps
        # the mapping while the lock lives, as an open file keeps its file.
        self._keep = getattr(holder, "_seg", None)
        # A slot named __exit__: ``with`` finds it through the member
        # descriptor (C) and calls the C function it holds, no frame between.  It
        # is all that ``with`` keeps of a lock nothing else holds: it keeps the
        # guard and the segment (not this lock: no cycle).
        self.__exit__ = guard.exit_keeping((guard, self._keep))
        self.recoveries = 0
        _ALL.add(self)

    def held(self) -> bool:
        """True if the calling thread holds the lock."""
        return self._guard.held()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if timeout is not None and timeout < 0:
            timeout = None  # threading's "-1 means forever"
        ticket = self._guard.new_ticket()
        try:
            if self._guard.acquire_level(ticket, timeout if blocking else 0,
                                         self._target.same_namespace):
                self.note_recovery()
        except LockTimeoutError:
            self._undo(ticket)  # nothing was taken; the ticket says so
            return False
        except BaseException:
            # Whatever arrived after the C call took the lock -- Ctrl-C, or
            # the recovery warning turned into an error -- gives it back.
            self._undo(ticket)
            raise
        return True

    def __enter__(self) -> ObjectLock:
        ticket = self._new_ticket()
        try:
            # acquire_level's first C call made here: uncontended, no other frame.
            rc = self._try_level(ticket)
            if rc and self._guard.acquire_rest(rc, ticket, None, self._target.same_namespace):
                self.note_recovery()
        except BaseException:
            self._undo(ticket)  # one C call: no frame in which to be interrupted first
            raise
        return self

    def note_recovery(self) -> None:
        self.recoveries += 1
        message = (f"a process died holding this lock (pid {os.getpid()} took it over); the "
                   "object was checked and repaired")
        logger.warning("lock recovered: %s", message)
        warnings.warn(OwnerDiedWarning(message), stacklevel=3)

    def release(self) -> None:
        if self._release_level():
            raise RuntimeError("cannot release a shared lock this thread does not hold")

    def __reduce__(self) -> tuple[Any, ...]:
        holder = self._holder() if self._holder is not None else None
        if holder is None:
            raise TypeError("this lock cannot be pickled: the object it belongs to is gone")
        return (getattr, (holder, "_lock"))  # "_lock": a Namespace's "lock" is user data

    def __repr__(self) -> str:
        state = "held by this thread" if self.held() else "not held by this thread"
        return f"<shmshare.ObjectLock {state}>"


def _forget_owners_in_child() -> None:
    # A forked child inherits "I hold it" from the parent's Python state, but
    # the mutex belongs to the parent's thread: the child holds nothing.
    for lock in list(_ALL):
        lock._guard.forget()


fork_hooks.at_fork(after_in_child=_forget_owners_in_child)
