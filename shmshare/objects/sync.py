"""Lock, RLock, Semaphore, BoundedSemaphore and Event for ``shmshare.Manager()``.

Each is a C record on its heap (``_core/src/sync.c``), changed in one C call
per operation: a lock word for Lock and RLock (an uncontended acquire or
release is one compare-and-swap, no system call), a permit count and holder
table for the semaphores, a flag and a generation counter for Event.  Waits
sleep on a futex of the record, never holding any lock, in slices of at most
0.1 s so that Ctrl-C and timeouts work as in ``threading``.

Ownership (docs/concepts/locks-and-recovery.md):

- A Lock or RLock held by a process that dies -- however it dies, in
  whatever PID namespace -- is given back once: to the one waiter that
  takes it over, which gets :class:`~shmshare.OwnerDiedWarning` (counted in
  ``recoveries``), whatever the dead holder's recursion depth.
- A Lock may be released by any process, as the Manager's Lock may; an
  RLock only by its owning thread (RuntimeError otherwise).
- A semaphore permit taken by ``acquire()`` is consumed, as in
  ``multiprocessing``: it comes back only by ``release()``, whatever happens
  to the process that took it (so ``Semaphore(0)`` as an item counter never
  hands out phantom items).  A permit taken by ``with sem:`` is *held*: if
  its process dies inside the block, the next acquirer that finds no permit
  gives it back (OwnerDiedWarning, ``recoveries``).
- ``Event.wait()`` returns True to every waiter that was waiting when
  ``set()`` ran, even if ``clear()`` followed at once.
"""

from __future__ import annotations

import errno
import warnings
import weakref
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from .._core import fork_hooks, proc
from .._core import sync as csync
from .._core.heap import Heap
from .._log import logger
from ..errors import ShmTypeError
from ..segment import Segment
from .codec import encode_key
from .heap_object import HeapObject
from .lock import OwnerDiedWarning
from .remote import StoreDispatch
from .shared_object import HandleMethods

__all__ = ["SharedBoundedSemaphore", "SharedEvent", "SharedLock", "SharedRLock",
           "SharedSemaphore"]

_REC = encode_key("rec")


def _token() -> int:
    return proc._me or proc.token()


class _Waitable(StoreDispatch, HandleMethods, HeapObject):
    """An object whose state is one sync record (``_rec``) on its heap.

    With ``url=`` (or ``$SHMSHARE_URL``) the constructor returns the store's
    object instead (:mod:`.remote_sync`)."""

    _CODE = 0        # the record kind (_core.sync)
    recoveries = 0   # dead holders taken over or given back, by this handle

    def _attach(self, seg: Segment, heap: Heap) -> None:
        super()._attach(seg, heap)
        self._rec: csync.SyncRecord | None = None
        self._open_record(create=False)

    def _open_record(self, create: bool, value: int = 0, bound: int = 0) -> None:
        """Open the record (create it holding ``value``, under the object's lock, so
        that a concurrent opener never sees it half made)."""
        if self._rec is not None:
            return
        with self.lock:
            if not create and self._heap.dict_get(_REC[0], _REC[1], held=True) is None:
                return
            rec = csync.SyncRecord(self._heap, _REC[0], _REC[1], self._CODE, value, bound,
                                   held=True)
        self._rec = rec
        self._seg._on_release(rec.close)

    def _setup(self, value: int = 0, bound: int = 0) -> None:
        self._open_record(True, value, bound)

    @property
    def _r(self) -> csync.SyncRecord:
        rec = self._rec
        if rec is None:
            raise ValueError(f"{self._label()} has no state record (not created by shmshare)")
        return rec

    def _recovered(self, what: str) -> None:
        self.recoveries += 1
        message = (f"a process died holding {what} of this "
                   f"{type(self).__name__.removeprefix('Shared')}; it was given back")
        logger.warning("recovered: %s", message)
        warnings.warn(OwnerDiedWarning(message), stacklevel=3)


def _timeout(block: bool, timeout: float | None) -> float | None:
    if not block:
        return 0
    if timeout is None or timeout < 0:
        return None
    return timeout


class _WithBlock:
    """``with``'s methods for a primitive held inside the block (a Lock, RLock or
    Semaphore), each class's ``_enter`` taking it."""

    _rec: csync.SyncRecord | None
    _r: csync.SyncRecord
    _enter: Callable[[], bool]

    def _exit(self, *exc: object) -> None:
        self._r.exit(*exc)

    # Looked up by ``with`` (both, before __enter__ runs) through C getters: the
    # handle's FastCall and ExitCall (see _open_record), so taking it and giving
    # it back run no Python frame.  (So ``with lock: lock.release()`` no longer
    # raises at the block's end.)
    __enter__ = property(attrgetter("_enter"))

    @property
    def __exit__(self) -> Callable[..., Any]:
        # ``with`` holds only the __exit__ it looked up (before __enter__ runs): a
        # fresh one that holds this object keeps a temporary ``with Lock():`` (or
        # Semaphore) alive, mapped, to the block's end (stored on the object it
        # would be a cycle); one that did not let the permit go unreturned.
        rec = self._rec
        return rec.exit_keeping(self) if rec is not None else self._exit


class SharedSemaphore(_WithBlock, _Waitable, kind="semaphore"):
    """``Semaphore(value)``: acquire takes a permit, release gives one back."""
    _CODE = csync.SEMAPHORE
    _BOUNDED = False

    def __init__(self, value: int = 1, *, name: str | None = None, create: bool | None = None,
                 project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                 trust: bool = False, url: str | None = None) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ShmTypeError(f"semaphore value must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url)
        self._setup(value, value if self._BOUNDED else 0)

    def _open_record(self, create: bool, value: int = 0, bound: int = 0) -> None:
        opened = self._rec is not None
        super()._open_record(create, value, bound)
        rec = self._rec
        if rec is not None and not opened:
            # acquire() and release() of one permit, uncontended, as C callables on
            # the handle (shadowing the methods below, which they hand over to, held
            # weakly: no cycle), as a Lock's.
            acquire, release = rec.fast_sem(weakref.WeakMethod(self.acquire),
                                            weakref.WeakMethod(self.release))
            vars(self).update(acquire=acquire, release=release,
                              _enter=rec.fast_take(weakref.WeakMethod(self._enter), 0))

    def _take(self, held: bool, block: bool, timeout: float | None) -> bool:
        freed = self._r.sem_acquire(_token(), held, _timeout(block, timeout))
        if freed is None:
            return False
        if freed:
            self._recovered(f"{freed} permit(s)")
        return True

    def acquire(self, block: bool = True, timeout: float | None = None, *,
                blocking: bool | None = None) -> bool:
        """Take a permit for good (consumed: it comes back only by release())."""
        return self._take(False, block if blocking is None else blocking, timeout)

    def release(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError("n must be one or more")
        if not self._r.sem_release(_token(), n):
            raise ValueError("Semaphore released too many times")

    def get_value(self) -> int:
        return self._r.sem_value()

    def _enter(self) -> bool:
        # ``with sem:`` holds a permit: given back if this process dies inside the
        # block, and taken and given back where an interrupt cannot land in between
        # (_core/sync.py, SyncRecord.take): no call may follow the take here
        # outside the try, since a signal is handled after every call.
        r = self._r
        ticket = r.new_ticket()
        try:
            freed = r.take(_token(), None, ticket)
            if freed:
                self._recovered(f"{freed} permit(s)")
        except BaseException:
            r.undo(ticket)
            raise
        return True

    def __repr__(self) -> str:
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        return f"<{type(self).__name__}(value={self.get_value()})>"


class SharedBoundedSemaphore(SharedSemaphore, kind="bsemaphore"):
    """``BoundedSemaphore(value)``: releasing above the initial value raises ValueError."""
    _BOUNDED = True


class SharedLock(_WithBlock, _Waitable, kind="mlock"):
    """``Lock()``: as the Manager's (threading) Lock; any process may release it."""
    _CODE = csync.LOCK

    def __init__(self, *, name: str | None = None, create: bool | None = None,
                 project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                 trust: bool = False, url: str | None = None) -> None:
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url)
        self._setup()

    def _open_record(self, create: bool, value: int = 0, bound: int = 0) -> None:
        opened = self._rec is not None
        super()._open_record(create, value, bound)
        rec = self._rec
        if rec is None or opened:
            return
        self._share_state(rec)
        # The uncontended acquire, ``with`` and release as C callables on the
        # handle (shadowing the methods below, which they fall back to): no
        # Python frame, so nothing between taking the lock and returning for an
        # interrupt to land in.  The methods are held weakly (no cycle).
        full = {name: weakref.WeakMethod(getattr(self, name))
                for name in ("acquire", "_enter", "release")}
        vars(self).update(acquire=rec.fast_take(full["acquire"], 1),
                          _enter=rec.fast_take(full["_enter"], 0),
                          release=rec.fast_release(full["release"]), _exit=rec.exit)

    def _share_state(self, rec: csync.SyncRecord) -> None:
        """An RLock's holder and depth, shared by its handles in this process."""

    def acquire(self, block: bool = True, timeout: float | None = None, *,
                blocking: bool | None = None) -> bool:
        if blocking is not None:
            block = blocking
        # Taken with a ticket (_core/sync.py, SyncRecord.take): an interrupt after
        # the C call took the lock gives it back.
        r = self._r
        ticket = r.new_ticket()
        try:
            rc = r.take(_token(), _timeout(block, timeout), ticket)
            if rc is None:
                return False
            if rc:
                self._recovered("it")
        except BaseException:
            r.undo(ticket)
            raise
        return True

    def _enter(self) -> bool:
        # acquire() inlined: a signal is handled after every call, so returning
        # from a call to acquire() here could be interrupted with the lock taken.
        r = self._r
        ticket = r.new_ticket()
        try:
            if r.take(_token(), None, ticket):
                self._recovered("it")
        except BaseException:
            r.undo(ticket)
            raise
        return True

    def release(self) -> None:
        if not self._r.lock_release(_token(), True):
            raise RuntimeError("release unlocked lock")

    def locked(self) -> bool:
        return self._r.lock_owner() != 0

    def _owned(self) -> int:
        """1 if this process holds the lock (Condition's check), else 0."""
        return int(self._r.lock_owner() == _token())

    def _release_all(self) -> int:
        self.release()
        return 1

    def _reacquire(self, depth: int) -> None:
        self.acquire()

    def __repr__(self) -> str:
        if not self._seg.attached:
            return f"<{self._label()} (detached)>"
        return f"<{type(self).__name__}({'locked' if self.locked() else 'unlocked'})>"


_OWNERS: weakref.WeakValueDictionary[int, csync.RLockState] = weakref.WeakValueDictionary()


class SharedRLock(SharedLock, kind="rlock"):
    """``RLock()``: reentrant, owned by one thread of one process.

    Its holder thread and depth live in C (``_core.sync.RLockState``, one per
    record and process), so acquire, ``with`` and release inherit the Lock's
    ticket protocol and C ``__exit__``: an interrupt cannot leave it held."""
    _CODE = csync.RLOCK

    def _share_state(self, rec: csync.SyncRecord) -> None:
        key = rec.address()
        st = _OWNERS.get(key)
        if st is None:
            st = _OWNERS[key] = csync.RLockState()
        rec.share_state(st)

    def release(self) -> None:
        rc = self._r.release_level()
        if rc == errno.EPERM:
            raise RuntimeError("cannot release un-acquired lock")
        if rc:
            raise ValueError(f"{self._label()} is detached from this process")

    def _owned(self) -> int:
        return self._r.depth()

    def _release_all(self) -> int:
        return self._r.release_all()

    def _reacquire(self, depth: int) -> None:
        self.acquire()
        self._r.set_depth(depth)


def _forget_owners_in_child() -> None:
    # A forked child holds none of its parent's RLocks (their owner is the
    # parent's token); it must not believe its copy of the parent's thread does.
    for st in list(_OWNERS.values()):
        st.forget()


fork_hooks.at_fork(after_in_child=_forget_owners_in_child)


class SharedEvent(_Waitable, kind="event"):
    """``Event()``: set, clear, is_set, wait(timeout) -> bool."""
    _CODE = csync.EVENT

    def __init__(self, *, name: str | None = None, create: bool | None = None,
                 project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                 trust: bool = False, url: str | None = None) -> None:
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url)
        self._setup()

    def is_set(self) -> bool:
        return self._r.event_is_set()

    def set(self) -> None:
        self._r.event_set(True)

    def clear(self) -> None:
        self._r.event_set(False)

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None and timeout < 0:
            timeout = 0
        return self._r.event_wait(timeout)
