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
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.context import ProcessError
from multiprocessing.managers import RemoteError
from pathlib import Path
from typing import Any

from .errors import ShmValueError
from .naming.dirs import claim, remove_all, sweep_dead_owners
from .naming.keys import default_project_dir
from .objects.array import SharedArray
from .objects.base import HeapObject
from .objects.dict import SharedDict
from .objects.list import SharedList
from .objects.queue import SharedQueue
from .objects.small import SharedNamespace, SharedSet, SharedValue
from .objects.sync import (
    SharedBoundedSemaphore,
    SharedEvent,
    SharedLock,
    SharedRLock,
    SharedSemaphore,
)
from .objects.waits import SharedBarrier, SharedCondition

__all__ = ["Manager", "ManagerValueError", "SharedDictProxy"]

_INITIAL, _STARTED, _SHUTDOWN = "initial", "started", "shutdown"


class ManagerValueError(ShmValueError, RemoteError):
    """A Manager method refused its arguments (``Pool(0)``): a ValueError, and
    also the ``multiprocessing.managers.RemoteError`` that a SyncManager's
    server sends back for the same call, so code written for either catches it."""

    __str__ = ShmValueError.__str__  # the message, not RemoteError's framed traceback


class SharedDictProxy(SharedDict):
    """``Manager().dict()``: a SharedDict whose keys(), values() and items()
    return lists, and whose iterator raises RuntimeError if the dict changes
    size meanwhile, as multiprocessing's DictProxy does."""

    def __iter__(self) -> Iterator[Any]:
        return _SizeCheckedIterator(self, super().__iter__())

    def keys(self) -> list[Any]:  # type: ignore[override]
        return list(super().keys())

    def values(self) -> list[Any]:  # type: ignore[override]
        return list(super().values())

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        return list(super().items())


class _SizeCheckedIterator(Iterator[Any]):
    """What ``iter(dict)`` gives: the size is taken at ``iter()`` and compared
    at every step (a DictProxy's iterator is a dict iterator in its server)."""

    def __init__(self, d: SharedDict, keys: Iterator[Any]) -> None:
        self._dict = d
        self._keys = keys
        self._size = len(d)

    def __next__(self) -> Any:
        if self._size != len(self._dict):
            self._size = -1  # sticky, as dict's own iterator
            raise RuntimeError("dictionary changed size during iteration")
        return next(self._keys)


class _ProxyRepr:
    """The repr of a multiprocessing proxy, for Manager-made synchronisation objects
    (``<EventProxy object, typeid 'Event' at 0x...>``); ``str()`` gives shmshare's own."""

    _PROXY = ("BaseProxy", "")

    def __repr__(self) -> str:
        proxy, typeid = self._PROXY
        return f"<{proxy} object, typeid {typeid!r} at {id(self):#x}>"

    def __str__(self) -> str:
        return super().__repr__()


class _LockProxy(_ProxyRepr, SharedLock):
    _PROXY = ("AcquirerProxy", "Lock")


class _RLockProxy(_ProxyRepr, SharedRLock):
    _PROXY = ("AcquirerProxy", "RLock")


class _SemaphoreProxy(_ProxyRepr, SharedSemaphore):
    _PROXY = ("AcquirerProxy", "Semaphore")


class _BoundedSemaphoreProxy(_ProxyRepr, SharedBoundedSemaphore):
    _PROXY = ("AcquirerProxy", "BoundedSemaphore")


class _EventProxy(_ProxyRepr, SharedEvent):
    _PROXY = ("EventProxy", "Event")


class _ConditionProxy(_ProxyRepr, SharedCondition):
    _PROXY = ("ConditionProxy", "Condition")


class _BarrierProxy(_ProxyRepr, SharedBarrier):
    _PROXY = ("BarrierProxy", "Barrier")


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
                 start: bool = True) -> None:
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
        self._objects: list[HeapObject] = []
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
        try:
            sweep_dead_owners(self._base)
        except OSError:
            pass  # housekeeping must not stop a manager from starting
        self._dir = claim(self._base / f"manager-{uuid.uuid4().hex}", os.getpid())
        self._state = _STARTED

    def shutdown(self) -> None:
        """Remove every object this manager made (attached processes keep access)."""
        if self._state != _STARTED or os.getpid() != self._owner_pid:
            return
        self._state = _SHUTDOWN
        objects, self._objects = self._objects, []
        for obj in objects:
            try:
                obj.detach()
            except BufferError:
                pass  # views still alive here: the memory goes when they do
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

    def _make(self, cls: Any, *args: Any, **kwargs: Any) -> Any:
        if self._state != _STARTED:
            raise ProcessError("Manager has shut down" if self._state == _SHUTDOWN
                               else "server not yet started")
        name = f"{cls.KIND}-{os.getpid()}-{next(self._names)}"
        obj = cls(*args, name=name, create=True, project_dir=self._dir, persist=True, **kwargs)
        if os.getpid() == self._owner_pid:
            self._objects.append(obj)
        return obj

    def dict(self, *args: Any, **kwargs: Any) -> SharedDictProxy:
        d: SharedDictProxy = self._make(_NamedDict)
        if args or kwargs:
            d.update(*args, **kwargs)
        return d

    def list(self, sequence: Any = (), /) -> SharedList:
        lst: SharedList = self._make(_NamedList)
        if sequence:
            lst.extend(sequence)
        return lst

    def set(self, iterable: Any = (), /) -> SharedSet:
        s: SharedSet = self._make(_NamedSet)
        if iterable:
            s.update(iterable)
        return s

    def Namespace(self, **attrs: Any) -> SharedNamespace:
        ns: SharedNamespace = self._make(_NamedNamespace)
        for k, v in attrs.items():
            setattr(ns, k, v)
        return ns

    def Value(self, typecode: Any, value: Any, lock: bool = True) -> SharedValue:
        return self._make(SharedValue, typecode, value, lock)  # type: ignore[no-any-return]

    def Lock(self) -> SharedLock:
        return self._make(_LockProxy)  # type: ignore[no-any-return]

    def RLock(self) -> SharedRLock:
        return self._make(_RLockProxy)  # type: ignore[no-any-return]

    def Semaphore(self, value: int = 1) -> SharedSemaphore:
        return self._make(_SemaphoreProxy, value)  # type: ignore[no-any-return]

    def BoundedSemaphore(self, value: int = 1) -> SharedBoundedSemaphore:
        return self._make(_BoundedSemaphoreProxy, value)  # type: ignore[no-any-return]

    def Event(self) -> SharedEvent:
        return self._make(_EventProxy)  # type: ignore[no-any-return]

    def Condition(self, lock: Any = None) -> SharedCondition:
        return self._make(_ConditionProxy, lock)  # type: ignore[no-any-return]

    def Barrier(self, parties: int, action: Any = None,
                timeout: float | None = None) -> SharedBarrier:
        return self._make(_BarrierProxy, parties, action, timeout)  # type: ignore[no-any-return]

    def Array(self, typecode: str, sequence: Any, lock: bool = True) -> SharedArray:
        """``Array(typecode, sequence_or_size)`` on zero-copy shared storage (a SharedArray).

        As multiprocessing's ArrayProxy: ``len``, indexing and slices (slices
        are numpy views here); plus ``get_lock()`` and ``get_obj()``.
        """
        size = sequence if isinstance(sequence, int) else len(sequence)
        arr: SharedArray = self._make(_NamedArray, (size,), typecode)
        if not isinstance(sequence, int) and size:
            arr[:] = sequence
        return arr

    def Queue(self, maxsize: int = 0) -> SharedQueue:
        return self._make(SharedQueue, maxsize)  # type: ignore[no-any-return]

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


# Named-first constructors: the Manager names every object it makes.
class _NamedDict(SharedDictProxy):
    def __init__(self, *, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)


class _NamedList(SharedList):
    def __init__(self, *, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)


class _NamedSet(SharedSet):
    def __init__(self, *, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)


class _NamedNamespace(SharedNamespace):
    def __init__(self, *, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)


class _NamedArray(SharedArray):
    KIND = "array"

    def __init__(self, shape: Any, dtype: Any, *, name: str, persist: bool = False,
                 **kw: Any) -> None:
        super().__init__(shape, dtype, name=name, persist=persist, **kw)
