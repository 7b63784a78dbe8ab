"""The Manager's synchronisation and queue typeids on a Redis store.

``shmshare.Manager(url=...)`` hands out SharedDict, SharedNamespace and
SharedValue on the store through their own ``url=``; the typeids below are
the store's own classes (leased, fenced locks; a reliable queue; events,
conditions and barriers blocking on the server).  ``Queue`` and
``JoinableQueue`` are both a :class:`.queue.JoinableQueue`, as both are a
``queue.Queue`` in multiprocessing's managers.
"""

from __future__ import annotations

from typing import Any

from shmshare._proxy_repr import proxy_classes
from shmshare.stores.redis import leases
from shmshare.stores.redis.connection import RedisStore
from shmshare.stores.redis.events import Barrier, Condition, Event
from shmshare.stores.redis.lock import BoundedSemaphore, Lock, RLock, Semaphore
from shmshare.stores.redis.queue import JoinableQueue

__all__ = ["TYPEIDS", "Keeper", "keys_of", "make"]

TYPEIDS = ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition", "Barrier",
           "Queue")


def _store_str(self: Any, base: type) -> str:
    return f"<{base.__name__} {getattr(self, 'name', '')!r}>"


# The store's own classes with the repr of multiprocessing's proxies (_proxy_repr.py),
# as the shared-memory Manager's objects have; ``str()`` gives the store's.
_PROXIES = proxy_classes(
    {"Lock": Lock, "RLock": RLock, "Semaphore": Semaphore, "BoundedSemaphore": BoundedSemaphore,
     "Event": Event, "Condition": Condition, "Barrier": Barrier}, __name__, "", _store_str)
LockProxy, RLockProxy, SemaphoreProxy, BoundedSemaphoreProxy = (
    _PROXIES["Lock"], _PROXIES["RLock"], _PROXIES["Semaphore"], _PROXIES["BoundedSemaphore"])
EventProxy, ConditionProxy, BarrierProxy = (
    _PROXIES["Event"], _PROXIES["Condition"], _PROXIES["Barrier"])


def make(typeid: str, name: str, store: RedisStore, lease: float, *args: Any) -> Any:
    """A new object of ``typeid`` named ``name`` on ``store``, made with ``args``."""
    if typeid == "Lock":
        return LockProxy(name, store=store, lease=lease)
    if typeid == "RLock":
        return RLockProxy(name, store=store, lease=lease)
    if typeid in ("Semaphore", "BoundedSemaphore"):
        cls = SemaphoreProxy if typeid == "Semaphore" else BoundedSemaphoreProxy
        return cls(name, *args, store=store, lease=lease)
    if typeid == "Event":
        return EventProxy(name, store=store)
    if typeid == "Condition":
        lock = args[0] if args else None
        if lock is not None and not isinstance(lock, Lock):
            raise TypeError(f"Manager(url=...).Condition(lock) needs a lock made by the same "
                            f"manager (m.Lock() or m.RLock()), not {type(lock).__qualname__}")
        return ConditionProxy(name, lock, store=store, lease=lease)
    if typeid == "Barrier":
        parties, action, timeout = args  # Manager.Barrier passes all three
        return BarrierProxy(name, parties, action, timeout, store=store, lease=lease)
    if typeid == "Queue":
        return JoinableQueue(name, *args, store=store, lease=lease)
    raise KeyError(typeid)


def keys_of(obj: Any) -> list[str]:
    """The server keys of a store object (a Condition's own lock included)."""
    found: list[str] = []
    for attr in ("_keys", "_k"):
        keys = getattr(obj, attr, None)
        if isinstance(keys, dict):
            found.extend(keys.values())
        elif isinstance(keys, (list, tuple)):
            found.extend(keys)
    lock = getattr(obj, "lock", None)
    if isinstance(lock, Lock) and lock is not obj:
        found.extend(keys_of(lock))
    return found


class Keeper:
    """The objects a Manager made on a store, whose TTL it renews while it lives: the
    objects of a Manager killed before ``shutdown()`` expire one ``lifetime`` later.
    (Keys an object first creates after the last renewal have no TTL yet.)"""

    def __init__(self, store: RedisStore, lifetime: float) -> None:
        self.store, self.lifetime = store, lifetime
        self.objects: list[Any] = []
        self._lease: leases.Lease | None = None

    def add(self, obj: Any) -> None:
        self.objects.append(obj)
        self._expire(keys_of(obj))
        if self._lease is None:
            self._lease = leases.hold(self._renew, self.lifetime)

    def _renew(self) -> bool:
        self._expire([k for obj in list(self.objects) for k in keys_of(obj)])
        return True

    def _expire(self, keys: list[str]) -> None:
        if keys:
            with self.store.unavailable("keep manager objects alive"):
                pipe = self.store.client.pipeline(transaction=False)
                for key in keys:
                    pipe.pexpire(key, int(self.lifetime * 1000))
                pipe.execute()

    def destroy_all(self) -> None:
        """Stop renewing and delete every object's keys."""
        if self._lease is not None:
            leases.release(self._lease)
        objects, self.objects = self.objects, []
        for obj in objects:
            obj.destroy()
