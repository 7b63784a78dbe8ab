"""Event and Condition on a Redis store (Barrier: :mod:`.barrier`; the waits they
share, one wake list per waiter pushed by the script that changes the state:
:mod:`.waiters`).

- **Event**: ``set()`` wakes every waiter registered then, so a ``set()``
  followed at once by ``clear()`` still returns True to each of them, as in
  ``threading``.  Waiters need no lease: a dead one costs one list entry,
  dropped at the next ``set()``.
- **Condition**: a waiter registers (with a lease, renewed while it waits)
  before it lets go of the lock, so a ``notify()`` made by whoever takes the
  lock next reaches it; ``notify(n)`` wakes the ``n`` oldest waiters whose
  lease is alive, never a dead one.  The lock is a Redis Lock or RLock
  (an RLock by default, as in ``multiprocessing``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from shmshare.stores.redis import leases
from shmshare.stores.redis.barrier import Barrier
from shmshare.stores.redis.connection import RedisStore
from shmshare.stores.redis.lock import Lock, RLock
from shmshare.stores.redis.waiters import PUSH, Waits, check_lease, deadline_of, slice_of

__all__ = ["Barrier", "Condition", "Event"]


# --------------------------------------------------------------------- Event
# KEYS: flag, waiters.  ARGV: prefix.  -> number of waiters woken
_EV_SET = PUSH + """
redis.call('SET', KEYS[1], 1)
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
for _, id in ipairs(ids) do
  push_wake(ARGV[1], id, 1)
end
return #ids
"""

# KEYS: flag, waiters.  ARGV: waiter id.  -> 1 if set (not registered), else 0
_EV_BEGIN = """
if redis.call('GET', KEYS[1]) == '1' then return 1 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 0
"""

# KEYS: flag, waiters.  ARGV: prefix, waiter id.  -> 1 if woken meanwhile or set
_EV_CANCEL = PUSH + """
redis.call('LREM', KEYS[2], 0, ARGV[2])
local woken = redis.call('LPOP', ARGV[1] .. 'wake:' .. ARGV[2])
if woken or was_woken(ARGV[1], ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == '1' then return 1 end
return 0
"""


class Event(Waits):
    """``threading.Event`` named ``name`` on a Redis store."""

    def __init__(self, name: str, *, store: RedisStore) -> None:
        # (its own waiters list: a Lock of the same name has "waiters")
        super().__init__(name, store, ("flag", "ev-waiters"))
        self._set = store.script(_EV_SET)
        self._begin = store.script(_EV_BEGIN)
        self._cancel = store.script(_EV_CANCEL)

    def __reduce__(self) -> tuple[object, ...]:
        return (_event, (self.name, self.store))

    def is_set(self) -> bool:
        with self.store.unavailable(f"is_set {self.name!r}"):
            return self.store.client.get(self._keys[0]) == b"1"

    def set(self) -> None:
        self._set(self._keys, [self._prefix], f"set {self.name!r}")

    def clear(self) -> None:
        with self.store.unavailable(f"clear {self.name!r}"):
            self.store.client.set(self._keys[0], 0)

    def wait(self, timeout: float | None = None) -> bool:
        """True once set (or if it was set at any moment while waiting), else False."""
        deadline = deadline_of(timeout)
        waiter = uuid.uuid4().hex
        if self._begin(self._keys, [waiter], f"wait on {self.name!r}"):
            return True
        try:
            while (seconds := slice_of(deadline)) > 0:
                if self._block(waiter, seconds, deadline) is not None:
                    return True
        except BaseException:
            self._cancel(self._keys, [self._prefix, waiter], f"wait on {self.name!r}")
            raise
        return bool(self._cancel(self._keys, [self._prefix, waiter], f"wait on {self.name!r}"))


def _event(name: str, store: RedisStore) -> Event:
    return Event(name, store=store)


# ----------------------------------------------------------------- Condition
# KEYS: waiters.  ARGV: prefix, waiter id, lease_ms
_CV_REGISTER = """
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('SET', ARGV[1] .. 'alive:' .. ARGV[2], 1, 'PX', ARGV[3])
return 1
"""

# ARGV: prefix, waiter id, lease_ms.  -> 1 renewed, 0 gone (woken or cancelled)
_CV_RENEW = """
local k = ARGV[1] .. 'alive:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('PEXPIRE', k, ARGV[3])
return 1
"""

# KEYS: waiters.  ARGV: prefix, n.  -> number woken.  Dead waiters are dropped.
_CV_NOTIFY = PUSH + """
local woken = 0
local n = tonumber(ARGV[2])
while woken < n do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  if redis.call('DEL', ARGV[1] .. 'alive:' .. id) == 1 then
    push_wake(ARGV[1], id, 1)
    woken = woken + 1
  end
end
return woken
"""

# KEYS: waiters.  ARGV: prefix, waiter id.  -> 1 if it was notified meanwhile
_CV_CANCEL = PUSH + """
redis.call('LREM', KEYS[1], 0, ARGV[2])
redis.call('DEL', ARGV[1] .. 'alive:' .. ARGV[2])
if redis.call('LPOP', ARGV[1] .. 'wake:' .. ARGV[2]) then return 1 end
if was_woken(ARGV[1], ARGV[2]) then return 1 end
return 0
"""

_MANY = 1 << 30


class Condition(Waits):
    """``threading.Condition`` named ``name`` on a Redis store, over a Redis lock."""

    def __init__(self, name: str, lock: Lock | None = None, *, store: RedisStore,
                 lease: float = 10.0) -> None:
        check_lease(lease)
        if lock is None:
            lock = RLock(f"{name}.lock", store=store, lease=lease)
        elif not isinstance(lock, Lock):
            raise TypeError(f"Condition(lock) needs a Redis Lock or RLock, not "
                            f"{type(lock).__module__}.{type(lock).__qualname__}")
        super().__init__(name, store, ("cv-waiters",))
        self.lock, self.lease = lock, lease
        self._register = store.script(_CV_REGISTER)
        self._renew = store.script(_CV_RENEW)
        self._notify = store.script(_CV_NOTIFY)
        self._cancel = store.script(_CV_CANCEL)

    def __reduce__(self) -> tuple[object, ...]:
        return (_condition, (self.name, self.lock, self.store, self.lease))

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def _must_hold(self, doing: str) -> None:
        if not self.lock.held_by_me():
            raise RuntimeError(f"cannot {doing} on un-acquired lock")

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified or ``timeout``, take the lock again."""
        self._must_hold("wait")
        deadline = deadline_of(timeout)
        waiter, lease_ms = uuid.uuid4().hex, int(self.lease * 1000)
        doing = f"wait on {self.name!r}"
        self._register(self._keys, [self._prefix, waiter, lease_ms], doing)
        # (KEYS names the waiters list, though the script only uses ARGV: a cluster
        # client sends a script to the node of its first key.)
        hold = leases.hold(lambda: bool(self._renew(self._keys, [self._prefix, waiter, lease_ms],
                                                     doing)), self.lease,
                           group=self.store.address.url)
        saved = self.lock._release_save()
        notified = False
        try:
            while not notified and (seconds := slice_of(deadline)) > 0:
                notified = self._block(waiter, seconds, deadline) is not None
        finally:
            leases.release(hold)
            if not notified:
                notified = bool(self._cancel(self._keys, [self._prefix, waiter], doing))
            self.lock._acquire_restore(saved)
        return notified

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        deadline = deadline_of(timeout)
        result = predicate()
        while not result:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.wait(left)
            else:
                self.wait()
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        self._must_hold("notify")
        if n > 0:
            self._notify(self._keys, [self._prefix, n], f"notify {self.name!r}")

    def notify_all(self) -> None:
        self.notify(_MANY)

    notifyAll = notify_all  # threading's old name


def _condition(name: str, lock: Lock, store: RedisStore, lease: float) -> Condition:
    return Condition(name, lock, store=store, lease=lease)
