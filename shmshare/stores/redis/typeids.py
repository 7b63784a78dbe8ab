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

from shmshare.stores.redis.connection import RedisStore
from shmshare.stores.redis.events import Barrier, Condition, Event
from shmshare.stores.redis.lock import BoundedSemaphore, Lock, RLock, Semaphore
from shmshare.stores.redis.queue import JoinableQueue

__all__ = ["TYPEIDS", "make"]

TYPEIDS = ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition", "Barrier",
           "Queue")


def make(typeid: str, name: str, store: RedisStore, lease: float, *args: Any) -> Any:
    """A new object of ``typeid`` named ``name`` on ``store``, made with ``args``."""
    if typeid == "Lock":
        return Lock(name, store=store, lease=lease)
    if typeid == "RLock":
        return RLock(name, store=store, lease=lease)
    if typeid in ("Semaphore", "BoundedSemaphore"):
        cls = Semaphore if typeid == "Semaphore" else BoundedSemaphore
        return cls(name, *args, store=store, lease=lease)
    if typeid == "Event":
        return Event(name, store=store)
    if typeid == "Condition":
        lock = args[0] if args else None
        if lock is not None and not isinstance(lock, Lock):
            raise TypeError(f"Manager(url=...).Condition(lock) needs a lock made by the same "
                            f"manager (m.Lock() or m.RLock()), not {type(lock).__qualname__}")
        return Condition(name, lock, store=store, lease=lease)
    if typeid == "Barrier":
        parties, action, timeout = args  # Manager.Barrier passes all three
        return Barrier(name, parties, action, timeout, store=store, lease=lease)
    if typeid == "Queue":
        return JoinableQueue(name, *args, store=store, lease=lease)
    raise KeyError(typeid)
