"""What the Redis Event, Condition and Barrier share: blocking on one's own wake list.

Every waiter has an id and blocks in BLPOP on its own list ``wake:<id>``
(per-waiter lists keep a wake-up that arrives while the waiter reconnects;
pub/sub would lose it).  A wake-up also leaves the marker ``woke:<id>``, which
a waiter reads when a BLPOP comes back empty: a BLPOP that took the wake-up
but whose reply was lost (a reset, a timeout, redis-py's retry) does not lose
it.  Each wake-up is pushed by the Lua script that changes the state, in the
same step, so none falls between a waiter's check of the state and its sleep.
"""

from __future__ import annotations

import time

from shmshare.stores.errors import StoreUnavailableError
from shmshare.stores.redis.connection import MAX_BLOCK, RedisStore

__all__ = ["PUSH", "TRIES", "Waits", "backoff", "check_lease", "deadline_of", "slice_of"]

TRIES = 4  # failed connections in a row that a blocking wait rides out


def backoff(failures: int) -> float:
    """Seconds to sleep after the ``failures``-th failure in a row."""
    return float(min(0.05 * 2 ** failures, 0.5))

# Pushes a wake-up to one waiter; one its waiter never took (it died) expires.  The
# marker ``woke:<id>`` keeps the wake-up's payload for a minute: a waiter whose BLPOP
# took the wake-up but lost the reply (a connection reset or timed out) finds it there.
PUSH = """
local function push_wake(prefix, id, msg)
  redis.call('RPUSH', prefix .. 'wake:' .. id, msg)
  redis.call('PEXPIRE', prefix .. 'wake:' .. id, 60000)
  redis.call('SET', prefix .. 'woke:' .. id, msg, 'PX', 60000)
end
local function was_woken(prefix, id)
  return redis.call('GET', prefix .. 'woke:' .. id)
end
"""


def check_lease(lease: float) -> None:
    if lease <= 0.1:
        raise ValueError(f"lease must be longer than 0.1 s, not {lease!r}")


def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None or timeout < 0 else time.monotonic() + timeout


def slice_of(deadline: float | None, longest: float = MAX_BLOCK) -> float:
    """Seconds to block next (> 0), or 0 once ``deadline`` has passed."""
    if deadline is None:
        return longest
    left = deadline - time.monotonic()
    return 0.0 if left <= 0 else max(0.01, min(longest, left))


class Waits:
    """The store, key names, and blocking on one's own wake list."""

    def __init__(self, name: str, store: RedisStore, parts: tuple[str, ...]) -> None:
        self.name, self.store = name, store
        self._prefix = store.key(name, "")
        self._keys = [store.key(name, part) for part in parts]

    def _block(self, waiter: str, seconds: float,
               deadline: float | None = None) -> bytes | None:
        """Wait up to ``seconds`` for a wake-up pushed to ``waiter``; its payload or None.

        A connection that fails (reset, or silent past the socket timeout) is tried
        again, at most :data:`TRIES` times in a row and not past ``deadline``.
        """
        failures = 0
        while True:
            try:
                return self._block_once(waiter, seconds)
            except StoreUnavailableError:
                failures += 1
                if failures >= TRIES or (deadline is not None
                                         and time.monotonic() >= deadline):
                    raise
                time.sleep(backoff(failures))

    def _block_once(self, waiter: str, seconds: float) -> bytes | None:
        with self.store.unavailable(f"wait on {self.name!r}"):
            got = self.store.blocking_client.blpop([self._prefix + "wake:" + waiter], seconds)
            if got is None:  # a wake-up whose reply was lost left its marker
                marker = self.store.client.get(self._prefix + "woke:" + waiter)
                if marker is None:
                    return None
                got = (b"", marker)
        payload = got[1]
        return payload if isinstance(payload, bytes) else str(payload).encode()

    def destroy(self) -> None:
        """Delete this object's keys from the server."""
        with self.store.unavailable(f"destroy {self.name!r}"):
            self.store.client.delete(*self._keys)
