"""Condition and Barrier for ``shmshare.Manager()``, on the same mechanism as
:mod:`shmshare.objects.sync`: a state record on the object's heap, changed
under its robust lock, and waits that sleep on the heap's change futex
without holding that lock.

Robustness: a waiter whose process is gone is dropped from the Condition's
queue, so ``notify()`` never spends a wake-up on a dead process; a party of a
Barrier that dies while waiting breaks the barrier, so the others get
``threading.BrokenBarrierError`` instead of waiting forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .._core import proc
from .codec import dumps
from .sync import SharedLock, SharedRLock, _Waitable

__all__ = ["SharedBarrier", "SharedCondition"]


class SharedCondition(_Waitable):
    """``Condition(lock=None)``: wait, wait_for, notify, notify_all (RLock by default).

    State: ``(next_ticket, waiting [(ticket, pid)], notified [ticket])``.
    """

    KIND = "condition"

    def __init__(self, lock: SharedLock | SharedRLock | None = None, *,
                 name: str | None = None, create: bool | None = None, project_dir: Any = None,
                 persist: bool = False, mode: int = 0o600, trust: bool = False) -> None:
        super().__init__(name, create=create, project_dir=project_dir, persist=persist,
                         mode=mode, trust=trust)
        if lock is None:
            lock = SharedRLock(project_dir=project_dir) if name is None else SharedRLock(
                name=f"{name}.lock", create=create, project_dir=project_dir, persist=persist,
                mode=mode, trust=trust)
        self._setup((0, [], []))
        self._user_lock = lock

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_condition, (super().__reduce__(), self._user_lock))

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
        with self.lock:
            return len(self._get()[1])

    def _check_owned(self, what: str) -> int:
        depth = self._user_lock._owned()
        if not depth:
            raise RuntimeError(f"cannot {what} on un-acquired lock")
        return depth

    def wait(self, timeout: float | None = None) -> bool:
        depth = self._check_owned("wait")
        pid = proc.token()
        with self.lock:
            ticket, waiting, notified = self._get()
            self._put((ticket + 1, [*waiting, (ticket, pid)], notified))
        for _ in range(depth):  # release fully, as threading.Condition does for an RLock
            self._user_lock.release()
        deadline = self._deadline(True, timeout)
        try:
            with self.lock:
                while True:
                    nxt, waiting, notified = self._get()
                    if ticket in notified:
                        notified.remove(ticket)
                        self._put((nxt, waiting, notified))
                        return True
                    if deadline is not None and time.monotonic() >= deadline:
                        self._put((nxt, [w for w in waiting if w[0] != ticket], notified))
                        return False
                    self._wait_locked(deadline)
        finally:
            for _ in range(depth):
                self._user_lock.acquire()

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        deadline = self._deadline(True, timeout)
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        self._check_owned("notify")
        with self.lock:
            nxt, waiting, notified = self._get()
            live = [w for w in waiting if proc.alive(w[1])]  # never wake a dead process
            woken, rest = live[:n], live[n:]
            self._put((nxt, rest, notified + [t for t, _ in woken]))

    def notify_all(self) -> None:
        self.notify(1 << 30)


def _rebuild_condition(parent: tuple[Any, tuple[Any, ...]], lock: Any) -> SharedCondition:
    fn, args = parent
    cond: SharedCondition = fn(*args)
    cond._user_lock = lock
    return cond


class SharedBarrier(_Waitable):
    """``Barrier(parties, action=None, timeout=None)`` as ``threading.Barrier``.

    ``action`` runs in the last process to arrive.  State: ``(count,
    generation, broken, waiting pids, generations that were reset)``.
    """

    KIND = "barrier"

    def __init__(self, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False) -> None:
        if parties < 1:
            raise ValueError("parties must be >= 1")
        super().__init__(name, create=create, project_dir=project_dir, persist=persist,
                         mode=mode, trust=trust)
        from .codec import encode_key

        conf = encode_key("conf")
        self._heap.dict_set(conf[0], conf[1], dumps((parties, action, timeout)),
                            only_if_absent=True)
        self._setup((0, 0, False, [], []))

    def _conf(self) -> tuple[int, Callable[[], Any] | None, float | None]:
        from .codec import loads

        data = self._read("conf")
        assert data is not None
        return loads(data)  # type: ignore[no-any-return]

    @property
    def parties(self) -> int:
        return self._conf()[0]

    @property
    def n_waiting(self) -> int:
        with self.lock:
            count, _, broken, _, _ = self._get()
        return 0 if broken else int(count)

    @property
    def broken(self) -> bool:
        with self.lock:
            return bool(self._get()[2])

    def abort(self) -> None:
        with self.lock:
            count, gen, _, waiting, resets = self._get()
            self._put((count, gen, True, waiting, resets))

    def reset(self) -> None:
        with self.lock:
            count, gen, _, _, resets = self._get()
            # Waiters of the current generation see it end as "reset": broken for them.
            self._put((0, gen + 1, False, [], [*resets[-9:], gen] if count else resets))

    def wait(self, timeout: float | None = None) -> int:
        parties, action, default_timeout = self._conf()
        if timeout is None:
            timeout = default_timeout
        deadline = self._deadline(True, timeout)
        with self.lock:
            count, gen, broken, waiting, resets = self._get()
            if broken:
                raise threading.BrokenBarrierError
            index = int(count)
            if count + 1 == parties:  # the last to arrive releases everyone
                if action is not None:
                    try:
                        action()
                    except BaseException:
                        self._put((count, gen, True, waiting, resets))
                        raise
                self._put((0, gen + 1, False, [], resets))
                return index
            self._put((count + 1, gen, False, [*waiting, proc.token()], resets))
            while True:
                count, now, broken, waiting, resets = self._get()
                if now != gen:
                    if gen in resets:
                        raise threading.BrokenBarrierError
                    return index
                dead = [p for p in waiting if not proc.alive(p)]
                timed_out = deadline is not None and time.monotonic() >= deadline
                if broken or dead or timed_out:
                    self._put((count, gen, True, waiting, resets))  # breaks it for all
                    raise threading.BrokenBarrierError
                self._wait_locked(deadline)
