"""Sequences on Redis, each step one script: the items of a SharedList opened with ``url=``
(:class:`RedisItems`) and the bytes of a SharedTypedArray (:class:`RedisBytes`).

The items are the Redis LIST ``entries`` of the object (pickled, in order),
under the same hash tag, lock, lifetime and guard as a dict's entries
(:mod:`.entries`): every script first checks that the object exists, every
write that no other live holder has the object's lock (``with lst.lock:``
elsewhere: the caller then takes the lock and runs the step again as the
holder), and a caller whose hold ended gets LockLostError.  So each method
below is atomic on the server by itself; a change computed in Python (a
slice assignment, ``sort(key=...)``, ``remove(x)``) reads the items and
writes them back with :meth:`RedisItems.list_replace` under the object's
lock, and no other writer can come in between.

Insert and delete at ``i`` move the ``len - i`` items after it inside the
script (LRANGE, LTRIM, RPUSH), as ``list`` does; deleting in the middle
marks the item with an empty string, which no pickle is, and removes the
first such mark (LSET, LREM): O(n) on the server, one round trip.
"""

from __future__ import annotations

from typing import Any

from shmshare.stores.redis.entries import RedisEntries, _step

__all__ = ["RedisBytes", "RedisItems"]

_PUSH_CHUNK = """
local function push_all(list, from, to)
  for a = from, to, 1000 do
    redis.call('RPUSH', KEYS[3], unpack(list, a, math.min(a + 999, to)))
  end
end
local function changed()
  redis.call('INCR', KEYS[7])
  keep()
end
"""


def _items_step(body: str, write: bool) -> str:
    return _step(_PUSH_CHUNK + body, write)


_LEN = _items_step("return redis.call('LLEN', KEYS[3])", write=False)

# ARGV[3]: index (negative from the end).  -> the item or false
_GET = _items_step("return redis.call('LINDEX', KEYS[3], ARGV[3])", write=False)

# ARGV[3], ARGV[4]: start, stop (inclusive, as LRANGE).  -> the items
_RANGE = _items_step("return redis.call('LRANGE', KEYS[3], ARGV[3], ARGV[4])", write=False)

# ARGV[3]: index, ARGV[4]: the item.  -> 1, or 0 when the index is out of range
_SET = _items_step("""
local n = redis.call('LLEN', KEYS[3])
local i = tonumber(ARGV[3])
if i < 0 then i = i + n end
if i < 0 or i >= n then return 0 end
redis.call('LSET', KEYS[3], i, ARGV[4])
changed()
return 1
""", write=True)

# ARGV[3...]: the items to append.  -> the new length
_EXTEND = _items_step("""
if #ARGV >= 3 then push_all(ARGV, 3, #ARGV) changed() end
return redis.call('LLEN', KEYS[3])
""", write=True)

# ARGV[3]: index (clamped as list.insert does), ARGV[4]: the item.  -> 1
_INSERT = _items_step("""
local n = redis.call('LLEN', KEYS[3])
local i = tonumber(ARGV[3])
if i < 0 then i = math.max(0, i + n) else i = math.min(i, n) end
if i == n then
  redis.call('RPUSH', KEYS[3], ARGV[4])
elseif i == 0 then
  redis.call('LPUSH', KEYS[3], ARGV[4])
else
  local tail = redis.call('LRANGE', KEYS[3], i, -1)
  redis.call('LTRIM', KEYS[3], 0, i - 1)
  redis.call('RPUSH', KEYS[3], ARGV[4])
  push_all(tail, 1, #tail)
end
changed()
return 1
""", write=True)

# ARGV[3]: index.  -> {2, item}; {0} when empty; {1} when the index is out of range
_POP = _items_step("""
local n = redis.call('LLEN', KEYS[3])
if n == 0 then return {0} end
local i = tonumber(ARGV[3])
if i < 0 then i = i + n end
if i < 0 or i >= n then return {1} end
local v
if i == n - 1 then
  v = redis.call('RPOP', KEYS[3])
elseif i == 0 then
  v = redis.call('LPOP', KEYS[3])
else
  v = redis.call('LINDEX', KEYS[3], i)
  redis.call('LSET', KEYS[3], i, '')
  redis.call('LREM', KEYS[3], 1, '')
end
changed()
return {2, v}
""", write=True)

# ARGV[3...]: every item, in order (none: the list becomes empty).  -> 1
_REPLACE = _items_step("""
redis.call('DEL', KEYS[3])
if #ARGV >= 3 then push_all(ARGV, 3, #ARGV) end
changed()
return 1
""", write=True)

_EMPTY, _OUT_OF_RANGE = 0, 1


class RedisItems(RedisEntries):
    """The items of one sequence on Redis; every method one script (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        store = self._store
        self._l_len, self._l_get, self._l_range = (store.script(s) for s in (_LEN, _GET, _RANGE))
        self._l_set, self._l_extend = store.script(_SET), store.script(_EXTEND)
        self._l_insert, self._l_pop = store.script(_INSERT), store.script(_POP)
        self._l_replace = store.script(_REPLACE)

    def list_len(self) -> int:
        return int(self._run(self._l_len, [], "len"))

    def list_get(self, i: int) -> bytes | None:
        """Item ``i`` (negative counts from the end), or None when out of range."""
        data: bytes | None = self._run(self._l_get, [i], "get")
        return data

    def list_range(self, start: int = 0, stop: int = -1) -> list[bytes]:
        """Items ``start..stop`` inclusive, as LRANGE (``-1`` is the last)."""
        return list(self._run(self._l_range, [start, stop], "read"))

    def list_set(self, i: int, data: bytes) -> bool:
        """Store item ``i``; False when ``i`` is out of range (nothing changed)."""
        return bool(self._run(self._l_set, [i, data], "set"))

    def list_extend(self, items: list[bytes]) -> int:
        return int(self._run(self._l_extend, items, "extend"))

    def list_insert(self, i: int, data: bytes) -> None:
        self._run(self._l_insert, [i, data], "insert")

    def list_pop(self, i: int) -> bytes:
        """Remove and return item ``i``; IndexError as ``list.pop``."""
        out = self._run(self._l_pop, [i], "pop")
        if out[0] == _EMPTY:
            raise IndexError("pop from empty list")
        if out[0] == _OUT_OF_RANGE:
            raise IndexError("pop index out of range")
        return bytes(out[1])

    def list_replace(self, items: list[bytes]) -> None:
        """Make the items ``items``, in one step."""
        self._run(self._l_replace, items, "write")

    def stats(self) -> dict[str, int]:
        return {"entries": self.list_len()}


# An array's bytes: the Redis STRING ``entries``, whose length never changes.
_B_LEN = _step("return redis.call('STRLEN', KEYS[3])", write=False)

# ARGV[3], ARGV[4]: start, end (inclusive, as GETRANGE).  -> the bytes
_B_GET = _step("return redis.call('GETRANGE', KEYS[3], ARGV[3], ARGV[4])", write=False)

# ARGV[3]: offset, ARGV[4]: the bytes, which must end within the string.  -> 1, or 0
_B_SET = _step("""
if tonumber(ARGV[3]) + #ARGV[4] > redis.call('STRLEN', KEYS[3]) then return 0 end
redis.call('SETRANGE', KEYS[3], ARGV[3], ARGV[4])
redis.call('INCR', KEYS[7])
keep()
return 1
""", write=True)


class RedisBytes(RedisEntries):
    """The fixed-length bytes of one array on Redis (GETRANGE/SETRANGE, one script each)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        store = self._store
        self._b_len, self._b_get = store.script(_B_LEN), store.script(_B_GET)
        self._b_set = store.script(_B_SET)

    def bytes_len(self) -> int:
        return int(self._run(self._b_len, [], "len"))

    def bytes_get(self, start: int, stop: int) -> bytes:
        """Bytes ``start..stop-1`` (``stop > start``)."""
        return bytes(self._run(self._b_get, [start, stop - 1], "read"))

    def bytes_set(self, offset: int, data: bytes) -> None:
        if not self._run(self._b_set, [offset, data], "write"):
            raise IndexError(f"{len(data)} bytes at {offset} do not fit the array")

    def stats(self) -> dict[str, int]:
        return {"bytes": self.bytes_len()}
