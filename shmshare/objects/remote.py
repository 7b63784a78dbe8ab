"""Shared objects on a Redis store: the identity and lifetime behind ``url=``.

An object opened with ``url=`` (or with ``$SHMSHARE_URL`` set) keeps its
entries on the server (:mod:`shmshare.stores.redis.entries`) instead of a
heap; the object's own code is the same, written against
:mod:`shmshare.objects.store`.  What a segment is for a shared-memory
object, a :class:`RemoteHandle` is here: the name, the lifetime, detach and
unlink.

**Lifetime.**  A persistent object (``persist=True``) lives until
``unlink()``.  Any other -- anonymous ones, which get a generated name, and
named ones -- lives while some process holds a handle to it: every handle
renews the object's TTL (a lifetime lease of :data:`LIFETIME` seconds) from
this process's lease renewer, and the server removes the object one
lifetime after the last handle was detached, garbage-collected or its
process died.  This is the shared-memory rule "the last detach removes it",
seen one lease late.  ``unlink()`` removes it at once, for every holder.

**Pickling** is by reference: the class, the url (its password included:
send pickles only where the url may go), the name, ``persist`` and
``trust``.  The receiver, on any host that reaches the server, opens the
same object.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shmshare.stores.redis.connection import RedisStore
    from shmshare.stores.redis.entries import RedisEntries
    from shmshare.stores.redis.lock import RLock

    from .heap_object import HeapObject

__all__ = ["LIFETIME", "LOCK_LEASE", "RemoteHandle", "open_remote", "reopen_remote"]

LIFETIME = 30.0  # seconds an unheld, non-persistent object outlives its last holder
LOCK_LEASE = 10.0  # the lease of an object's lock (``with d.lock:``)


def _store(url: str, trust: bool) -> RedisStore:
    try:
        from shmshare.stores.redis.connection import RedisStore
    except ImportError as e:  # redis-py is an extra
        raise ImportError(f"a store url needs redis-py ({e}); pip install 'shmshare[redis]'"
                          ) from e
    return RedisStore(url, trust=trust)


class RemoteHandle:
    """An object's identity on a store: ``name``, ``persist``, ``detach()``, ``remove()``.

    It stands where a shared-memory object has its Segment (``segment_of``).
    """

    project_dir = None

    def __init__(self, store: RedisStore, store_name: str, kind: str, *, anonymous: bool,
                 persist: bool) -> None:
        self.store, self.store_name, self.kind = store, store_name, kind
        self.anonymous, self.persist = anonymous, persist
        self.attached = True
        self._releases: list[Any] = []

    @property
    def name(self) -> str | None:
        return None if self.anonymous else self.store_name

    @property
    def url(self) -> str:
        return self.store.address.url

    def _on_release(self, hook: Any) -> None:
        self._releases.append(hook)

    def detach(self) -> None:
        """Stop holding the object (its lifetime lease ends one lifetime later)."""
        if not self.attached:
            return
        self.attached = False
        for hook in reversed(self._releases):
            hook()
        self._releases.clear()

    def remove(self) -> None:
        """Delete the object from the server now; every handle then gets ObjectGoneError."""
        from shmshare.stores.redis.entries import remove

        remove(self.store, self.store_name)
        self.detach()

    def __repr__(self) -> str:
        return f"<RemoteHandle {self.kind} {self.store_name!r} on {self.store.address}>"


def _object_lock(name: str, store: RedisStore) -> RLock:
    from shmshare.stores.redis.lock import RLock

    return RLock(name, store=store, lease=LOCK_LEASE)


def open_remote(obj: HeapObject, url: str, *, name: str | None, create: bool | None,
                persist: bool, trust: bool, initial: Iterable[tuple[bytes, int, bytes]],
                anonymous: bool = False, items: Iterable[bytes] | None = None,
                string: bytes | None = None, entries_class: type[RedisEntries] | None = None,
                ) -> tuple[RemoteHandle, RedisEntries, RLock, bool]:
    """Open or create ``obj``'s object on the store at ``url``; (handle, entries, lock, created).

    ``items`` (pickled, in order) makes a sequence, ``string`` an array (its bytes), whose
    entries are ``entries_class``'s (:mod:`shmshare.stores.redis.items`)."""
    from shmshare.stores.redis import leases
    from shmshare.stores.redis.entries import RedisEntries, create_or_open, keep_alive

    store = _store(url, trust)
    kind = type(obj).KIND
    if name is None:  # a new anonymous object
        name, anonymous, create = f"anon-{uuid.uuid4().hex}", True, True
    store_name = name
    label = (f"{type(obj).__name__} {store_name!r}" if not anonymous
             else f"anonymous {type(obj).__name__}")
    lifetime = None if persist else LIFETIME
    created, persist = create_or_open(store, store_name, kind, create, lifetime, initial,
                                      label, items, string)
    lifetime = None if persist else LIFETIME  # an opener takes the creator's choice
    handle = RemoteHandle(store, store_name, kind, anonymous=anonymous, persist=persist)
    lock = _object_lock(store_name, store)
    lock._holder = weakref.ref(obj)

    def token() -> str:
        holds = lock._holds
        return holds[-1].token if holds and lock.held_by_me() else ""

    entries = (entries_class or RedisEntries)(store, store_name, label, lifetime=lifetime,
                                              token=token, lock=lock)
    handle._on_release(entries.close)
    if lifetime is not None:
        lease = leases.hold(lambda: keep_alive(store, store_name, lifetime), lifetime)
        handle._on_release(lambda: leases.release(lease))
        # A handle dropped without detach stops renewing too (the renewer holds no
        # reference to the object, only to its name).
        weakref.finalize(obj, leases.release, lease)
    return handle, entries, lock, created


def reopen_remote(cls: type[HeapObject], url: str, store_name: str, anonymous: bool,
                  persist: bool, trust: bool) -> HeapObject:
    """Unpickle an object of a store: open the same object (never a copy)."""
    from .options import unconstructed

    self = unconstructed(cls)
    self._open_remote(url, name=store_name, create=False, persist=persist, trust=trust,
                      initial=(), anonymous=anonymous)
    return self


# kind -> "module:callable" that makes the store's object for ``cls(*args, url=...)``.
_ON_STORE = {
    "list": "shmshare.objects.remote_list:RemoteList",
    "typed-array": "shmshare.objects.remote_array:RemoteTypedArray",
    **{kind: f"shmshare.objects.remote_sync:{kind}" for kind in (
        "mlock", "rlock", "semaphore", "bsemaphore", "event", "condition", "barrier",
        "queue")},
}


class StoreDispatch:  # first among a class's bases: its __new__ must run
    """``__new__`` of a class whose store version is another class: with ``url=`` (or
    ``$SHMSHARE_URL``, unless ``project_dir=`` asks for shared memory) the constructor
    returns the store's object, made from the same arguments (``_ON_STORE``)."""

    KIND: str

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from .options import store_url

        url = kwargs.get("url")
        if kwargs.get("project_dir") is None and (url := store_url(url)) is not None:
            from importlib import import_module

            module, _, attr = _ON_STORE[cls.KIND].partition(":")
            kwargs["url"] = url
            return getattr(import_module(module), attr)(*args, **kwargs)
        return super().__new__(cls)
