"""A reliable queue on Redis: Queue and JoinableQueue.

Items are pickled (:mod:`shmshare.objects.codec`) into the list
``shmshare:{name}:items`` (put at the left, taken from the right).  ``put``
checks ``maxsize`` and counts the item as unfinished in one Lua script.

**Reliable get.**  A consumer (one per queue object per thread) takes an item
by moving it (LMOVE, or BLMOVE when it must wait on the server) into its own
processing list ``proc:<consumer>``, where it stays until acknowledged: by
``task_done()`` or by that consumer's next ``get()``.  The acknowledgement
names the request that took the item (``req:<consumer>``), so a step run
twice after a lost reply never acknowledges an item the consumer was not
given; such an item goes back to the front of the queue.  Each consumer holds a
lease in ``consumers`` (renewed by the process's renewer thread).  When a
consumer dies before acknowledging, its lease ends, and the next ``get`` by
anyone moves the unacknowledged item back to the *front* of the queue, so it
is taken next: delivery is at-least-once, and an item whose consumer was
merely paused past its lease may be processed twice.
"""

from __future__ import annotations

import queue as _queue
import threading
import time
import uuid
import weakref
from typing import Any

from shmshare.objects import codec
from shmshare.stores.errors import StoreUnavailableError
from shmshare.stores.redis import leases
from shmshare.stores.redis.connection import MAX_BLOCK, RedisStore
from shmshare.stores.redis.lock import _ALIVE_MS
from shmshare.stores.redis.lua import PRELUDE
from shmshare.stores.redis.waiters import TRIES, backoff

__all__ = ["JoinableQueue", "Queue"]

# KEYS: items, unfinished, putters.  ARGV: prefix, maxsize, item, waiter, alive_ms
_PUT = PRELUDE + """
local max = tonumber(ARGV[2])
if max > 0 and redis.call('LLEN', KEYS[1]) >= max then
  if ARGV[4] ~= '' then
    redis.call('SET', ARGV[1] .. 'alive:' .. ARGV[4], 1, 'PX', ARGV[5])
    if not redis.call('LPOS', KEYS[3], ARGV[4]) then redis.call('RPUSH', KEYS[3], ARGV[4]) end
  end
  return 0
end
redis.call('LPUSH', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
if ARGV[4] ~= '' then
  redis.call('DEL', ARGV[1] .. 'alive:' .. ARGV[4], ARGV[1] .. 'wake:' .. ARGV[4])
  redis.call('LREM', KEYS[3], 0, ARGV[4])
end
return 1
"""

# KEYS: items, consumers, proc:<me>, putters.  ARGV: prefix, me, lease_ms, ack, req
# Requeue the items of consumers whose lease ended; acknowledge the item our last get
# returned (only if ``ack`` is the request that took it: a rerun of this script after a
# lost reply must not acknowledge twice); put back at the front anything else left in
# our processing list (taken by a command whose reply never reached us); take one.
_TAKE = PRELUDE + """
local t = now_ms()
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', t)) do
  while redis.call('LMOVE', ARGV[1] .. 'proc:' .. id, KEYS[1], 'LEFT', 'RIGHT') do end
  redis.call('DEL', ARGV[1] .. 'req:' .. id)
  redis.call('ZREM', KEYS[2], id)
end
local req = ARGV[1] .. 'req:' .. ARGV[2]
if ARGV[4] ~= '' and redis.call('GET', req) == ARGV[4] then redis.call('LPOP', KEYS[3]) end
while redis.call('LMOVE', KEYS[3], KEYS[1], 'LEFT', 'RIGHT') do end
redis.call('ZADD', KEYS[2], t + tonumber(ARGV[3]), ARGV[2])
local item = redis.call('LMOVE', KEYS[1], KEYS[3], 'RIGHT', 'LEFT')
if item then
  redis.call('SET', req, ARGV[5])
  wake_next(KEYS[4], ARGV[1])
end
return item
"""

# KEYS: putters.  ARGV: prefix, me, req.  A blocking move took an item for request req.
_CLAIM = PRELUDE + """
redis.call('SET', ARGV[1] .. 'req:' .. ARGV[2], ARGV[3])
wake_next(KEYS[1], ARGV[1])
return 0
"""

# KEYS: consumers.  ARGV: me, lease_ms.  -> 0 when the lease had ended (items requeued)
_RENEW = PRELUDE + """
local t = now_ms()
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) <= t then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: unfinished, proc:<me>, joiners.  ARGV: prefix, me, ack (as _TAKE's).
# -> -1 when called too often
_TASK_DONE = PRELUDE + """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n <= 0 then return -1 end
local req = ARGV[1] .. 'req:' .. ARGV[2]
if ARGV[3] ~= '' and redis.call('GET', req) == ARGV[3] then
  redis.call('LPOP', KEYS[2])
  redis.call('DEL', req)
end
n = redis.call('DECR', KEYS[1])
if n == 0 then
  for _, id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    redis.call('RPUSH', ARGV[1] .. 'wake:' .. id, 1)
    redis.call('PEXPIRE', ARGV[1] .. 'wake:' .. id, 60000)
  end
  redis.call('DEL', KEYS[3])
end
return n
"""


class _ThreadConsumer:
    """Kept in a thread's local storage while it is a consumer; its end ends the lease."""


class Queue:
    """A FIFO queue named ``name`` on a Redis store, with at-least-once delivery."""

    def __init__(self, name: str, maxsize: int = 0, *, store: RedisStore,
                 lease: float = 10.0) -> None:
        self.name, self.maxsize, self.store, self.lease = name, maxsize, store, lease
        self._prefix = store.key(name, "")
        self._k = {p: store.key(name, p) for p in ("items", "unfinished", "putters",
                                                     "consumers", "joiners")}
        self._local = threading.local()
        self._put, self._take = store.script(_PUT), store.script(_TAKE)
        self._claim, self._renew = store.script(_CLAIM), store.script(_RENEW)
        self._done = store.script(_TASK_DONE)

    def __reduce__(self) -> tuple[object, ...]:
        # By reference: the receiver is a new consumer of the same queue.
        return (_rebuild, (type(self), self.name, self.maxsize, self.store, self.lease))

    def _consumer(self) -> str:
        me: str | None = getattr(self._local, "me", None)
        if me is None:
            me = self._local.me = uuid.uuid4().hex
            consumers, lease_ms = self._k["consumers"], int(self.lease * 1000)

            def renew() -> bool:
                return bool(self._renew([consumers], [me, lease_ms], f"renew {self.name!r}"))

            lease = self._local.lease = leases.hold(renew, self.lease,
                                                   group=self.store.address.url)
            # When the thread ends (or this object goes), its thread-local values go:
            # stop renewing then, so that its unacknowledged item is requeued.
            self._local.alive = _ThreadConsumer()
            weakref.finalize(self._local.alive, leases.release, lease)
        return me

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        """Append ``item``; wait for room when full (queue.Full when it does not come)."""
        data = codec.dumps(item)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = uuid.uuid4().hex if block else ""
        k = self._k
        while True:
            if self._put([k["items"], k["unfinished"], k["putters"]],
                         [self._prefix, self.maxsize, data, waiter, _ALIVE_MS],
                         f"put {self.name!r}"):
                return
            remaining = MAX_BLOCK if deadline is None else deadline - time.monotonic()
            if not block or remaining <= 0:
                raise _queue.Full
            with self.store.unavailable(f"put {self.name!r}"):
                self.store.blocking_client.blpop([self._prefix + "wake:" + waiter],
                                                 max(0.01, min(MAX_BLOCK, remaining)))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item (acknowledging this consumer's previous one).

        A connection that fails while waiting is tried again (at most
        :data:`.waiters.TRIES` times in a row, and never past ``timeout``); an item the
        server moved to us while the reply was lost is not dropped: the next
        step puts it back at the front and takes it again.
        """
        me = self._consumer()
        k = self._k
        proc = self._prefix + "proc:" + me
        keys = [k["items"], k["consumers"], proc, k["putters"]]
        deadline = None if timeout is None else time.monotonic() + timeout
        lease_ms = int(self.lease * 1000)
        req, failures = uuid.uuid4().hex, 0
        while True:
            try:
                data = self._take(keys, [self._prefix, me, lease_ms,
                                         getattr(self._local, "ack", ""), req],
                                  f"get {self.name!r}")
                self._local.ack = ""  # acknowledged (it must not be again)
                if data is None:
                    remaining = MAX_BLOCK if deadline is None else deadline - time.monotonic()
                    if not block or remaining <= 0:
                        raise _queue.Empty
                    with self.store.unavailable(f"get {self.name!r}"):
                        # Redis takes a float timeout; redis-py's stub says int.
                        data = self.store.blocking_client.blmove(
                            k["items"], proc, max(0.01, min(MAX_BLOCK, remaining)),  # type: ignore[arg-type]
                            "RIGHT", "LEFT")
                    if data is None:
                        continue  # take again: requeues a dead consumer's items, renews ours
                    self._claim([k["putters"]], [self._prefix, me, req], f"get {self.name!r}")
            except StoreUnavailableError:
                failures += 1
                if failures >= TRIES or (deadline is not None
                                          and time.monotonic() >= deadline):
                    raise
                time.sleep(backoff(failures))
                continue
            self._local.ack = req
            return codec.loads(data)

    def put_nowait(self, item: object) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def qsize(self) -> int:
        with self.store.unavailable(f"qsize {self.name!r}"):
            return int(self.store.client.llen(self._k["items"]))

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether a put would wait now (``maxsize`` items queued; never when 0)."""
        return 0 < self.maxsize <= self.qsize()

    def close(self) -> None:
        """Stop this thread's consumer lease (its unacknowledged item is requeued later)."""
        lease = getattr(self._local, "lease", None)
        if lease is not None:
            leases.release(lease)
            self._local.me = self._local.lease = self._local.alive = None  # a new one next
            self._local.ack = ""

    def destroy(self) -> None:
        """Delete the queue's keys, the processing lists of its known consumers included."""
        self.close()
        with self.store.unavailable(f"destroy {self.name!r}"):
            c = self.store.client
            consumers: list[bytes] = c.zrange(self._k["consumers"], 0, -1)  # type: ignore[assignment]
            procs = [self._prefix + part + m.decode() for m in consumers
                     for part in ("proc:", "req:")]
            c.delete(*self._k.values(), *procs)


class JoinableQueue(Queue):
    """A Queue that counts unfinished items: ``task_done()`` and ``join()``."""

    def task_done(self) -> None:
        """Mark one item done (and acknowledge this consumer's item)."""
        me = self._consumer()
        left = self._done([self._k["unfinished"], self._prefix + "proc:" + me,
                           self._k["joiners"]],
                          [self._prefix, me, getattr(self._local, "ack", "")],
                          f"task_done {self.name!r}")
        self._local.ack = ""
        if left == -1:
            raise ValueError("task_done() called too many times")

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put is done; False if ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = uuid.uuid4().hex
        c = self.store.client
        while True:
            with self.store.unavailable(f"join {self.name!r}"):
                pipe = c.pipeline()  # MULTI: register, then read the count
                pipe.rpush(self._k["joiners"], me)
                pipe.get(self._k["unfinished"])
                _, n = pipe.execute()
            if int(n or 0) <= 0:
                with self.store.unavailable(f"join {self.name!r}"):
                    c.lrem(self._k["joiners"], 0, me)
                return True
            remaining = MAX_BLOCK if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                with self.store.unavailable(f"join {self.name!r}"):
                    c.lrem(self._k["joiners"], 0, me)
                return False
            with self.store.unavailable(f"join {self.name!r}"):
                self.store.blocking_client.blpop([self._prefix + "wake:" + me],
                                                 max(0.01, min(MAX_BLOCK, remaining)))
                c.lrem(self._k["joiners"], 0, me)


def _rebuild(cls: type[Queue], name: str, maxsize: int, store: RedisStore,
             lease: float) -> Queue:
    return cls(name, maxsize, store=store, lease=lease)
