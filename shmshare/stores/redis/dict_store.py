"""A dict store on Redis: entries in insertion order, with a version for compare-and-set.

Keys are encoded with :func:`shmshare.objects.codec.encode_key`, so key
equality is the shared-memory store's (``1``, ``1.0`` and ``True`` are one
key).  The first ``cmp_len`` bytes — the canonical part — name the entry in
three structures that share the hash tag ``{name}``: ``entries`` (canonical
-> pickled value), ``keys`` (canonical -> the key as first inserted) and the
sorted set ``order`` (canonical -> insertion number from ``seq``), which gives
dict iteration order: overwriting keeps the place, pop-and-reinsert goes last.
``version`` grows on every change; ``compare_and_set`` writes only if it has
not moved since the caller read it (for ``apply``/``mutate``, retried by the
caller).  Every multi-step operation is one Lua script.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shmshare.objects import codec
from shmshare.stores.redis.connection import RedisStore

__all__ = ["DictStore"]

# KEYS: entries, keys, order, seq, version.  ARGV: canonical, key data, value,
# expected version ('' = any).  -> new version, or false when expected differs
_SET = """
if ARGV[4] ~= '' and tonumber(redis.call('GET', KEYS[5]) or '0') ~= tonumber(ARGV[4]) then
  return false
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return redis.call('INCR', KEYS[5])
"""

# KEYS: entries, keys, order, version.  ARGV: canonical.  -> the value or false
_POP = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[4])
return v
"""

# KEYS: entries, version.  ARGV: canonical.  -> {value or false, version}
_READ = """
return {redis.call('HGET', KEYS[1], ARGV[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

# KEYS: entries, keys, order.  ARGV: after seq, count.  -> {seq, key, value, ...}
_SCAN = """
local out = {}
local page = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf', 'WITHSCORES',
                        'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #page, 2 do
  out[#out + 1] = page[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], page[i])
  out[#out + 1] = redis.call('HGET', KEYS[1], page[i])
end
return out
"""


class DictStore:
    """The entries of dict ``name`` on a Redis store (the layer under a SharedDict)."""

    def __init__(self, name: str, *, store: RedisStore) -> None:
        self.name, self.store = name, store
        self._k = {p: store.key(name, p) for p in ("entries", "keys", "order", "seq", "version")}
        self._set, self._pop = store.script(_SET), store.script(_POP)
        self._read, self._scan = store.script(_READ), store.script(_SCAN)

    def _write_keys(self) -> list[str]:
        k = self._k
        return [k["entries"], k["keys"], k["order"], k["seq"], k["version"]]

    def get(self, key: Any) -> tuple[bool, Any]:
        """``(found, value)``."""
        value, _ = self.read(key)
        return (value is not _MISSING), (None if value is _MISSING else value)

    def read(self, key: Any) -> tuple[Any, int]:
        """``(value or _MISSING, version)`` read together, for compare-and-set."""
        data, cmp_len = codec.encode_key(key)
        raw, version = self._read([self._k["entries"], self._k["version"]], [data[:cmp_len]],
                                  f"read {self.name!r}")
        return (_MISSING if raw is None else codec.loads(raw)), int(version)

    def set(self, key: Any, value: Any) -> int:
        """Set ``key`` to ``value``; the new version."""
        data, cmp_len = codec.encode_key(key)
        return int(self._set(self._write_keys(), [data[:cmp_len], data, codec.dumps(value), ""],
                             f"set {self.name!r}"))

    def compare_and_set(self, key: Any, value: Any, expected_version: int) -> int | None:
        """Set only if the dict's version is still ``expected_version``; new version or None."""
        data, cmp_len = codec.encode_key(key)
        result = self._set(self._write_keys(),
                           [data[:cmp_len], data, codec.dumps(value), expected_version],
                           f"compare_and_set {self.name!r}")
        return None if result is None else int(result)

    def pop(self, key: Any) -> tuple[bool, Any]:
        """Remove ``key``; ``(found, value)``."""
        data, cmp_len = codec.encode_key(key)
        k = self._k
        raw = self._pop([k["entries"], k["keys"], k["order"], k["version"]], [data[:cmp_len]],
                        f"pop {self.name!r}")
        return (raw is not None), (None if raw is None else codec.loads(raw))

    def __len__(self) -> int:
        with self.store.unavailable(f"len {self.name!r}"):
            return int(self.store.client.hlen(self._k["entries"]))

    def scan(self, page: int = 100) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` in insertion order, a page per round trip (live, like a dict view)."""
        after = "-inf"
        while True:
            flat = self._scan([self._k["entries"], self._k["keys"], self._k["order"]],
                              [after, page], f"scan {self.name!r}")
            for i in range(0, len(flat), 3):
                if flat[i + 2] is not None:
                    yield codec.decode_key(flat[i + 1]), codec.loads(flat[i + 2])
            if len(flat) < 3 * page:
                return
            after = flat[-3].decode() if isinstance(flat[-3], bytes) else str(flat[-3])

    def destroy(self) -> None:
        """Delete every key of this dict."""
        with self.store.unavailable(f"destroy {self.name!r}"):
            self.store.client.delete(*self._k.values())


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
