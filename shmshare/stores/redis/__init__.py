"""The Redis store: connections, leased and fenced locks, a reliable queue, events,
and the entries under SharedDict, SharedNamespace and SharedValue with ``url=``
(see docs/howto/redis.md)."""

from shmshare.stores.redis.connection import RedisStore, StoreURL, parse_url
from shmshare.stores.redis.lock import BoundedSemaphore, Lock, RLock, Semaphore

__all__ = ["BoundedSemaphore", "Lock", "RLock", "RedisStore", "Semaphore", "StoreURL",
           "parse_url"]
