"""Barrier on a Redis store: leased arrivals, released by the last party.

An arrival is a leased entry; the last party runs ``action`` under a lease of
its own and then releases the others.  A party whose lease ends while it
waits (it died, or was cut off) breaks the barrier, as a dead party does in
shared memory: the others get BrokenBarrierError one lease later instead of
waiting forever.  A timeout breaks it too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from shmshare.stores.redis import leases
from shmshare.stores.redis.connection import RedisStore
from shmshare.stores.redis.lua import PRELUDE
from shmshare.stores.redis.waiters import PUSH, Waits, check_lease, deadline_of, slice_of

__all__ = ["Barrier"]

_BREAK = PRELUDE + PUSH + """
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
_BAR_PASS = PUSH + """
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
woken = was_woken(ARGV[1], ARGV[2])
if woken then return woken end
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then break_all(KEYS[1], KEYS[2], ARGV[1], 'break') end
redis.call('DEL', ARGV[1] .. 'wake:' .. ARGV[2])
return 'broken'
"""

_RETRY = 0.01  # seconds between arrivals while the previous round is released


class Barrier(Waits):
    """``threading.Barrier(parties, action, timeout)`` named ``name`` on a Redis store.

    ``action`` runs in the last party to arrive, before the others go.
    """

    def __init__(self, name: str, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None, *, store: RedisStore,
                 lease: float = 10.0) -> None:
        if not isinstance(parties, int) or isinstance(parties, bool) or parties < 1:
            raise ValueError(f"parties must be an int >= 1, not {parties!r}")
        check_lease(lease)
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
        deadline = deadline_of(self.timeout if timeout is None else timeout)
        waiter, lease_ms = uuid.uuid4().hex, int(self.lease * 1000)
        doing = f"wait at barrier {self.name!r}"
        while True:
            state, *rest = self._arrive(self._keys, [self._prefix, self.parties, waiter,
                                                     lease_ms], doing)
            if state != -2:
                break
            if slice_of(deadline) <= 0:
                self.abort()
                raise threading.BrokenBarrierError
            time.sleep(_RETRY)
        if state == -1:
            raise threading.BrokenBarrierError
        index, gen = int(rest[0]), int(rest[1])
        me = "" if state == 1 else waiter

        def renew() -> bool:
            return bool(self._renew(self._keys, [self._prefix, me, lease_ms, gen], doing))

        hold = leases.hold(renew, self.lease, group=self.store.address.url)
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
            while (seconds := slice_of(deadline)) > 0:
                got = self._block(waiter, seconds, deadline)
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
