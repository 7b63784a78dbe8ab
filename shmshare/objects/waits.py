"""Condition and Barrier for ``shmshare.Manager()``, on C records as in
:mod:`shmshare.objects.sync`: one call per operation, waits that sleep on the
record's futex without holding any lock.

Robustness: a Condition's waiters are a table of (process token, ticket)
entries; ``notify()`` picks the oldest live ones and frees a dead waiter's
entry, so it never spends a wake-up on a process that is gone.  A party of a
Barrier that dies while waiting breaks the barrier, so the others get
``threading.BrokenBarrierError`` instead of waiting forever.  At most 128
processes' threads wait on one Condition, or at one Barrier, at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._core import sync as csync
from .._core.slices import Deadline
from ..errors import ShmTypeError
from .codec import dumps, encode_key
from .sync import SharedLock, SharedRLock, _token, _Waitable

__all__ = ["SharedBarrier", "SharedCondition"]

_CONF = encode_key("conf")


class SharedCondition(_Waitable, kind="condition"):
    """``Condition(lock=None)``: wait, wait_for, notify, notify_all (RLock by default)."""
    _CODE = csync.CONDITION

    def __init__(self, lock: SharedLock | SharedRLock | None = None, *,
                 name: str | None = None, create: bool | None = None, project_dir: Any = None,
                 persist: bool = False, mode: int = 0o600, trust: bool = False,
                 url: str | None = None) -> None:
        if lock is not None and not isinstance(lock, (SharedLock, SharedRLock)):
            raise ShmTypeError(
                f"Condition(lock) needs a shared lock (a SharedLock or SharedRLock, e.g. "
                f"Manager().Lock()), not {type(lock).__module__}.{type(lock).__qualname__}: "
                "other processes cannot see a threading lock")
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url)
        if lock is None:
            lock = SharedRLock(project_dir=project_dir) if name is None else SharedRLock(
                name=f"{name}.lock", create=create, project_dir=project_dir, persist=persist,
                mode=mode, trust=trust)
        self._setup()
        self._user_lock = lock

    def __reduce__(self) -> tuple[Any, ...]:
        # The one reconstructor, and the user lock as state (set on the new handle).
        return (*super().__reduce__(), {"_user_lock": self._user_lock})

    # the underlying lock's API
    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return self._user_lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._user_lock.release()

    def __enter__(self) -> bool:  # type: ignore[override]  # with cond: the lock
        return self._user_lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._user_lock.release()

    def _get_waiting(self) -> int:
        """How many waiters are queued (for tests and repr)."""
        return self._r.cond_waiting()

    def _check_owned(self, what: str) -> None:
        if not self._user_lock._owned():
            raise RuntimeError(f"cannot {what} on un-acquired lock")

    def wait(self, timeout: float | None = None) -> bool:
        self._check_owned("wait")
        rec = self._r
        slot, ticket = rec.cond_enqueue(_token())  # queued before the lock is let go
        depth = self._user_lock._release_all()  # fully, as threading.Condition with an RLock
        notified = False
        try:
            notified = rec.cond_wait(slot, ticket, None if timeout is None else max(0, timeout))
        finally:
            notified = rec.cond_leave(slot, ticket) or notified
            self._user_lock._reacquire(depth)
        return notified

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        deadline = Deadline(timeout)
        result = predicate()
        while not result:
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        self._check_owned("notify")
        self._r.cond_notify(n)

    def notify_all(self) -> None:
        self.notify(1 << 30)


class SharedBarrier(_Waitable, kind="barrier"):
    """``Barrier(parties, action=None, timeout=None)`` as ``threading.Barrier``.

    ``action`` runs in the last process to arrive.
    """
    _CODE = csync.BARRIER

    def __init__(self, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False, url: str | None = None) -> None:
        if not isinstance(parties, int) or isinstance(parties, bool):
            raise ShmTypeError(f"parties must be an int, not {type(parties).__name__}")
        if parties < 1:
            raise ValueError("parties must be >= 1")
        if parties > csync.SLOTS + 1:
            raise ValueError(f"at most {csync.SLOTS + 1} parties")
        self._open(name=name, create=create, project_dir=project_dir, persist=persist,
                   mode=mode, trust=trust, url=url)
        self._heap.dict_set(_CONF[0], _CONF[1], dumps((action, timeout)), only_if_absent=True)
        self._setup(parties)

    def _conf(self) -> tuple[Callable[[], Any] | None, float | None]:
        data = self._read("conf")
        assert data is not None
        return self._loaded(data)  # type: ignore[no-any-return]

    @property
    def parties(self) -> int:
        return self._r.barrier_parties()

    @property
    def n_waiting(self) -> int:
        n, broken = self._r.barrier_state()
        return 0 if broken else n

    @property
    def broken(self) -> bool:
        return self._r.barrier_state()[1]

    def abort(self) -> None:
        self._r.barrier_abort()

    def reset(self) -> None:
        self._r.barrier_abort(reset=True)

    def wait(self, timeout: float | None = None) -> int:
        action, default_timeout = self._conf()
        if timeout is None:
            timeout = default_timeout
        rec = self._r
        state, index, gen = rec.barrier_arrive(_token())
        if state == 1:  # the last to arrive releases everyone
            if action is not None:
                try:
                    action()
                except BaseException:
                    rec.barrier_abort()
                    raise
            rec.barrier_pass()
            return index
        if state != 0:
            raise threading.BrokenBarrierError
        passed = rec.barrier_wait(gen, timeout)
        if passed is None:  # timed out: that breaks it for all, as in threading
            rec.barrier_abort()
            raise threading.BrokenBarrierError
        if not passed:
            raise threading.BrokenBarrierError
        return index
