"""The store interface (:mod:`shmshare.objects.store`) on Redis: one object's entries.

Keys are encoded with :func:`shmshare.objects.codec.encode_key`, so key
equality is the shared-memory store's (``1``, ``1.0`` and ``True`` are one
key).  The canonical part of the key names the entry in three structures
under the hash tag ``{name}``: ``entries`` (canonical -> pickled value),
``keys`` (canonical -> the key as first inserted) and the sorted set
``order`` (canonical -> insertion number from ``seq``), which gives dict
iteration order: overwriting keeps the place, pop-and-reinsert goes last.
``version`` grows on every change; ``kind`` is the object's kind, written
when it is created; beside them are the keys of the object's lock
(:class:`.lock.RLock` under the same name: ``holders``, ``fence``...).
(This replaces the earlier stand-alone ``DictStore``: one Lua dict, under
the objects.)

**Every step is one script.**  Each checks first that ``kind`` exists (an
object that was unlinked, or whose lifetime lease ended, raises
ObjectGoneError instead of reading as empty).  Each *write* then checks the
object's lock: if a live holder other than the caller holds it (``with
d.lock:`` in another process), the script changes nothing and answers
LOCKED, and the caller takes the lock itself, waiting its turn, and runs
the step again as the holder.  So a block under ``with d.lock:`` is atomic
against every other writer, as on shared memory; reads do not wait for it
(nor do they on shared memory, whose reads are lock-free).  A caller whose
own hold has ended (its lease ran out) gets LockLostError, and its write is
refused: the lock's holders set is the fence.

**Lifetime.**  An object that is not persistent carries a TTL on every key:
each write sets it again, and every process holding a handle renews it
(:func:`keep_alive`) while it holds it; the server removes the object one
lease after the last holder detached or died.  A persistent object has no
TTL and lives until ``unlink()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis

from shmshare.errors import (
    ObjectGoneError,
    SegmentExistsError,
    SegmentNotFoundError,
    WrongTypeError,
)
from shmshare.stores.errors import LockLostError
from shmshare.stores.redis.connection import RedisStore
from shmshare.stores.redis.lua import PRELUDE

__all__ = ["PARTS", "RedisEntries", "create_or_open", "keep_alive", "remove"]

# Every key of an object (transient per-waiter keys expire by themselves).
PARTS = ("kind", "holders", "entries", "keys", "order", "seq", "version", "fence", "extra",
         "waiters")
_STEP_PARTS = PARTS[:7]  # KEYS[1..7] of every step script

# ARGV[1]: the caller's hold token ('' = not holding); ARGV[2]: TTL in ms ('' = none).
_GUARD = PRELUDE + """
local function guard(write)
  if redis.call('EXISTS', KEYS[1]) == 0 then return 'GONE' end
  if not write then return false end
  local me = ARGV[1]
  local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now_ms(), '+inf')
  if me == '' then return #live > 0 and 'LOCKED' or false end
  for _, h in ipairs(live) do
    if h == me then return false end
  end
  return 'LOST'  -- our hold ended, whoever holds the lock now
end
local function keep()
  if ARGV[2] == '' then return end
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
local function insert(canonical, key, value, only_if_absent)
  if redis.call('HEXISTS', KEYS[3], canonical) == 1 then
    if only_if_absent then return 0 end
    redis.call('HSET', KEYS[3], canonical, value)
    return 0
  end
  redis.call('ZADD', KEYS[5], redis.call('INCR', KEYS[6]), canonical)
  redis.call('HSET', KEYS[4], canonical, key)
  redis.call('HSET', KEYS[3], canonical, value)
  return 1
end
"""


def _step(body: str, write: bool) -> str:
    return _GUARD + f"""
local g = guard({'true' if write else 'false'})
if g then return redis.error_reply('SHMSHARE ' .. g) end
""" + body


# ARGV[3]: canonical.  -> the value or false
_GET = _step("return redis.call('HGET', KEYS[3], ARGV[3])", write=False)
_HAS = _step("return redis.call('HEXISTS', KEYS[3], ARGV[3])", write=False)

# ARGV[3..6]: canonical, key, value, only_if_absent ('1' or '').  -> 1 when new
_SET = _step("""
local new = insert(ARGV[3], ARGV[4], ARGV[5], ARGV[6] == '1')
if new == 1 or ARGV[6] ~= '1' then redis.call('INCR', KEYS[7]) end
keep()
return new
""", write=True)

# ARGV[3]: canonical.  -> the value or false
_POP = _step("""
local v = redis.call('HGET', KEYS[3], ARGV[3])
if not v then return false end
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('INCR', KEYS[7])
keep()
return v
""", write=True)

# -> {key, value} of the last inserted entry, or false
_POPITEM = _step("""
local last = redis.call('ZRANGE', KEYS[5], -1, -1)
if #last == 0 then return false end
local c = last[1]
local out = {redis.call('HGET', KEYS[4], c), redis.call('HGET', KEYS[3], c)}
redis.call('HDEL', KEYS[3], c)
redis.call('HDEL', KEYS[4], c)
redis.call('ZREM', KEYS[5], c)
redis.call('INCR', KEYS[7])
keep()
return out
""", write=True)

_CLEAR = _step("""
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
redis.call('INCR', KEYS[7])
keep()
return 1
""", write=True)

_LEN = _step("return redis.call('HLEN', KEYS[3])", write=False)

# ARGV[3..6]: after seq (-1 = the start), reverse ('1'/''), values ('1'/''), count.
# -> {seq, key, value or false, ...}
_SCAN = _step("""
local page
local n = tonumber(ARGV[6])
if ARGV[4] == '1' then
  local top = tonumber(ARGV[3]) < 0 and '+inf' or '(' .. ARGV[3]
  page = redis.call('ZREVRANGEBYSCORE', KEYS[5], top, '-inf', 'WITHSCORES', 'LIMIT', 0, n)
else
  local bottom = tonumber(ARGV[3]) < 0 and '-inf' or '(' .. ARGV[3]
  page = redis.call('ZRANGEBYSCORE', KEYS[5], bottom, '+inf', 'WITHSCORES', 'LIMIT', 0, n)
end
local out = {}
for i = 1, #page, 2 do
  out[#out + 1] = page[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[4], page[i])
  out[#out + 1] = ARGV[5] == '1' and redis.call('HGET', KEYS[3], page[i]) or false
end
return out
""", write=False)

# KEYS: every part.  ARGV[1]: '', ARGV[2]: TTL, ARGV[3]: kind, ARGV[4]: create
# ('1' must, '0' must not, '' either), then canonical, key, value triples.
# -> {'CREATED'|'OPENED'|'EXISTS'|'MISSING'|'WRONGKIND', stored kind[, 'PERSIST']}
_CREATE = _GUARD + """
local kind = redis.call('GET', KEYS[1])
if kind then
  if ARGV[4] == '1' then return {'EXISTS', kind} end
  if kind ~= ARGV[3] then return {'WRONGKIND', kind} end
  -- The creator decided the lifetime: a persistent object has no TTL to renew.
  if redis.call('PTTL', KEYS[1]) == -1 then return {'OPENED', kind, 'PERSIST'} end
  keep()
  return {'OPENED', kind}
end
if ARGV[4] == '0' then return {'MISSING', ''} end
redis.call('SET', KEYS[1], ARGV[3])
for i = 6, 9 do redis.call('SET', KEYS[i], 0, 'NX') end
for i = 5, #ARGV, 3 do insert(ARGV[i], ARGV[i + 1], ARGV[i + 2], false) end
keep()
return {'CREATED', ARGV[3]}
"""

# The same for a sequence (a list's items, in the Redis LIST ``entries``): ARGV[5...]
# are the pickled items, in order.
_CREATE_ITEMS = _CREATE.replace(
    "for i = 5, #ARGV, 3 do insert(ARGV[i], ARGV[i + 1], ARGV[i + 2], false) end",
    "for i = 5, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end")

# ... and for bytes (an array's, in the Redis STRING ``entries``): ARGV[5] is all of them.
_CREATE_STRING = _CREATE.replace(
    "for i = 5, #ARGV, 3 do insert(ARGV[i], ARGV[i + 1], ARGV[i + 2], false) end",
    "redis.call('SET', KEYS[3], ARGV[5])")

# KEYS: every part.  ARGV[1]: '', ARGV[2]: TTL.  -> 0 when the object is gone
_KEEP = _GUARD + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
keep()
return 1
"""

_SCAN_PAGE = 256
_CLOSED = ("this shared object is detached from this process (detach() was called, or "
           "its Manager was shut down); open it again to use it")


def _keys(store: RedisStore, name: str, parts: Iterable[str] = PARTS) -> list[str]:
    return [store.key(name, p) for p in parts]


def _ttl(lifetime: float | None) -> str:
    return "" if lifetime is None else str(int(lifetime * 1000))


def create_or_open(store: RedisStore, name: str, kind: str, create: bool | None,
                   lifetime: float | None, initial: Iterable[tuple[bytes, int, bytes]],
                   label: str, items: Iterable[bytes] | None = None,
                   string: bytes | None = None) -> tuple[bool, bool]:
    """Create object ``name`` of ``kind`` with ``initial`` (key, cmp_len, value) entries,
    or open it; (created, persistent).  ``lifetime``: the TTL (None = persist), for a new
    object: an existing one keeps what its creator chose (persistent when it has no TTL).
    ``items`` (pickled, in order) makes a sequence instead, whose ``entries`` is a LIST;
    ``string`` an array, whose ``entries`` is a STRING of those bytes."""
    args: list[Any] = ["", _ttl(lifetime), kind,
                       {None: "", True: "1", False: "0"}[create]]
    if items is not None:
        args += list(items)
    if string is not None:
        args.append(string)
    for kb, n, vb in initial:
        args += [kb[:n], kb, vb]
    source = (_CREATE_ITEMS if items is not None else
              _CREATE_STRING if string is not None else _CREATE)
    reply = store.script(source)(_keys(store, name), args, f"open {label}")
    outcome, stored = reply[0], reply[1]
    outcome = outcome.decode()
    stored = stored.decode() if isinstance(stored, bytes) else stored
    where = f"{label} on {store.address}"
    if outcome == "EXISTS":
        raise SegmentExistsError(17, f"{where} already exists (create=True); open it with "
                                     "create=None or False, or unlink it first")
    if outcome == "MISSING":
        raise SegmentNotFoundError(2, f"{where} does not exist (create=False); create it "
                                      "first, or pass create=None")
    if outcome == "WRONGKIND":
        raise WrongTypeError(f"{where} is a {stored!r}, not a {kind!r}; open it with its "
                             "own class, or use another name")
    if outcome == "CREATED":
        return True, lifetime is None
    return False, len(reply) > 2  # 'PERSIST'


def keep_alive(store: RedisStore, name: str, lifetime: float) -> bool:
    """Renew the TTL of every key of ``name``; False once the object is gone."""
    return bool(store.script(_KEEP)(_keys(store, name), ["", _ttl(lifetime)],
                                    f"keep {name!r} alive"))


def remove(store: RedisStore, name: str) -> None:
    """Delete every key of object ``name`` now."""
    with store.unavailable(f"unlink {name!r}"):
        store.client.delete(*_keys(store, name))


class RedisEntries:
    """The entries of one object on Redis, as :class:`~shmshare.objects.store.EntryStore`.

    ``token()`` is the caller's hold token of the object's lock ('' when this
    thread does not hold it); ``lock`` is that lock, taken when a write finds
    it held by someone else.
    """

    def __init__(self, store: RedisStore, name: str, label: str, *,
                 lifetime: float | None, token: Callable[[], str], lock: Any) -> None:
        self._store, self._name, self._label = store, name, label
        self._ttl = _ttl(lifetime)
        self._token, self._lock = token, lock
        self._keys = _keys(store, name, _STEP_PARTS)
        self._get, self._has, self._set, self._pop = (store.script(s)
                                                      for s in (_GET, _HAS, _SET, _POP))
        self._popitem, self._clear = store.script(_POPITEM), store.script(_CLEAR)
        self._len, self._scan = store.script(_LEN), store.script(_SCAN)
        self._closed = False

    def _run(self, script: Any, args: list[Any], doing: str) -> Any:
        if self._closed:
            raise ValueError(_CLOSED)
        me = self._token()
        try:
            return script(self._keys, [me, self._ttl, *args], f"{doing} {self._label}")
        except redis.ResponseError as e:
            problem = str(e).partition("SHMSHARE ")[2]
            if problem == "LOCKED" and not me:
                with self._lock:  # wait our turn, then write as the holder
                    return self._run(script, args, doing)
            raise self._error(problem, doing) from (None if problem else e)

    def _error(self, problem: str, doing: str) -> Exception:
        where = f"{self._label} on {self._store.address}"
        if problem == "GONE":
            return ObjectGoneError(f"{doing}: {where} is gone (unlinked, or its lifetime "
                                   "lease ended after its last holder detached); create it "
                                   "again to use the name")
        if problem == "LOST":
            return LockLostError(f"{doing}: this process's hold of the lock of {where} ended "
                                 "(its lease ran out while it was paused or cut off); the "
                                 "write was refused, as another holder may have the lock now")
        return ObjectGoneError(f"{doing}: {where}: unexpected reply {problem!r}")

    # -- the interface -----------------------------------------------------------------

    def dict_get(self, key: bytes, cmp_len: int, *, held: bool = False) -> bytes | None:
        data: bytes | None = self._run(self._get, [key[:cmp_len]], "get")
        return data

    def dict_read_versioned(self, key: bytes, cmp_len: int
                            ) -> tuple[bytes | memoryview | None, int, int]:
        return self.dict_get(key, cmp_len), -1, 0  # no shared versions: never cached

    def dict_contains(self, key: bytes, cmp_len: int, *, held: bool = False) -> bool:
        return bool(self._run(self._has, [key[:cmp_len]], "contains"))

    def dict_set(self, key: bytes, cmp_len: int, value: bytes, *,
                 only_if_absent: bool = False, held: bool = False) -> bool:
        return bool(self._run(self._set, [key[:cmp_len], key, value,
                                          "1" if only_if_absent else ""], "set"))

    def dict_store(self, key: bytes, cmp_len: int, value: bytes) -> None:
        self.dict_set(key, cmp_len, value)

    def store(self, key: bytes, cmp_len: int, value: bytes, value_len: int) -> int:
        self.dict_set(key, cmp_len, value)
        return 0

    def dict_pop(self, key: bytes, cmp_len: int, *, held: bool = False) -> bytes | None:
        data: bytes | None = self._run(self._pop, [key[:cmp_len]], "pop")
        return data

    def dict_len(self, *, held: bool = False) -> int:
        return int(self._run(self._len, [], "len"))

    def dict_clear(self, *, held: bool = False) -> None:
        self._run(self._clear, [], "clear")

    def dict_popitem(self, *, held: bool = False) -> tuple[bytes, bytes] | None:
        item = self._run(self._popitem, [], "popitem")
        return None if item is None else (bytes(item[0]), bytes(item[1]))

    def dict_scan(self, after_seq: int = -1, *, reverse: bool = False, values: bool = True,
                  held: bool = False, decode: Callable[[bytes], Any] | None = None
                  ) -> list[tuple[int, Any, bytes | None]]:
        flat = self._run(self._scan, [after_seq, "1" if reverse else "", "1" if values else "",
                                      _SCAN_PAGE], "scan")
        return [(int(float(flat[i])), flat[i + 1] if decode is None else decode(flat[i + 1]),
                 flat[i + 2]) for i in range(0, len(flat), 3)]

    def recycle(self, view: memoryview) -> None:
        """Nothing is lent: Redis replies are bytes of their own."""

    def check(self) -> str | None:
        return None  # the server keeps its structures whole; nothing to verify here

    def stats(self) -> dict[str, int]:
        return {"entries": self.dict_len()}

    def close(self) -> None:
        """Detached: every later step raises ValueError, as a detached heap's does."""
        self._closed = True
