"""Typed wrappers over ``src/sync.c``: the records of the sync primitives.

One :class:`SyncRecord` per Lock/RLock/Semaphore/Event/Condition/Barrier:
each method is one C call on the record (plus, while it waits, one per
wait slice of at most 0.1 s so that Ctrl-C and deadlines are seen).  Waits
pass ``timeout``: None waits forever, 0 tries once.  Holders and waiters
are named by process tokens (:mod:`.proc`).
"""

from __future__ import annotations

import errno
import functools
import time
from collections.abc import Callable
from typing import Any

from ..errors import ShmLimitError
from . import proc
from ._exitcall import ExitCall, FastCall
from ._lib import ffi, lib
from .heap import Heap
from .results import BUSY, DETACHED, EUNKNOWN, failure
from .results import RECOVERED as _RECOVERED
from .slices import SLICE_NS, Deadline, wait_in_slices

__all__ = ["BARRIER", "CONDITION", "EVENT", "LOCK", "RECOVERED", "RLOCK", "SEMAPHORE",
           "RLockState", "SyncRecord"]

LOCK, RLOCK, SEMAPHORE, EVENT, CONDITION, BARRIER = 1, 2, 3, 4, 5, 6
RECOVERED = 1  # acquire's result when the lock was taken from a dead holder
SLOTS = 128    # semaphore holders, condition waiters, barrier parties (sync.c)

_UNUSED = ffi.new("uint64_t *")  # the freed count a Lock's take never writes
_EXIT_ADDRESS = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_sync_exit")))
_FAST_TAKE_ADDRESS = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_sync_fast_take")))
_SEM_ACQUIRE_ADDRESS = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_sem_fast_acquire")))
_SEM_RELEASE_ADDRESS = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_sem_fast_release")))

class RLockState:
    """This process's holder thread and depth of one RLock record, shared by every
    handle of the record in the process and kept in C (src/sync_guard.c)."""

    __slots__ = ("__weakref__", "cell")

    def __init__(self) -> None:
        self.cell = ffi.new("uint64_t[2]")

    def forget(self) -> None:
        """In a forked child: the parent's holding thread does not exist here."""
        self.cell[0] = self.cell[1] = 0


class SyncRecord:
    """The record stored under ``key`` in ``heap`` (created zeroed if absent)."""

    __slots__ = ("_g", "_heap", "_inflight", "_inflight_gen", "_other", "_r", "_state", "exit",
                 "kind", "new_ticket", "release_level", "undo")

    def __init__(self, heap: Heap, key: bytes, cmp_len: int, kind: int, value: int = 0,
                 bound: int = 0, *, held: bool = False) -> None:
        heap.dict_set(key, cmp_len, bytes(int(lib.shms_sync_size())), only_if_absent=True,
                      held=held)
        out = ffi.new("void **")
        h = heap._handle()

        def call(held: bool) -> int:
            return int(lib.shms_sync_open(h, key, len(key), cmp_len, kind, value, bound, out,
                                          held, SLICE_NS))

        heap._until_done("opening a sync record", call, call(held), held)
        self._r = out[0]
        self._heap = heap
        self._inflight = 0  # threads of this process inside a blocking call (_waiting)
        self._inflight_gen = lib.shms_fork_generation
        self.kind = kind
        # The holder a call could not judge (SHMS_EUNKNOWN): a hint only, so the
        # threads sharing this object may share it too.
        self._other = ffi.new("uint64_t *")
        # A Lock, or a Semaphore's held permit, taken and given back where Python
        # cannot interrupt in between (src/sync_guard.c; the ticket protocol of
        # guard.py): ``take``, then ``undo(ticket)`` in the handler of a try
        # around everything after it; ``exit`` is ``with``'s __exit__ (C, no frame).
        g = self._g = ffi.new("shms_sync_guard_t *")
        g.rec, g.kind = self._r, kind
        self.new_ticket = functools.partial(ffi.new, "int64_t *")
        self.undo = functools.partial(lib.shms_sync_undo, g)
        self.exit = ExitCall(int(ffi.cast("uintptr_t", g)), _EXIT_ADDRESS)
        #: ``release_level() -> 0 | EPERM | EINVAL``: give one back (C, no frame).
        self.release_level = functools.partial(lib.shms_sync_exit, g)
        self._state: RLockState | None = None

    def exit_keeping(self, obj: object) -> ExitCall:
        """``exit``, holding ``obj`` (and this record, through it) while it lives: what
        ``with`` keeps of a temporary object (``with SharedLock(name=...):``), whose
        memory must stay mapped until the block's end gives the lock back."""
        return ExitCall(int(ffi.cast("uintptr_t", self._g)), _EXIT_ADDRESS, obj)

    def fast_take(self, full: Callable[[], Any], max_args: int) -> FastCall:
        """A Lock's or RLock's acquire (or ``__enter__``) as a C callable: the
        uncontended take (src/sync_guard.c, shms_sync_fast_take) answers True
        with no Python frame; anything else -- held, recovery, no token yet,
        more than ``max_args`` arguments -- runs ``full()(*args, **kwargs)``
        (``full``: a weakref.WeakMethod of the full operation)."""
        g = self._g
        return FastCall(int(ffi.cast("uintptr_t", g)), _FAST_TAKE_ADDRESS, full, True,
                        max_args, g)

    def fast_sem(self, acquire: Callable[[], Any],
                 release: Callable[[], Any]) -> tuple[FastCall, FastCall]:
        """A Semaphore's ``acquire()`` (a permit consumed) and ``release()`` of one
        permit as C callables (src/semaphore.c, FAST PATHS): True, None; anything
        but the uncontended case -- other arguments, no permit left, over the bound
        -- runs ``acquire()(*args, **kwargs)`` or ``release()(...)``, as fast_take."""
        g = self._g
        address = int(ffi.cast("uintptr_t", g))
        return (FastCall(address, _SEM_ACQUIRE_ADDRESS, acquire, True, 1, g),
                FastCall(address, _SEM_RELEASE_ADDRESS, release, None, 0, g))

    def fast_release(self, full: Callable[[], Any]) -> FastCall:
        """Release as a C callable: one level given back (shms_sync_exit), None;
        when that fails (not held, closed), ``full()()`` runs and raises."""
        g = self._g
        return FastCall(int(ffi.cast("uintptr_t", g)), _EXIT_ADDRESS, full, None, 0, g)

    def share_state(self, state: RLockState) -> None:
        """An RLock: keep its holder and depth in ``state`` (one per record and process)."""
        self._state = state
        self._g.state = state.cell

    def depth(self) -> int:
        """An RLock: the calling thread's depth (0: it does not hold it)."""
        return int(lib.shms_sync_depth(self._g))

    def release_all(self) -> int:
        """An RLock: give back every level of the calling thread; the depth it had."""
        return int(lib.shms_sync_release_all(self._g))

    def set_depth(self, depth: int) -> None:
        """An RLock just taken again (Condition.wait): the depth it had before."""
        lib.shms_sync_set_depth(self._g, depth)

    def address(self) -> int:
        """Where the record is mapped in this process (one per record and process)."""
        return int(ffi.cast("uintptr_t", self._r))

    def close(self) -> None:
        """Forget the record (its heap is being detached): later calls raise ValueError.

        Threads of this process sleeping on the record are woken first and
        waited for (each returns from C within one wake), so none touches the
        record's memory after it is unmapped.
        """
        r = self._r
        if r == ffi.NULL:
            return
        self._g.rec = ffi.NULL  # a later exit or undo does nothing
        # Forgotten first: a sleeper kicked awake calls again with NULL, which every
        # call refuses (EINVAL: detached), and leaves.  (Forgotten last, it went
        # back to sleep on the record, and was still inside when the memory went.)
        self._r = ffi.NULL
        deadline = Deadline(1.0)
        while self._waiting(0) and not deadline.passed():
            lib.shms_sync_kick(r)
            time.sleep(0.001)

    def _waiting(self, n: int) -> int:
        """Count a blocking call of this process in (1) or out (-1); how many are
        inside.  A forked child copies its parent's count, of threads it does not
        have: a count of an earlier fork generation is nobody (the generation
        the heap handles count theirs in: src/heap_int.h, calls inside a handle)."""
        gen = lib.shms_fork_generation
        if self._inflight_gen != gen:
            self._inflight, self._inflight_gen = 0, gen
        self._inflight += n
        return self._inflight

    def _live(self) -> Any:
        if self._r == ffi.NULL:
            raise ValueError(DETACHED)
        return self._r

    def _error(self, rc: int, what: str) -> Exception:
        """The exception for ``rc`` (a closed record's calls answer EINVAL)."""
        if rc == errno.EINVAL and self._r == ffi.NULL:
            return ValueError(DETACHED)
        return failure(rc, what, lock="the lock")

    def _fail(self, rc: int, what: str) -> None:
        """Return to retry after learning an unknown holder's table; else raise."""
        if rc == EUNKNOWN:
            proc.learn(int(self._other[0]))
            return
        raise self._error(rc, what)

    def _wait(self, call: Callable[[int], int], timeout: float | None) -> int | None:
        """The one wait of a record: ``call(ns)`` in slices (:func:`wait_in_slices`)
        until it returns a code other than busy, which is returned; None if
        ``timeout`` passed first.  EUNKNOWN: learn the holder's process table
        and call again."""
        def learning(ns: int) -> int:
            rc = call(ns)
            while rc == EUNKNOWN:
                proc.learn(int(self._other[0]))
                rc = call(ns)
            return rc

        self._waiting(1)
        try:
            rc = wait_in_slices(learning, timeout)
        finally:
            self._waiting(-1)
        return None if rc in BUSY else rc

    def sleepers(self) -> int:
        """Threads (of any process) asleep on the record now; for tests."""
        return int(lib.shms_sync_sleepers(self._live()))

    @property
    def recoveries(self) -> int:
        """Dead holders given back, by all processes."""
        return int(lib.shms_sync_recoveries(self._live()))

    # ------------------------------------------------------------ Lock, RLock
    def lock_acquire(self, token: int, timeout: float | None) -> int | None:
        """0 taken, RECOVERED taken from a dead holder, None not in time."""
        rc = lib.shms_lock_acquire(self._r, self.kind, token, 0, self._other)
        if rc == 0:
            return 0                    # the uncontended path: one C call
        if rc in BUSY or rc == EUNKNOWN:
            got = self._wait(lambda ns: lib.shms_lock_acquire(self._r, self.kind, token, ns,
                                                              self._other), timeout)
            if got is None or got == 0:
                return got
            rc = got
        if rc == _RECOVERED:
            return RECOVERED
        raise self._error(rc, "acquiring the lock")

    def take(self, token: int, timeout: float | None, ticket: Any) -> int | None:
        """Take the Lock (or a held Semaphore permit), setting ``ticket[0]`` in the
        same C call: 0 taken, > 0 taken after giving back a dead holder's (a
        Lock: RECOVERED; a Semaphore: the permits freed), None not in time."""
        # A Lock's take never writes freed: only a Semaphore's needs its own.
        freed = ffi.new("uint64_t *") if self.kind == SEMAPHORE else _UNUSED
        g = self._g
        rc = lib.shms_sync_take(g, token, 0, freed, self._other, ticket)
        if rc == 0:
            return int(freed[0])        # the uncontended path: one C call
        if rc in BUSY or rc == EUNKNOWN:
            got = self._wait(lambda ns: lib.shms_sync_take(g, token, ns, freed, self._other,
                                                           ticket), timeout)
            if got is None:
                return None
            rc = got
        if rc == 0:
            return int(freed[0])
        if rc == _RECOVERED:
            return RECOVERED
        raise self._error(rc, "acquiring the lock")

    def lock_release(self, token: int, anyone: bool) -> bool:
        """False if not held (by ``token``, unless ``anyone`` may release)."""
        rc = lib.shms_lock_release(self._r, self.kind, token, anyone)
        if rc == 0:
            return True
        if rc == errno.EPERM:
            return False
        self._fail(rc, "releasing the lock")
        return False

    def lock_owner(self) -> int:
        return int(lib.shms_lock_owner(self._live()))

    # -------------------------------------------------------------- Semaphore
    def sem_acquire(self, token: int, held: bool, timeout: float | None) -> int | None:
        """Permits given back from dead holders (>= 0) once one is taken; None if not in time."""
        freed = ffi.new("uint64_t *")  # per call: threads share the record object
        rc = lib.shms_sem_acquire(self._r, token, held, 0, freed, self._other)
        if rc == 0:
            return int(freed[0])        # the uncontended path: one C call
        if rc in BUSY or rc == EUNKNOWN:
            rc = self._wait(lambda ns: lib.shms_sem_acquire(self._r, token, held, ns, freed,
                                                            self._other), timeout)
        if rc is None:
            return None
        if rc:
            raise self._error(rc, "acquiring the semaphore")
        return int(freed[0])

    def sem_release(self, token: int, n: int) -> bool:
        """False if that would exceed a BoundedSemaphore's bound (nothing changed)."""
        rc = lib.shms_sem_release(self._r, token, n)
        if rc == errno.EINVAL:
            return False
        if rc:
            self._fail(rc, "releasing the semaphore")
        return True

    def sem_value(self) -> int:
        return int(lib.shms_sem_value(self._live()))

    # ------------------------------------------------------------------ Event
    def event_set(self, flag: bool) -> None:
        rc = lib.shms_event_set(self._r, int(flag))
        if rc:
            self._fail(rc, "setting the event")

    def event_is_set(self) -> bool:
        return bool(lib.shms_sem_value(self._live()))

    def event_wait(self, timeout: float | None) -> bool:
        gen = lib.shms_event_gen(self._live())
        rc = self._wait(lambda ns: lib.shms_event_wait(self._r, gen, ns), timeout)
        if rc:
            raise self._error(rc, "waiting for the event")
        return rc is not None

    # -------------------------------------------------------------- Condition
    def cond_enqueue(self, token: int) -> tuple[int, int]:
        ticket = ffi.new("uint64_t *")
        slot = lib.shms_cond_enqueue(self._live(), token, ticket)
        if slot < 0:
            raise ShmLimitError(f"more than {SLOTS} waiters on one Condition")
        return int(slot), int(ticket[0])

    def cond_wait(self, slot: int, ticket: int, timeout: float | None) -> bool:
        """True once notified, False if not in time (the slot stays queued)."""
        rc = self._wait(lambda ns: lib.shms_cond_wait(self._r, slot, ticket, ns), timeout)
        if rc:
            raise self._error(rc, "waiting on the condition")
        return rc is not None

    def cond_leave(self, slot: int, ticket: int) -> bool:
        return bool(lib.shms_cond_leave(self._r, slot, ticket))

    def cond_notify(self, n: int) -> None:
        rc = lib.shms_cond_notify(self._r, n)
        if rc:
            self._fail(rc, "notifying the condition")

    def cond_waiting(self) -> int:
        return int(lib.shms_cond_waiting(self._live()))

    # ---------------------------------------------------------------- Barrier
    def barrier_arrive(self, token: int) -> tuple[int, int, int]:
        """(0 wait / 1 last / errno.EPIPE broken, index, generation)."""
        idx, gen = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        rc = lib.shms_barrier_arrive(self._live(), token, idx, gen)
        if rc == errno.ENOSPC:
            raise ShmLimitError(f"more than {SLOTS} parties waiting at one Barrier")
        return int(rc), int(idx[0]), int(gen[0])

    def barrier_wait(self, gen: int, timeout: float | None) -> bool | None:
        """True passed, False broken or reset, None not in time."""
        rc = self._wait(lambda ns: lib.shms_barrier_wait(self._r, gen, ns, self._other), timeout)
        if rc is None:
            return None
        if rc == errno.EPIPE:
            return False
        if rc:
            raise self._error(rc, "waiting at the barrier")
        return True

    def barrier_pass(self) -> None:
        lib.shms_barrier_pass(self._live())

    def barrier_abort(self, reset: bool = False) -> None:
        lib.shms_barrier_abort(self._live(), int(reset))

    def barrier_parties(self) -> int:
        return int(lib.shms_sem_value(self._live()))

    def barrier_state(self) -> tuple[int, bool]:
        """(parties waiting now, broken)."""
        broken = ffi.new("uint64_t *")
        n = lib.shms_barrier_state(self._live(), broken)
        return int(n), bool(broken[0])
