"""``SharedLock(url=...)`` and the other synchronisation objects and queues on a store.

With ``url=`` (or ``$SHMSHARE_URL``) SharedLock, SharedRLock, SharedSemaphore,
SharedBoundedSemaphore, SharedEvent, SharedCondition, SharedBarrier and
SharedQueue return the Redis store's own object (:mod:`shmshare.stores.redis`:
leased, fenced locks and permits; a reliable queue; waits that block on the
server), opened by name as a shared object is:

- ``name=None`` makes an anonymous one (a generated name); ``create=None``
  opens or creates, ``True`` must create (FileExistsError), ``False`` must
  find it (FileNotFoundError); a name holds one kind (WrongTypeError).
  What the first creator passed (a semaphore's value, a barrier's parties, a
  queue's maxsize) is kept on the server beside the kind, and whoever opens
  the object later gets that.
- **Lifetime**, as for the other objects on a store (:mod:`.remote`): a
  persistent object (``persist=True``) lives until ``unlink()``; any other
  while some process holds a handle (each renews the TTL of its keys), and
  one lifetime after the last holder detached or died.
- **Pickling** is by reference (url, name, what it was made with), so these
  pass to Pool, ProcessPoolExecutor and Process; the receiver holds a
  handle too, and none of the sender's permits.

They are the store's classes (``isinstance(lock, SharedLock)`` is False);
``lock.token`` is the fencing token of the current hold.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import (
    SegmentExistsError,
    SegmentNotFoundError,
    ShmTypeError,
    ShmValueError,
    WrongTypeError,
)
from ..stores.redis import leases
from ..stores.redis.barrier import Barrier
from ..stores.redis.connection import RedisStore
from ..stores.redis.events import Condition, Event
from ..stores.redis.lock import BoundedSemaphore, Lock, RLock, Semaphore
from ..stores.redis.queue import JoinableQueue
from ..stores.redis.typeids import keys_of
from . import remote
from .remote import _store

__all__ = ["RemoteSync", "open_sync"]

# KEYS: kind, conf.  ARGV: kind, conf, create ('1' must, '0' must not, '' either), TTL ms
# ('' = persist).  -> {'CREATED'|'OPENED'|'EXISTS'|'MISSING'|'WRONGKIND', stored kind, conf,
# 'PERSIST' when the object has no TTL (its creator's choice, which an opener takes)}
_CLAIM = """
local kind = redis.call('GET', KEYS[1])
if kind then
  if ARGV[3] == '1' then return {'EXISTS', kind, ''} end
  if kind ~= ARGV[1] then return {'WRONGKIND', kind, ''} end
  local persist = redis.call('PTTL', KEYS[1]) == -1 and 'PERSIST' or ''
  if ARGV[4] ~= '' and persist == '' then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
  return {'OPENED', kind, redis.call('GET', KEYS[2]) or '', persist}
end
if ARGV[3] == '0' then return {'MISSING', '', ''} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {'CREATED', ARGV[1], ARGV[2], ARGV[4] == '' and 'PERSIST' or ''}
"""


class _SyncHandle(remote.RemoteHandle):
    """The identity of a sync object on a store (what ``shmshare.segment_of`` gives)."""

    def __init__(self, obj: RemoteSync) -> None:
        super().__init__(obj.store, obj.name, obj._kind, anonymous=obj._anonymous,
                         persist=obj._persist)
        self._obj = weakref.ref(obj)

    def remove(self) -> None:
        obj = self._obj()
        if obj is not None:
            obj.destroy()  # type: ignore[attr-defined]
        with self.store.unavailable(f"unlink {self.store_name!r}"):
            self.store.client.delete(*_own_keys(self.store, self.store_name))
        self.detach()


class RemoteSync:
    """What a store's sync object opened with ``url=`` adds: the handle operations
    (``persist``, ``detach()``, ``unlink()``, ``url``; ``shmshare.unlink(obj)`` and the
    other module functions too) and its lifetime lease."""

    _ON_STORE_HANDLE = True  # shared_object's module functions take it
    _seg: _SyncHandle

    _kind: str
    _conf: str
    _persist: bool
    _anonymous: bool
    _lifetime: leases.Lease | None
    name: str
    store: RedisStore

    def _hold(self) -> None:
        keys = [*keys_of(self), *_own_keys(self.store, self.name)]
        store, ms = self.store, int(remote.LIFETIME * 1000)
        self._lifetime = None
        self._seg = _SyncHandle(self)
        self._seg._on_release(self._end_lifetime)
        if self._persist:
            return

        def renew() -> bool:
            with store.unavailable("keep alive"):
                pipe = store.client.pipeline(transaction=False)
                for key in keys:
                    pipe.pexpire(key, ms)
                pipe.execute()
            return True

        renew()
        self._lifetime = lease = leases.hold(renew, remote.LIFETIME)
        weakref.finalize(self, leases.release, lease)

    @property
    def url(self) -> str:
        return self.store.address.url

    @property
    def persist(self) -> bool:
        return self._persist

    def _end_lifetime(self) -> None:
        if self._lifetime is not None:
            leases.release(self._lifetime)
            self._lifetime = None

    def detach(self) -> None:
        """Stop holding the object (a non-persistent one ends one lifetime later)."""
        self._seg.detach()

    def unlink(self) -> None:
        """Delete the object from the server now, for every holder."""
        self._seg.remove()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self._kind, self.url, self.name, self._persist, self.store.trust,
                          self._args(), self._anonymous))

    def _args(self) -> tuple[Any, ...]:
        return ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.store.address}>"


class RemoteLock(RemoteSync, Lock):
    pass


class RemoteRLock(RemoteSync, RLock):
    pass


class RemoteSemaphore(RemoteSync, Semaphore):
    def _args(self) -> tuple[Any, ...]:
        return (self.capacity,)


class RemoteBoundedSemaphore(RemoteSync, BoundedSemaphore):
    def _args(self) -> tuple[Any, ...]:
        return (self.capacity,)


class RemoteEvent(RemoteSync, Event):
    pass


class RemoteCondition(RemoteSync, Condition):
    def _args(self) -> tuple[Any, ...]:
        return (self.lock,)


class RemoteBarrier(RemoteSync, Barrier):
    def _args(self) -> tuple[Any, ...]:
        return (self.parties, self.action, self.timeout)


class RemoteQueue(RemoteSync, JoinableQueue):
    def _args(self) -> tuple[Any, ...]:
        return (self.maxsize,)


def _own_keys(store: RedisStore, name: str) -> list[str]:
    return [store.key(name, "kind"), store.key(name, "conf")]


def _int_arg(what: str, value: Any, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ShmTypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < least:
        raise ValueError(f"{what} must be >= {least}")
    return value


def _make(kind: str, name: str, store: RedisStore, conf: str, args: tuple[Any, ...]) -> Any:
    """The object of ``kind`` named ``name``; ``conf`` is what the server keeps for it."""
    lease = remote.LOCK_LEASE
    if kind == "mlock":
        return RemoteLock(name, store=store, lease=lease)
    if kind == "rlock":
        return RemoteRLock(name, store=store, lease=lease)
    if kind in ("semaphore", "bsemaphore"):
        cls = RemoteSemaphore if kind == "semaphore" else RemoteBoundedSemaphore
        return cls(name, int(conf), store=store, lease=lease)
    if kind == "event":
        return RemoteEvent(name, store=store)
    if kind == "condition":
        lock = args[0] if args else None
        if lock is not None and not isinstance(lock, Lock):
            raise ShmTypeError(
                f"Condition(lock) on a store needs a lock on the same store (a SharedLock "
                f"or SharedRLock made with url=), not {type(lock).__qualname__}")
        return RemoteCondition(name, lock, store=store, lease=lease)
    if kind == "barrier":
        action = args[1] if len(args) > 1 else None
        timeout = args[2] if len(args) > 2 else None
        return RemoteBarrier(name, int(conf), action, timeout, store=store, lease=lease)
    if kind == "queue":
        return RemoteQueue(name, int(conf), store=store, lease=lease)
    raise KeyError(kind)


def _conf_of(kind: str, args: tuple[Any, ...]) -> str:
    """What the first creator's arguments leave on the server (checked here, as the
    shared-memory constructors check them)."""
    if kind in ("semaphore", "bsemaphore"):
        return str(_int_arg("semaphore value", args[0] if args else 1, 0))
    if kind == "barrier":
        if not args:
            raise TypeError("Barrier() needs parties")
        return str(_int_arg("parties", args[0], 1))
    if kind == "queue":
        maxsize = args[0] if args else None
        if maxsize is None:
            return "0"
        return str(max(0, _int_arg("maxsize", maxsize, -(1 << 62))))
    return ""


def open_sync(kind: str) -> Callable[..., Any]:
    """The constructor that ``Shared<kind>(*args, url=...)`` dispatches to."""

    def construct(*args: Any, name: str | None = None, create: bool | None = None,
                  project_dir: Any = None, persist: bool = False, mode: int = 0o600,
                  trust: bool = False, url: str) -> Any:
        from .options import check_options

        check_options(name, create, project_dir, persist, mode, trust)
        conf = _conf_of(kind, args)
        return _open(kind, url, name, create, persist, trust, conf, args)

    return construct


def _open(kind: str, url: str, name: str | None, create: bool | None, persist: bool,
          trust: bool, conf: str, args: tuple[Any, ...]) -> Any:
    store = _store(url, trust)
    anonymous = name is None
    if name is None:
        name, create = f"anon-{uuid.uuid4().hex}", True
    ttl = "" if persist else str(int(remote.LIFETIME * 1000))
    flag = {None: "", True: "1", False: "0"}[create]
    outcome, stored, stored_conf, *rest = store.script(_CLAIM)(
        _own_keys(store, name), [kind, conf, flag, ttl], f"open {kind} {name!r}")
    outcome, stored = outcome.decode(), stored.decode()
    persist = bool(rest and rest[0])
    where = f"{kind} {name!r} on {store.address}"
    if outcome == "EXISTS":
        raise SegmentExistsError(17, f"{where} already exists (create=True); open it with "
                                     "create=None or False, or unlink it first")
    if outcome == "MISSING":
        raise SegmentNotFoundError(2, f"{where} does not exist (create=False); create it "
                                      "first, or pass create=None")
    if outcome == "WRONGKIND":
        raise WrongTypeError(f"{name!r} on {store.address} is a {stored!r}, not a {kind!r}; "
                             "open it with its own class, or use another name")
    stored_conf = stored_conf.decode()
    if kind == "queue" and args and args[0] is not None and stored_conf != conf:
        # As a SharedQueue in shared memory: maxsize=None opens whatever is there.
        raise ShmValueError(f"{name!r} is a SharedQueue of maxsize {stored_conf}, not {conf}; "
                            f"open it with maxsize={stored_conf} or None")
    obj = _make(kind, name, store, stored_conf, args)
    obj._kind, obj._persist, obj._anonymous = kind, persist, anonymous
    obj._hold()
    return obj


def _reopen(kind: str, url: str, name: str, persist: bool, trust: bool,
            args: tuple[Any, ...], anonymous: bool = False) -> Any:
    """Unpickle: open the same object (never a copy)."""
    store = _store(url, trust)
    conf = str(args[0]) if kind in ("semaphore", "bsemaphore", "barrier", "queue") else ""
    obj = _make(kind, name, store, conf, args)
    obj._kind, obj._persist, obj._anonymous = kind, persist, anonymous
    obj._hold()
    return obj


# What StoreDispatch (remote._ON_STORE) calls, by kind.
mlock, rlock = open_sync("mlock"), open_sync("rlock")
semaphore, bsemaphore = open_sync("semaphore"), open_sync("bsemaphore")
event, condition, barrier = open_sync("event"), open_sync("condition"), open_sync("barrier")
queue = open_sync("queue")
