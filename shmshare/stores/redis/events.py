"""Event, Condition and Barrier on a Redis store, with the waits of :mod:`.lock`.

Every waiter has an id and blocks in BLPOP on its own list ``wake:<id>``
(per-waiter lists keep a wake-up that arrives while the waiter reconnects;
pub/sub would lose it).  Each wake-up is pushed by one Lua script, in the
same step that changes the state, so no wake-up falls between a waiter's
check of the state and its sleep:

- **Event**: ``set()`` wakes every waiter registered then, so a ``set()``
  followed at once by ``clear()`` still returns True to each of them, as in
  ``threading``.  Waiters need no lease: a dead one costs one list entry,
  dropped at the next ``set()``.
- **Condition**: a waiter registers (with a lease, renewed while it waits)
  before it lets go of the lock, so a ``notify()`` made by whoever takes the
  lock next reaches it; ``notify(n)`` wakes the ``n`` oldest waiters whose
  lease is alive, never a dead one.  The lock is a Redis Lock or RLock
  (an RLock by default, as in ``multiprocessing``).
- **Barrier**: an arrival is a leased entry; the last party runs ``action``
  under a lease of its own and then releases the others.  A party whose
  lease ends while it waits (it died, or was cut off) breaks the barrier, as
  a dead party does in shared memory: the others get BrokenBarrierError one
  lease later instead of waiting forever.  A timeout breaks it too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from shmshare.stores.redis import leases
from shmshare.stores.redis.connection import MAX_BLOCK, RedisStore
from shmshare.stores.redis.lock import PRELUDE, Lock, RLock

__all__ = ["Barrier", "Condition", "Event"]

# Pushes a wake-up to one waiter; one its waiter never took (it died) expires.
_PUSH = """
local function push_wake(prefix, id, msg)
  redis.call('RPUSH', prefix .. 'wake:' .. id, msg)
  redis.call('PEXPIRE', prefix .. 'wake:' .. id, 60000)
end
"""


def _check_lease(lease: float) -> None:
    if lease <= 0.1:
        raise ValueError(f"lease must be longer than 0.1 s, not {lease!r}")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None or timeout < 0 else time.monotonic() + timeout


def _slice(deadline: float | None, longest: float = MAX_BLOCK) -> float:
    """Seconds to block next (> 0), or 0 once ``deadline`` has passed."""
    if deadline is None:
        return longest
    left = deadline - time.monotonic()
    return 0.0 if left <= 0 else max(0.01, min(longest, left))


class _Waits:
    """What the three share: the store, key names, and blocking on one's wake list."""

    def __init__(self, name: str, store: RedisStore, parts: tuple[str, ...]) -> None:
        self.name, self.store = name, store
        self._prefix = store.key(name, "")
        self._keys = [store.key(name, part) for part in parts]

    def _block(self, waiter: str, seconds: float) -> bytes | None:
        """Wait up to ``seconds`` for a wake-up pushed to ``waiter``; its payload or None."""
        with self.store.unavailable(f"wait on {self.name!r}"):
            got = self.store.blocking_client.blpop([self._prefix + "wake:" + waiter], seconds)
        if got is None:
            return None
        payload = got[1]
        return payload if isinstance(payload, bytes) else str(payload).encode()

    def destroy(self) -> None:
        """Delete this object's keys from the server."""
        with self.store.unavailable(f"destroy {self.name!r}"):
            self.store.client.delete(*self._keys)


# --------------------------------------------------------------------- Event
# KEYS: flag, waiters.  ARGV: prefix.  -> number of waiters woken
_EV_SET = _PUSH + """
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
_EV_CANCEL = """
redis.call('LREM', KEYS[2], 0, ARGV[2])
local woken = redis.call('LPOP', ARGV[1] .. 'wake:' .. ARGV[2])
if woken then return 1 end
if redis.call('GET', KEYS[1]) == '1' then return 1 end
return 0
"""


class Event(_Waits):
    """``threading.Event`` named ``name`` on a Redis store."""

    def __init__(self, name: str, *, store: RedisStore) -> None:
        super().__init__(name, store, ("flag", "waiters"))
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
        deadline = _deadline(timeout)
        waiter = uuid.uuid4().hex
        if self._begin(self._keys, [waiter], f"wait on {self.name!r}"):
            return True
        try:
            while (seconds := _slice(deadline)) > 0:
                if self._block(waiter, seconds) is not None:
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
_CV_NOTIFY = _PUSH + """
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
_CV_CANCEL = """
redis.call('LREM', KEYS[1], 0, ARGV[2])
redis.call('DEL', ARGV[1] .. 'alive:' .. ARGV[2])
if redis.call('LPOP', ARGV[1] .. 'wake:' .. ARGV[2]) then return 1 end
return 0
"""

_MANY = 1 << 30


class Condition(_Waits):
    """``threading.Condition`` named ``name`` on a Redis store, over a Redis lock."""

    def __init__(self, name: str, lock: Lock | None = None, *, store: RedisStore,
                 lease: float = 10.0) -> None:
        _check_lease(lease)
        if lock is None:
            lock = RLock(f"{name}.lock", store=store, lease=lease)
        elif not isinstance(lock, Lock):
            raise TypeError(f"Condition(lock) needs a Redis Lock or RLock, not "
                            f"{type(lock).__module__}.{type(lock).__qualname__}")
        super().__init__(name, store, ("waiters",))
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
        deadline = _deadline(timeout)
        waiter, lease_ms = uuid.uuid4().hex, int(self.lease * 1000)
        doing = f"wait on {self.name!r}"
        self._register(self._keys, [self._prefix, waiter, lease_ms], doing)
        hold = leases.hold(lambda: bool(self._renew([], [self._prefix, waiter, lease_ms],
                                                     doing)), self.lease)
        saved = self.lock._release_save()
        notified = False
        try:
            while not notified and (seconds := _slice(deadline)) > 0:
                notified = self._block(waiter, seconds) is not None
        finally:
            leases.release(hold)
            if not notified:
                notified = bool(self._cancel(self._keys, [self._prefix, waiter], doing))
            self.lock._acquire_restore(saved)
        return notified

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        deadline = _deadline(timeout)
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


# ------------------------------------------------------------------- Barrier
_BREAK = PRELUDE + _PUSH + """
local function break_all(st, arrived, prefix, how)
  local ids = redis.call('ZRANGE', arrived, 0, -1)
  redis.call('DEL', arrived)
  redis.call('HDEL', st, 'releasing')
  if how == 'reset' then
    redis.call('HDEL', st, 'broken')
  else
    redis.call('HSET', st, 'broken', 1)
  end
  redis.call('HINCRBY', st, 'gen', 1)
  for _, id in ipairs(ids) do
    push_wake(prefix, id, 'broken')
  end
end
-- A party whose lease ended died waiting, or the last one died in its action.
local function dead_party(st, arrived, t)
  local rel = redis.call('HGET', st, 'releasing')
  if rel and tonumber(rel) <= t then return true end
  return redis.call('ZCOUNT', arrived, '-inf', t) > 0
end
"""

# KEYS: state, arrived.  ARGV: prefix, parties, waiter id, lease_ms
# -> {0, index, gen} waiting; {1, index, gen} last (run action, then pass);
#    {-1} broken; {-2} the previous round is still being released (retry)
_BAR_ARRIVE = _BREAK + """
local t = now_ms()
local st, arrived = KEYS[1], KEYS[2]
if redis.call('HGET', st, 'broken') == '1' then return {-1} end
if dead_party(st, arrived, t) then break_all(st, arrived, ARGV[1], 'break'); return {-1} end
if redis.call('HGET', st, 'releasing') then return {-2} end
local n = redis.call('ZCARD', arrived)
local gen = tonumber(redis.call('HGET', st, 'gen') or '0')
if n + 1 >= tonumber(ARGV[2]) then
  redis.call('HSET', st, 'releasing', t + tonumber(ARGV[4]))
  return {1, n, gen}
end
redis.call('ZADD', arrived, t + tonumber(ARGV[4]), ARGV[3])
return {0, n, gen}
"""

# KEYS: state, arrived.  ARGV: prefix.  The last party lets the others go.
_BAR_PASS = _PUSH + """
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], 'releasing')
redis.call('HINCRBY', KEYS[1], 'gen', 1)
for _, id in ipairs(ids) do
  push_wake(ARGV[1], id, 'pass')
end
return #ids
"""

# KEYS: state, arrived.  ARGV: prefix, 'break' or 'reset'
_BAR_ABORT = _BREAK + """
break_all(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS: state, arrived.  ARGV: prefix, waiter id ('' for the releasing party),
# lease_ms, gen.  Renews the lease; breaks the barrier for a dead party.
# -> 1 renewed, 0 no longer waiting (a wake-up tells why)
_BAR_RENEW = _BREAK + """
local t = now_ms()
local st, arrived = KEYS[1], KEYS[2]
if tonumber(redis.call('HGET', st, 'gen') or '0') ~= tonumber(ARGV[4]) then return 0 end
if dead_party(st, arrived, t) then break_all(st, arrived, ARGV[1], 'break'); return 0 end
if ARGV[2] == '' then
  if not redis.call('HGET', st, 'releasing') then return 0 end
  redis.call('HSET', st, 'releasing', t + tonumber(ARGV[3]))
  return 1
end
if not redis.call('ZSCORE', arrived, ARGV[2]) then return 0 end
redis.call('ZADD', arrived, t + tonumber(ARGV[3]), ARGV[2])
return 1
"""

# KEYS: state, arrived.  ARGV: prefix, waiter id.  A waiter timing out breaks
# the barrier unless it was released (or broken) first.  -> 'pass' or 'broken'
_BAR_TIMEOUT = _BREAK + """
local woken = redis.call('LPOP', ARGV[1] .. 'wake:' .. ARGV[2])
if woken then return woken end
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then break_all(KEYS[1], KEYS[2], ARGV[1], 'break') end
redis.call('DEL', ARGV[1] .. 'wake:' .. ARGV[2])
return 'broken'
"""

_RETRY = 0.01  # seconds between arrivals while the previous round is released


class Barrier(_Waits):
    """``threading.Barrier(parties, action, timeout)`` named ``name`` on a Redis store.

    ``action`` runs in the last party to arrive, before the others go.
    """

    def __init__(self, name: str, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None, *, store: RedisStore,
                 lease: float = 10.0) -> None:
        if not isinstance(parties, int) or isinstance(parties, bool) or parties < 1:
            raise ValueError(f"parties must be an int >= 1, not {parties!r}")
        _check_lease(lease)
        super().__init__(name, store, ("state", "arrived"))
        self.parties, self.action, self.timeout, self.lease = parties, action, timeout, lease
        doing = f"create barrier {name!r}"
        with store.unavailable(doing):
            store.client.hsetnx(self._keys[0], "parties", parties)
            stored = int(store.client.hget(self._keys[0], "parties") or parties)
        if stored != parties:
            raise ValueError(f"barrier {name!r} on {store.address} has {stored} parties, "
                             f"not {parties}; open it with parties={stored} or another name")
        self._arrive = store.script(_BAR_ARRIVE)
        self._pass = store.script(_BAR_PASS)
        self._abort = store.script(_BAR_ABORT)
        self._renew = store.script(_BAR_RENEW)
        self._timeout = store.script(_BAR_TIMEOUT)

    def __reduce__(self) -> tuple[object, ...]:
        return (_barrier, (self.name, self.parties, self.action, self.timeout, self.store,
                           self.lease))

    def _state(self) -> tuple[int, bool]:
        with self.store.unavailable(f"state of barrier {self.name!r}"):
            pipe = self.store.client.pipeline(transaction=True)
            pipe.zcard(self._keys[1])
            pipe.hget(self._keys[0], "broken")
            n, broken = pipe.execute()
        return int(n), broken == b"1"

    @property
    def n_waiting(self) -> int:
        n, broken = self._state()
        return 0 if broken else n

    @property
    def broken(self) -> bool:
        return self._state()[1]

    def abort(self) -> None:
        self._abort(self._keys, [self._prefix, "break"], f"abort barrier {self.name!r}")

    def reset(self) -> None:
        self._abort(self._keys, [self._prefix, "reset"], f"reset barrier {self.name!r}")

    def wait(self, timeout: float | None = None) -> int:
        """Wait for all parties; the arrival index, or BrokenBarrierError."""
        deadline = _deadline(self.timeout if timeout is None else timeout)
        waiter, lease_ms = uuid.uuid4().hex, int(self.lease * 1000)
        doing = f"wait at barrier {self.name!r}"
        while True:
            state, *rest = self._arrive(self._keys, [self._prefix, self.parties, waiter,
                                                     lease_ms], doing)
            if state != -2:
                break
            if _slice(deadline) <= 0:
                self.abort()
                raise threading.BrokenBarrierError
            time.sleep(_RETRY)
        if state == -1:
            raise threading.BrokenBarrierError
        index, gen = int(rest[0]), int(rest[1])
        me = "" if state == 1 else waiter

        def renew() -> bool:
            return bool(self._renew(self._keys, [self._prefix, me, lease_ms, gen], doing))

        hold = leases.hold(renew, self.lease)
        try:
            if state == 1:
                return self._release_all(index)
            return self._await(waiter, index, deadline, doing)
        finally:
            leases.release(hold)

    def _release_all(self, index: int) -> int:
        if self.action is not None:
            try:
                self.action()
            except BaseException:
                self.abort()
                raise
        self._pass(self._keys, [self._prefix], f"pass barrier {self.name!r}")
        return index

    def _await(self, waiter: str, index: int, deadline: float | None, doing: str) -> int:
        # The renewer thread renews this party's lease and, doing so, breaks the
        # barrier if another party's lease has ended (_BAR_RENEW).
        try:
            while (seconds := _slice(deadline)) > 0:
                got = self._block(waiter, seconds)
                if got is None:
                    continue
                if got == b"pass":
                    return index
                raise threading.BrokenBarrierError
        except threading.BrokenBarrierError:
            raise
        except BaseException:
            self._timeout(self._keys, [self._prefix, waiter], doing)
            raise
        if self._timeout(self._keys, [self._prefix, waiter], doing) == b"pass":
            return index
        raise threading.BrokenBarrierError


def _barrier(name: str, parties: int, action: Callable[[], Any] | None,
             timeout: float | None, store: RedisStore, lease: float) -> Barrier:
    return Barrier(name, parties, action, timeout, store=store, lease=lease)
