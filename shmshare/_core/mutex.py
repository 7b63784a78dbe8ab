"""``RobustMutex``: a process-shared robust pthread mutex inside a segment
(``src/lock.c``), for objects that have no heap (SharedArray)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from functools import partial

from . import Attachment
from ._lib import ffi, lib
from .guard import LockGuard
from .owner_watch import OwnerWatch
from .results import failure
from .slices import wait_in_slices

__all__ = ["RobustMutex"]


def _check(rc: int, what: str) -> None:
    if rc:
        raise failure(rc, what, lock="the lock")


class RobustMutex:
    """A process-shared robust mutex living at ``offset`` inside an Attachment.

    ``acquire`` returns True when the previous owner died holding the lock:
    the caller must then repair the data the lock protects and call
    :meth:`mark_consistent` before releasing, or the mutex becomes unusable.
    """

    SIZE: int = int(lib.shms_mutex_size())

    __slots__ = ("_att", "_m", "guard", "same_namespace")

    def __init__(self, attachment: Attachment, offset: int) -> None:
        self._att = attachment  # keeps the mapping alive
        self._m = ffi.cast("void *", attachment.pointer(offset))
        #: The mutex as objects hold it (``ObjectLock``, see guard.py); a dead
        #: owner is reported and the mutex made consistent (nothing to repair).
        self.guard = LockGuard(self._m, heap=False, shmid=attachment.shmid, keep=attachment)
        # Set by the owner of the segment (Segment.pid_namespace_shared): while
        # it says True, a long wait on a lock word naming a thread that does not
        # exist ends in CorruptSegmentError instead of waiting forever.
        self.same_namespace: Callable[[], bool] | None = None

    def initialize(self) -> None:
        """Initialise the mutex in place; only its creator calls this, once."""
        _check(lib.shms_mutex_init(self._m), "pthread_mutex_init")

    def kind_ok(self) -> bool:
        """False if the mutex's type word is damaged (not robust/shared/checking)."""
        return bool(lib.shms_mutex_kind_ok(self._m))

    def owner(self) -> int:
        """Thread id in the lock word (0: unlocked or unknown on this libc; -1: no
        thread, only flag bits)."""
        return int(lib.shms_mutex_owner(self._m))

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock; True if the previous owner died holding it.

        ``timeout=None`` waits forever, ``0`` tries once.  Raises
        :class:`~shmshare.errors.LockTimeoutError` when it runs out.  Waits
        in slices, so that Ctrl-C is honoured and a damaged lock word is
        recognised (:class:`OwnerWatch`).
        """
        rc = wait_in_slices(partial(lib.shms_mutex_lock, self._m), timeout, lambda: OwnerWatch(
            self.owner, self._att.shmid, self.same_namespace, "lock"))
        if rc == 0:
            return False
        if rc == errno.EOWNERDEAD:
            return True
        raise failure(rc, "pthread_mutex_lock", lock="the lock")

    def mark_consistent(self) -> None:
        _check(lib.shms_mutex_consistent(self._m), "pthread_mutex_consistent")

    def release(self) -> None:
        rc = lib.shms_mutex_unlock(self._m)
        if rc == errno.EPERM:
            raise RuntimeError("release of a lock this thread does not hold")
        _check(rc, "pthread_mutex_unlock")
