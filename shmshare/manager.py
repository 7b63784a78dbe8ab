"""``shmshare.Manager()``: a drop-in for ``multiprocessing.Manager()`` with no server process.

``multiprocessing.Manager()`` starts a server process and hands out proxies
that send every operation to it.  ``shmshare.Manager()`` hands out objects
that *are* in shared memory: each process operates on them directly.

Lifecycle, as SyncManager's: ``with Manager() as m:``, or ``start()`` /
``shutdown()`` / ``join()``; the same ``ProcessError`` on invalid transitions.
Objects live until ``shutdown()`` (or the end of the ``with`` block),
whichever process made them; then they are removed, and processes still
attached keep access until they detach, as System V allows.  They are named
objects in a directory of the manager's own (``<project dir>/managers/``),
so a shared object stored inside another (``d["k"] = m.list()``) stays valid
in every process until shutdown; a manager whose process was killed is
cleaned up by the next Manager started, or by ``python -m shmshare gc``.

Arguments that only make sense with a server — ``address``, ``authkey``,
``serializer``, ``shutdown_timeout`` — are accepted and ignored; ``ctx`` is
used for ``Pool()``.  ``connect()`` and ``register()`` raise errors that name
the alternative.

``Manager(url="redis://host:6379/0")`` (``$SHMSHARE_URL`` by default) makes
every object on that Redis server instead, for processes on several hosts
(docs/howto/redis.md); ``lease`` is then the lease of its locks, permits,
queue consumers and barrier parties.  Every typeid works there (an Array's
items are copies: no numpy view); none silently falls back to shared memory.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.context import ProcessError
from multiprocessing.managers import RemoteError
from pathlib import Path
from typing import Any, TypeVar, cast

from ._core import proc
from ._proxy_repr import proxy_classes
from .errors import ShmValueError
from .naming.dirs import claim, remove_all, sweep_dead_owners
from .naming.project_dir import default_project_dir
from .objects.dict import SharedDict
from .objects.list import SharedList
from .objects.namespace import SharedNamespace
from .objects.options import store_url
from .objects.queue import SharedQueue
from .objects.set import SharedSet
from .objects.shared_object import SharedObject, detach, unlink
from .objects.sync import (
    SharedBoundedSemaphore,
    SharedEvent,
    SharedLock,
    SharedRLock,
    SharedSemaphore,
)
from .objects.typed_array import SharedTypedArray
from .objects.value import SharedValue
from .objects.waits import SharedBarrier, SharedCondition

__all__ = ["Manager", "ManagerValueError", "SharedDictProxy"]

_INITIAL, _STARTED, _SHUTDOWN = "initial", "started", "shutdown"
K = TypeVar("K")
V = TypeVar("V")
ObjT = TypeVar("ObjT", bound=SharedObject)


class ManagerValueError(ShmValueError, RemoteError):
    """A Manager method refused its arguments (``Pool(0)``): a ValueError, and
    also the ``multiprocessing.managers.RemoteError`` that a SyncManager's
    server sends back for the same call, so code written for either catches it."""

    __str__ = ShmValueError.__str__  # the message, not RemoteError's framed traceback


class SharedDictProxy(SharedDict[K, V]):
    """``Manager().dict()``: a SharedDict whose keys(), values() and items()
    return lists, and whose iterator raises RuntimeError if the dict changes
    size meanwhile, as multiprocessing's DictProxy does."""

    def __iter__(self) -> Iterator[Any]:
        return _SizeCheckedIterator(self, super().__iter__())

    def keys(self) -> list[K]:  # type: ignore[override]
        return list(super().keys())

    def values(self) -> list[V]:  # type: ignore[override]
        return list(super().values())

    def items(self) -> list[tuple[K, V]]:  # type: ignore[override]
        return list(super().items())


class _SizeCheckedIterator(Iterator[Any]):
    """What ``iter(dict)`` gives: the size is taken at ``iter()`` and compared
    at every step (a DictProxy's iterator is a dict iterator in its server)."""

    def __init__(self, d: SharedDict[Any, Any], keys: Iterator[Any]) -> None:
        self._dict = d
        self._keys = keys
        self._size = len(d)

    def __next__(self) -> Any:
        if self._size != len(self._dict):
            self._size = -1  # sticky, as dict's own iterator
            raise RuntimeError("dictionary changed size during iteration")
        return next(self._keys)


def _own_str(self: Any, base: type) -> str:
    return str(cast(Any, base).__repr__(self))  # the shared object's own repr


# The Manager's synchronisation objects: with the repr of multiprocessing's proxies
# (_proxy_repr.py); ``str()`` gives shmshare's own.
_PROXIES = proxy_classes(
    {"Lock": SharedLock, "RLock": SharedRLock, "Semaphore": SharedSemaphore,
     "BoundedSemaphore": SharedBoundedSemaphore, "Event": SharedEvent,
     "Condition": SharedCondition, "Barrier": SharedBarrier}, __name__, "_", _own_str)
_LockProxy: type[SharedLock] = _PROXIES["Lock"]
_RLockProxy: type[SharedRLock] = _PROXIES["RLock"]
_SemaphoreProxy: type[SharedSemaphore] = _PROXIES["Semaphore"]
_BoundedSemaphoreProxy: type[SharedBoundedSemaphore] = _PROXIES["BoundedSemaphore"]
_EventProxy: type[SharedEvent] = _PROXIES["Event"]
_ConditionProxy: type[SharedCondition] = _PROXIES["Condition"]
_BarrierProxy: type[SharedBarrier] = _PROXIES["Barrier"]


# What a Manager on a store hands out for these classes (stores/redis/typeids.py).
_STORE_TYPEIDS: dict[Any, str] = {
    _LockProxy: "Lock", _RLockProxy: "RLock", _SemaphoreProxy: "Semaphore",
    _BoundedSemaphoreProxy: "BoundedSemaphore", _EventProxy: "Event",
    _ConditionProxy: "Condition", _BarrierProxy: "Barrier", SharedQueue: "Queue",
}


def _managers_base(project_dir: Any) -> Path:
    base = Path(project_dir) if project_dir is not None else default_project_dir()
    return base / "managers"


class Manager:
    """A SyncManager-compatible factory of shared objects, with no server process.

    ``shmshare.Manager()`` returns a started manager, as
    ``multiprocessing.Manager()`` does; ``shmshare.Manager(start=False)`` an
    unstarted one, as ``SyncManager()`` is.
    """

    def __init__(self, address: Any = None, authkey: bytes | None = None,
                 serializer: str = "pickle", ctx: Any = None, *,
                 shutdown_timeout: float = 1.0, project_dir: Any = None,
                 start: bool = True, url: str | None = None, lease: float = 10.0) -> None:
        if serializer not in ("pickle", "xmlrpclib"):
            raise ValueError(f"unknown serializer {serializer!r}: use 'pickle' or 'xmlrpclib' "
                             "(shmshare always pickles; the argument is accepted and ignored)")
        self._address = address
        self._ctx = ctx if ctx is not None else multiprocessing.get_context()
        self._base = _managers_base(project_dir)
        self._dir: Path | None = None
        self._owner_pid = os.getpid()
        self._state = _INITIAL
        self._names = itertools.count()
        self._objects: list[SharedObject] = []
        if url is not None and project_dir is not None:
            raise TypeError("Manager: pass url= (objects on a store) or project_dir= "
                            "(shared memory), not both")
        # An explicit project_dir asks for shared memory: it wins over $SHMSHARE_URL.
        self._url = store_url(url) if project_dir is None else None
        self._lease = lease
        self._store: Any = None  # the RedisStore, when url is given
        self._keeper: Any = None  # its sync and queue objects there (typeids.Keeper)
        if start:
            self.start()

    # -- lifecycle, with SyncManager's states and messages ------------------------------

    def start(self, initializer: Callable[..., Any] | None = None, initargs: Any = ()) -> None:
        """Make the manager usable.  There is no server: ``initializer`` (which a
        SyncManager runs in its server process) must be callable but is not run."""
        if self._state != _INITIAL:
            if self._state == _STARTED:
                raise ProcessError("Already started server")
            raise ProcessError("Manager has shut down")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if self._url is not None:
            from .objects.remote import LIFETIME, _store
            from .stores.redis.typeids import Keeper

            self._store = _store(self._url, False)
            self._store.ping()  # a server that is down fails here, naming the url
            self._keeper = Keeper(self._store, LIFETIME)
            self._prefix = f"mgr-{uuid.uuid4().hex[:12]}"
            self._state = _STARTED
            return
        try:
            sweep_dead_owners(self._base)
        except OSError:
            pass  # housekeeping must not stop a manager from starting
        self._dir = claim(self._base / f"manager-{uuid.uuid4().hex}", os.getpid(),
                          proc.token())
        self._state = _STARTED

    def shutdown(self) -> None:
        """Remove every object this manager made (attached processes keep access)."""
        if self._state != _STARTED or os.getpid() != self._owner_pid:
            return
        self._state = _SHUTDOWN
        objects, self._objects = self._objects, []
        for obj in objects:
            try:
                if self._url is not None:
                    unlink(obj)  # on a store: removed now, for every holder
                detach(obj)  # a function: a Namespace's attributes are the user's
            except BufferError:
                pass  # views still alive here: the memory goes when they do
        if self._keeper is not None:
            self._keeper.destroy_all()
        if self._dir is not None:
            remove_all(self._dir)

    def join(self, timeout: float | None = None) -> None:
        """Nothing to wait for: there is no server process."""

    def connect(self) -> None:
        raise NotImplementedError(
            "shmshare.Manager has no server to connect to: share objects by name instead, "
            "e.g. shmshare.SharedDict('name') in every process (see the README)")

    @classmethod
    def register(cls, typeid: str, callable: Any = None, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"shmshare.Manager cannot register {typeid!r}: there is no server process to run "
            "custom objects in. Keep their state in shared objects (SharedDict, SharedList, "
            "Namespace) and their methods in your own class, or use multiprocessing's "
            "BaseManager for server-side objects")

    def __enter__(self) -> Manager:
        if self._state == _INITIAL:
            self.start()
        if self._state != _STARTED:
            raise ProcessError("Unable to start server" if self._state == _INITIAL
                               else "Manager has shut down")
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __del__(self) -> None:
        # As SyncManager's finalizer: a manager dropped without shutdown() shuts
        # down.  At interpreter exit what this needs may be gone already; the
        # directory is then left to the next Manager's sweep or to 'gc'.
        if getattr(self, "_state", None) == _STARTED:
            try:
                self.shutdown()
            except Exception:
                pass

    @property
    def address(self) -> Any:
        """What was passed as ``address`` (there is no server listening)."""
        return self._address

    # -- typeids ---------------------------------------------------------------------

    def _make(self, cls: Callable[..., ObjT], *args: Any, **kwargs: Any) -> ObjT:
        """A new object of ``cls``, made by its own constructor, named in this manager's dir."""
        if self._state != _STARTED:
            raise ProcessError("Manager has shut down" if self._state == _SHUTDOWN
                               else "server not yet started")
        kind = getattr(cls, "KIND")  # noqa: B009
        if self._url is not None:
            return self._make_on_store(cls, kind, *args, **kwargs)
        name = f"{kind}-{os.getpid()}-{next(self._names)}"
        obj = cls(*args, name=name, create=True, project_dir=self._dir, persist=True, **kwargs)
        if os.getpid() == self._owner_pid:
            self._objects.append(obj)
        return obj

    def _make_on_store(self, cls: Callable[..., ObjT], kind: str, *args: Any,
                       **kwargs: Any) -> ObjT:
        name = f"{self._prefix}-{kind}-{os.getpid()}-{next(self._names)}"
        typeid = _STORE_TYPEIDS.get(cls)
        if typeid is not None:
            from .stores.redis.typeids import make

            obj = make(typeid, name, self._store, self._lease, *args)
            if os.getpid() == self._owner_pid:
                self._keeper.add(obj)
            return obj  # type: ignore[no-any-return]
        # Every other typeid takes url=: written against the store interface
        # (_ON_STORES), or its constructor returns the store's class (StoreDispatch).
        obj = cls(*args, name=name, create=True, url=self._url, **kwargs)
        if os.getpid() == self._owner_pid:
            self._objects.append(obj)
        return obj

    def dict(self, *args: Any, **kwargs: Any) -> SharedDictProxy[Any, Any]:
        """As ``dict(*args, **kwargs)`` (keywords are items here, as with dict())."""
        return self._make(SharedDictProxy, dict(*args, **kwargs))

    def list(self, sequence: Iterable[Any] = (), /) -> SharedList[Any]:
        return self._make(SharedList, list(sequence))

    def set(self, iterable: Iterable[Any] = (), /) -> SharedSet[Any]:
        return self._make(SharedSet, set(iterable))

    def Namespace(self, **attrs: Any) -> SharedNamespace:
        """As ``Namespace(**attrs)``: every keyword is an attribute, ``name=`` included."""
        return self._make(SharedNamespace, attrs)

    def Value(self, typecode: Any, value: Any, lock: bool = True) -> SharedValue:
        return self._make(SharedValue, typecode, value, lock=lock)

    def Lock(self) -> SharedLock:
        return self._make(_LockProxy)

    def RLock(self) -> SharedRLock:
        return self._make(_RLockProxy)

    def Semaphore(self, value: int = 1) -> SharedSemaphore:
        return self._make(_SemaphoreProxy, value)

    def BoundedSemaphore(self, value: int = 1) -> SharedBoundedSemaphore:
        return self._make(_BoundedSemaphoreProxy, value)

    def Event(self) -> SharedEvent:
        return self._make(_EventProxy)

    def Condition(self, lock: Any = None) -> SharedCondition:
        return self._make(_ConditionProxy, lock)

    def Barrier(self, parties: int, action: Callable[[], Any] | None = None,
                timeout: float | None = None) -> SharedBarrier:
        return self._make(_BarrierProxy, parties, action, timeout)

    def Array(self, typecode: str, sequence: Any, lock: bool = True) -> SharedTypedArray:
        """``Array(typecode, size_or_sequence)`` as ``multiprocessing.Array``, for every
        :mod:`array` typecode: items and slices are Python objects (``bytes`` for
        ``'c'``, with ``.value`` and ``.raw``; ``str`` for ``'u'``); plus
        ``get_lock()``, ``get_obj()`` and a zero-copy ``numpy()`` view (in shared
        memory; on a store the items are copies and there is no view)."""
        return self._make(SharedTypedArray, typecode, sequence, lock=lock)

    def Queue(self, maxsize: int = 0) -> SharedQueue:
        return self._make(SharedQueue, maxsize)

    JoinableQueue = Queue  # as in multiprocessing's managers: a queue.Queue either way

    def Pool(self, processes: int | None = None, initializer: Any = None,
             initargs: Any = (), maxtasksperchild: int | None = None) -> Any:
        """An ordinary multiprocessing Pool (from ``ctx``): the pool needs no proxy."""
        if self._state != _STARTED:
            raise ProcessError("server not yet started")
        if processes is not None and processes < 1:
            raise ManagerValueError(f"Pool() needs at least 1 process, not {processes}")
        return self._ctx.Pool(processes, initializer, initargs, maxtasksperchild)

    def __reduce__(self) -> Any:
        raise TypeError("a shmshare.Manager is not passed to other processes; pass the "
                        "objects it made (they pickle by reference)")
