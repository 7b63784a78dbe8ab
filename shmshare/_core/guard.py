"""``LockGuard``: take and give back a shared lock where Python cannot interrupt.

A KeyboardInterrupt (or any exception a signal handler raises) lands at
function entry, after a call or on a backward jump.  So a lock taken by a C
call and recorded by Python afterwards, or released by a Python ``__exit__``
that must first be entered, can be left held by a live process -- and every
other process then waits forever.  ``src/guard.c`` keeps the holder and depth
in C; this module binds it so that:

* ``acquire_level(ticket)`` takes one level and sets ``ticket[0]`` in the
  same C call; the caller wraps everything after it in ``try`` and calls
  ``undo(ticket)`` -- itself one C call, reached with no Python frame in
  between -- in the handler.
* ``exit`` and ``release_level`` are C callables with no Python frame at all:
  ``ext/exitcall.c``'s ``ExitCall`` (cffi functions cannot take the exception
  objects ``__exit__`` receives) and ``functools.partial`` over the cffi
  function.  A class stores them in slots, so ``with`` and attribute lookup
  reach them through C descriptors only.

Like every module of ``_core`` (and no module outside it), this one touches
``ffi``/``lib``.  The guarantee needs CPython >= 3.11 (3.10 checks for
signals before almost every bytecode, so even ``with``'s own epilogue can be
interrupted before it calls ``__exit__``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ._exitcall import ExitCall
from ._lib import ffi, lib
from .owner_watch import OwnerWatch
from .results import BUSY, RECOVERED, failure
from .slices import SLICE_NS, wait_in_slices

__all__ = ["RECOVERED", "LockGuard"]


def _address(name: str) -> int:
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


_RELEASE_ADDRESS = _address("shms_guard_release")


class LockGuard:
    """One process's view of one shared lock: who here holds it, how deep.

    ``target`` is a cffi pointer to a heap handle (``heap=True``) or to a
    bare robust mutex inside segment ``shmid``; ``keep`` is whatever must
    stay alive for it to stay valid.
    """

    __slots__ = ("__weakref__", "_g", "_keep", "_lock_name", "exit", "new_ticket", "release_level",
                 "shmid", "try_level", "undo")

    def __init__(self, target: Any, *, heap: bool, shmid: int, keep: object) -> None:
        g = ffi.new("shms_guard_t *")
        lib.shms_guard_init(g, lib.SHMS_GUARD_HEAP if heap else lib.SHMS_GUARD_MUTEX, target)
        self._g = g
        self._keep = keep
        self.shmid = shmid  # the segment the lock lives in (for OwnerWatch)
        self._lock_name = "the heap lock" if heap else "the lock"
        #: ``new_ticket()``: a fresh ticket for one :meth:`acquire_level` (make it
        #: before the ``try``; being interrupted there leaves nothing taken).
        self.new_ticket = functools.partial(ffi.new, "int64_t *")
        #: ``undo(ticket)``: give back the level ``ticket`` says was taken (C, no frame).
        self.undo = functools.partial(lib.shms_guard_undo, g)
        #: ``release_level() -> 0 | EPERM``: give back one level (C, no frame).
        self.release_level = functools.partial(lib.shms_guard_release, g)
        #: ``try_level(ticket) -> rc``: :meth:`acquire_level`'s first C call for a wait
        #: without a timeout (C, no frame); 0: taken, else :meth:`acquire_rest` decides.
        self.try_level = functools.partial(lib.shms_guard_acquire, g, SLICE_NS)

    def exit_keeping(self, keep: object) -> ExitCall:
        """``exit(exc_type, exc, tb) -> None``, ``__exit__`` for ``with`` (C, no frame),
        holding ``keep`` while it lives.  ``with`` keeps only the ``__exit__`` it
        found, not the lock object: what the release touches (this guard's memory,
        and the mapping the lock is in) must be in ``keep``, or a block on a lock
        nothing else holds (``with SharedDict(name).lock:``) releases freed memory."""
        return ExitCall(int(ffi.cast("uintptr_t", self._g)), _RELEASE_ADDRESS, keep)

    def close(self) -> None:
        """The target is going away: every later acquire raises, nobody holds it here."""
        lib.shms_guard_close(self._g)

    def held(self) -> bool:
        """True if the calling thread holds the lock (at any depth)."""
        return bool(lib.shms_guard_held(self._g))

    def forget(self) -> None:
        """In a forked child: the parent's holding thread does not exist here."""
        lib.shms_guard_forget(self._g)

    def owner_tid(self) -> int:
        return int(lib.shms_guard_owner_tid(self._g))

    def acquire_level(self, ticket: Any, timeout: float | None,
                      same_namespace: Callable[[], bool] | None = None) -> bool:
        """Take one level (waiting up to ``timeout`` s, None: forever); True if a
        dead owner's state was repaired.  LockTimeoutError when the wait runs
        out.  Call inside ``try: ... except BaseException: undo(ticket)``."""
        first = SLICE_NS if timeout is None else min(SLICE_NS, max(0, int(timeout * 1e9)))
        rc = lib.shms_guard_acquire(self._g, first, ticket)
        return self.acquire_rest(rc, ticket, timeout, same_namespace) if rc else False

    def acquire_rest(self, rc: int, ticket: Any, timeout: float | None,
                     same_namespace: Callable[[], bool] | None = None) -> bool:
        """:meth:`acquire_level` after its first C call answered ``rc`` (not 0)."""
        g = self._g
        if rc in BUSY and timeout != 0:  # the wait proper, after a first slice
            rc = wait_in_slices(
                lambda ns: lib.shms_guard_acquire(g, max(1, ns), ticket), timeout,
                lambda: OwnerWatch(self.owner_tid, self.shmid, same_namespace, "lock"))
            if rc == 0:
                return False
        if rc == RECOVERED:
            return True
        raise failure(rc, "locking", lock=self._lock_name)
