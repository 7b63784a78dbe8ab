"""Locks for a network: Lock, RLock, Semaphore and BoundedSemaphore on one mechanism.

**Permits as leased holders.**  Every one of these is a set of permits; a
hold is an entry ``token -> lease deadline`` in the sorted set
``shmshare:{name}:holders``.  Acquire (one Lua script) first drops entries
whose deadline has passed — that is how a dead holder's permit comes back,
one lease after it stopped renewing — then adds its own entry if fewer than
``capacity`` remain.  A Lock is a semaphore of one permit.

**Fencing.**  Each successful acquire also increments ``shmshare:{name}:fence``
(never reset, never decreased) and hands that number to the holder as
``lock.token``.  A resource that remembers the highest token it has seen and
refuses writes with a lower one cannot be written by a holder whose lease
ended behind its back, whatever the clocks did.

**Lost leases.**  The holder's lease is renewed by this process's renewer
thread (:mod:`.leases`).  A holder paused past the lease finds its entry
gone: :class:`LockLostError` at its next use (``token``, ``check()``,
``release()``), never a silent double hold.

**Waiting on the server.**  A blocked acquire registers a waiter id in the
list ``shmshare:{name}:waiters`` (with a short-lived ``alive:<id>`` key it
refreshes) and blocks in BLPOP on its own key ``wake:<id>``.  A release pops
waiter ids until it finds one still alive and pushes to its key.  Each BLPOP
waits at most until the earliest lease could end (so a dead holder is noticed
on time), the caller's deadline, or MAX_BLOCK; a wake pushed to a waiter that
is giving up is passed on.  Per-waiter lists, unlike pub/sub, keep a wake
that arrives while the waiter is reconnecting.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass

from shmshare._core import fork_hooks
from shmshare.stores.errors import LockLostError, StoreUnavailableError
from shmshare.stores.redis import leases
from shmshare.stores.redis.connection import MAX_BLOCK, RedisStore
from shmshare.stores.redis.lua import PRELUDE
from shmshare.stores.redis.waiters import TRIES, backoff

__all__ = ["BoundedSemaphore", "Lock", "RLock", "Semaphore"]

# KEYS: holders, fence, waiters, extra.  ARGV: prefix, capacity, token, lease_ms,
# waiter id ('' when not blocking), alive_ms.  -> {1, fence} or {0, ms to earliest end}
_ACQUIRE = PRELUDE + """
local t = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
-- Run again after a lost reply (a retry): the permit is already ours.
local got = ARGV[1] .. 'got:' .. ARGV[3]
local mine = redis.call('GET', got)
if mine and redis.call('ZSCORE', KEYS[1], ARGV[3]) then return {1, tonumber(mine)} end
local cap = tonumber(ARGV[2]) + tonumber(redis.call('GET', KEYS[4]) or '0')
local waiter = ARGV[5]
if redis.call('ZCARD', KEYS[1]) < cap then
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[4]), ARGV[3])
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', got, fence, 'PX', ARGV[4])
  if waiter ~= '' then
    redis.call('DEL', ARGV[1] .. 'alive:' .. waiter, ARGV[1] .. 'wake:' .. waiter)
    redis.call('LREM', KEYS[3], 0, waiter)
  end
  if redis.call('ZCARD', KEYS[1]) < cap then wake_next(KEYS[3], ARGV[1]) end
  return {1, fence}
end
if waiter ~= '' then
  redis.call('SET', ARGV[1] .. 'alive:' .. waiter, 1, 'PX', ARGV[6])
  if not redis.call('LPOS', KEYS[3], waiter) then redis.call('RPUSH', KEYS[3], waiter) end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] == nil then return {0, 0} end
return {0, tonumber(first[2]) - t}
"""

# KEYS: holders.  ARGV: token, lease_ms.  -> 1 renewed, 0 lost
_RENEW = PRELUDE + """
local t = now_ms()
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) <= t then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: holders, waiters, extra.  ARGV: prefix, token ('' = add a permit).  -> 1, or 0 lost
_RELEASE = PRELUDE + """
local result = 1
if ARGV[2] ~= '' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('DEL', ARGV[1] .. 'got:' .. ARGV[2])
  if not s or tonumber(s) <= now_ms() then result = 0 end
else
  redis.call('INCR', KEYS[3])
end
wake_next(KEYS[2], ARGV[1])
return result
"""

# KEYS: waiters.  ARGV: prefix, waiter id.  A wake that came too late is passed on.
_CANCEL = PRELUDE + """
redis.call('DEL', ARGV[1] .. 'alive:' .. ARGV[2])
redis.call('LREM', KEYS[1], 0, ARGV[2])
local woken = redis.call('LPOP', ARGV[1] .. 'wake:' .. ARGV[2])
if woken then wake_next(KEYS[1], ARGV[1]) end
return 0
"""

_ALIVE_MS = int((MAX_BLOCK + 2.0) * 1000)  # a waiter refreshes this at least every MAX_BLOCK


@dataclass
class _Hold:
    token: str  # owner token: who holds this permit (never shown to users)
    fence: int  # the fencing token of this hold
    lease: leases.Lease


def _forget_holds_in_child() -> None:
    # A forked child inherits "I hold it" from the parent's Python state, but the
    # permits are the parent's (its renewer renews them): the child holds nothing.
    for sem in list(_ALL):
        sem._mutex = threading.Lock()
        sem._holds = []
        if isinstance(sem, RLock):
            sem._owner, sem._count = None, 0


_ALL: weakref.WeakSet[Semaphore] = weakref.WeakSet()
fork_hooks.at_fork(after_in_child=_forget_holds_in_child)


class Semaphore:
    """A counting semaphore of ``value`` permits named ``name`` on a Redis store.

    Permits belong to the object that acquired them (they are leases with an
    owner); ``release()`` on an object that holds none adds a permit, as
    ``threading.Semaphore`` does.
    """

    def __init__(self, name: str, value: int = 1, *, store: RedisStore,
                 lease: float = 10.0) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        if lease <= 0.1:
            raise ValueError(f"lease must be longer than 0.1 s, not {lease!r}")
        self.name, self.capacity, self.store, self.lease = name, value, store, lease
        self._prefix = store.key(name, "")
        self._keys = {part: store.key(name, part) for part in ("holders", "fence", "waiters",
                                                                "extra")}
        self._holds: list[_Hold] = []
        self._mutex = threading.Lock()
        _ALL.add(self)
        self._acquire = store.script(_ACQUIRE)
        self._renew = store.script(_RENEW)
        self._release = store.script(_RELEASE)
        self._cancel = store.script(_CANCEL)

    def __reduce__(self) -> tuple[object, ...]:
        # By reference: the receiver gets the same permits, holding none of them.
        return (type(self)._rebuild, (self.name, self.capacity, self.store, self.lease))

    @classmethod
    def _rebuild(cls, name: str, value: int, store: RedisStore,
                 lease: float) -> Semaphore:
        return cls(name, value, store=store, lease=lease)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit; False when ``blocking`` is False or ``timeout`` passes first."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        token = f"{os.getpid()}:{uuid.uuid4().hex}"
        waiter = uuid.uuid4().hex if blocking else ""
        k = self._keys
        keys = [k["holders"], k["fence"], k["waiters"], k["extra"]]
        lease_ms = int(self.lease * 1000)
        failures = 0
        while True:
            try:
                sent = time.monotonic()
                got, value = self._acquire(
                    keys, [self._prefix, self.capacity, token, lease_ms, waiter, _ALIVE_MS],
                    f"acquire {self.name!r}")
                if got:
                    self._add_hold(token, int(value), sent)
                    return True
                if not blocking:
                    return False
                remaining = MAX_BLOCK if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    self._cancel([k["waiters"]], [self._prefix, waiter],
                                 f"acquire {self.name!r}")
                    return False
                # Wake at the earliest lease end too: a dead holder wakes nobody.
                wait = max(0.01, min(MAX_BLOCK, remaining, int(value) / 1000 + 0.005))
                with self.store.unavailable(f"acquire {self.name!r}"):
                    self.store.blocking_client.blpop([self._prefix + "wake:" + waiter], wait)
            except StoreUnavailableError:
                # Ride out a few failures in a row (running the script again is safe:
                # it knows the permit is ours if it took it).  A permit taken by a call
                # whose reply never came is nobody's: it frees itself one lease later.
                failures += 1
                if failures >= TRIES or (deadline is not None
                                         and time.monotonic() >= deadline):
                    raise
                time.sleep(backoff(failures))

    def _add_hold(self, token: str, fence: int, sent: float) -> None:
        holders, lease_ms = self._keys["holders"], int(self.lease * 1000)

        def renew() -> bool:
            return bool(self._renew([holders], [token, lease_ms], f"renew {self.name!r}"))

        with self._mutex:
            self._holds.append(_Hold(token, fence, leases.hold(renew, self.lease, sent,
                                                              self.store.address.url)))

    def release(self, n: int = 1) -> None:
        """Give back ``n`` permits; LockLostError if a lease of ours had already ended."""
        if n < 1:
            raise ValueError("n must be one or more")
        lost = 0
        for _ in range(n):
            with self._mutex:
                hold = self._holds.pop() if self._holds else None
            if hold is None:
                self._release_unheld()
                continue
            leases.release(hold.lease)
            k = self._keys
            if not self._release([k["holders"], k["waiters"], k["extra"]],
                                 [self._prefix, hold.token], f"release {self.name!r}"):
                lost += 1
        if lost:
            raise LockLostError(f"{lost} permit(s) of {self.name!r} on {self.store.address} "
                                f"were lost before release: their {self.lease} s lease ended "
                                "(this process was paused or cut off), and another holder "
                                "may have had them meanwhile")

    def _release_unheld(self) -> None:
        k = self._keys
        self._release([k["holders"], k["waiters"], k["extra"]], [self._prefix, ""],
                      f"release {self.name!r}")

    def check(self) -> None:
        """Raise LockLostError if a lease this object holds has ended.

        Asks the server when the last renewal is older than most of a lease (this
        process may have been paused): a holder continued after a pause is told at once.
        """
        with self._mutex:
            held = [h.lease for h in self._holds]
        if not all(lease.confirm() for lease in held):
            raise LockLostError(f"the lease on {self.name!r} at {self.store.address} ended "
                                "while this process held it; another holder may have it now")

    @property
    def token(self) -> int:
        """The fencing token of this object's latest hold: it only grows, store-wide."""
        self.check()
        with self._mutex:
            if not self._holds:
                raise RuntimeError(f"{self.name!r} is not held by this object; no token")
            return self._holds[-1].fence

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def destroy(self) -> None:
        """Delete every key of this object from the server (the fence restarts: use once)."""
        with self.store.unavailable(f"destroy {self.name!r}"):
            self.store.client.delete(*self._keys.values())


class BoundedSemaphore(Semaphore):
    """A Semaphore whose ``release()`` without a held permit is an error, not a new permit."""

    def _release_unheld(self) -> None:
        raise ValueError(f"semaphore {self.name!r} released too many times "
                         "(this object holds no permit)")


class Lock(BoundedSemaphore):
    """A mutual-exclusion lock: one leased, fenced permit."""

    recoveries = 0  # as ObjectLock's count; a dead holder's lease simply ends here

    def __init__(self, name: str, *, store: RedisStore, lease: float = 10.0) -> None:
        super().__init__(name, 1, store=store, lease=lease)

    @classmethod
    def _rebuild(cls, name: str, value: int, store: RedisStore, lease: float) -> Lock:
        return cls(name, store=store, lease=lease)

    def _release_unheld(self) -> None:
        raise RuntimeError(f"release unlocked lock {self.name!r}")

    def held_by_me(self) -> bool:
        """Whether this object holds the lock (what a Condition asks before wait/notify)."""
        with self._mutex:
            return bool(self._holds)

    def held(self) -> bool:
        """Whether the calling thread holds the lock (as a shared object's lock says)."""
        return self.held_by_me()

    def _release_save(self) -> object:
        """Let go of the lock entirely for a Condition's wait; what to restore after."""
        self.release()
        return None

    def _acquire_restore(self, saved: object) -> None:
        self.acquire()

    def locked(self) -> bool:
        """Whether some live holder (anywhere) has the lock now."""
        with self.store.unavailable(f"locked {self.name!r}"):
            now_s, now_us = self.store.client.time()
            now_ms = now_s * 1000 + now_us // 1000
            return bool(self.store.client.zcount(self._keys["holders"], f"({now_ms}", "+inf"))


class RLock(Lock):
    """A reentrant lock: the owning thread may acquire again; one server permit underneath."""

    # The shared object whose lock this is (weakly), if any: the lock then pickles
    # as "that object's lock", so that a receiver holding it is seen, by the
    # object's writes, as the holder (a second RLock of the same name would not be).
    _holder: weakref.ref[object] | None = None

    def __init__(self, name: str, *, store: RedisStore, lease: float = 10.0) -> None:
        super().__init__(name, store=store, lease=lease)
        self._owner: int | None = None
        self._count = 0

    def __reduce__(self) -> tuple[object, ...]:
        holder = self._holder() if self._holder is not None else None
        if holder is not None:
            return (getattr, (holder, "_lock"))
        return super().__reduce__()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            self.check()
            self._count += 1
            return True
        if not super().acquire(blocking, timeout):
            return False
        self._owner, self._count = me, 1
        return True

    def held_by_me(self) -> bool:
        return self._owner == threading.get_ident()

    def _release_save(self) -> object:
        # Every recursion level at once, as threading.RLock does for a Condition.
        saved = (self._owner, self._count)
        self._owner, self._count = None, 0
        Lock.release(self)
        return saved

    def _acquire_restore(self, saved: object) -> None:
        Lock.acquire(self)
        self._owner, self._count = saved  # type: ignore[misc]

    def release(self, n: int = 1) -> None:
        if n != 1:
            raise ValueError("an RLock is released one level at a time")
        if self._owner != threading.get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = None
            super().release()
