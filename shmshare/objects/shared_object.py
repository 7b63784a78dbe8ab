"""``SharedObject``: what every shared object is, whatever it stores.

It owns the object's identity (a segment of its kind: named, found through
a key file, or anonymous), its lifecycle (detach, unlink, ``with``), the
trust check (never read what another user could have written), and pickling
by reference: an object pickles to its class and its segment's address and
is reattached, not copied, in the receiving process (:func:`reopen`, the one
reconstructor).

Each concrete class names its kind (``class SharedDict(HeapObject,
kind="dict")``); the kind is written in the segment header, and
:func:`kind_class` maps it back to the class: the CLI's ``check`` and
``info``, and the Manager, use that registry.

The library's own operations on a handle are module functions that work on
every object and can never collide with the object's data: ``name_of``,
``lock_of``, ``segment_of``, ``detach``, ``unlink``, ``check``, ``stats``.
Objects whose attributes are not user data (all but the Namespace) also
have them as methods (:class:`HandleMethods`), as conveniences.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from .. import _core
from ..errors import ShmPermissionError, ShmTypeError
from ..naming.attach import Address
from ..segment import Segment
from .lock import ObjectLock
from .options import check_options, store_url, unconstructed

__all__ = [
    "HandleMethods",
    "SharedObject",
    "check",
    "detach",
    "kind_class",
    "kinds",
    "lock_of",
    "name_of",
    "reopen",
    "segment_of",
    "stats",
    "unlink",
]

T = TypeVar("T", bound="SharedObject")

_KINDS: dict[str, type[SharedObject]] = {}


_KIND_MODULES = ("array", "dict", "list", "namespace", "queue", "set", "sync", "typed_array",
                 "value", "waits")


def _load_kinds() -> None:
    # Classes register when their module is imported, and ``import shmshare``
    # imports them lazily: load them all before answering for every kind.
    from importlib import import_module

    for module in _KIND_MODULES:
        import_module(f"shmshare.objects.{module}")


def kind_class(kind: str) -> type[SharedObject] | None:
    """The class that stores objects of ``kind`` (the segment header's kind), or None."""
    if kind not in _KINDS:
        _load_kinds()
    return _KINDS.get(kind)


def kinds() -> dict[str, type[SharedObject]]:
    """Every registered kind and its class."""
    _load_kinds()
    return dict(_KINDS)


class SharedObject:
    """The base of every shared object: identity, naming, lifecycle, trust, pickling.

    Subclasses say how their payload is laid out: ``_payload_size()`` bytes,
    written by ``_init_payload`` when the segment is created (before any
    other process can see it) and checked and bound by ``_bind_payload``
    whenever one is opened or unpickled.
    """

    KIND: ClassVar[str] = ""
    _HEAP_FLAG: ClassVar[bool] = False  # the header says "heap" (CLI, extent cleanup)
    _seg: Segment
    _trust: bool

    def __init_subclass__(cls, /, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            if kind in _KINDS:
                raise TypeError(f"kind {kind!r} is already {_KINDS[kind].__qualname__}'s")
            cls.KIND = kind
            _KINDS[kind] = cls

    # -- the payload, per subclass ---------------------------------------------------

    def _payload_size(self) -> int:
        raise NotImplementedError

    def _init_payload(self, att: _core.Attachment, offset: int, size: int, *,
                      mode: int, anonymous: bool, initial: Iterable[tuple[Any, bytes]]) -> Any:
        """Lay out a new payload and store ``initial``; return what ``_bind_payload`` gets."""
        raise NotImplementedError

    def _bind_payload(self, seg: Segment, made: Any) -> None:
        """Bind to ``seg``'s payload (``made`` is ``_init_payload``'s result, or None)."""
        raise NotImplementedError

    def _check_payload(self) -> None:
        """Verify the payload's invariants; CorruptSegmentError if broken."""

    def _payload_stats(self) -> dict[str, int]:
        return {"bytes_total": self._seg.size}

    # -- construction ---------------------------------------------------------------

    def _open(self, *, name: str | None, create: bool | None, project_dir: Any,
              persist: bool, mode: int, trust: bool,
              initial: Iterable[tuple[Any, bytes]] = (), url: str | None = None) -> bool:
        """Open the object ``name`` or create it; True if this call created it.

        ``initial`` (key, encoded value) pairs are stored only on creation,
        inside the creation itself: no process sees the object without them.
        With a store ``url`` (``$SHMSHARE_URL`` by default, unless a
        ``project_dir`` is given) the object lives on that store instead of in
        shared memory (:mod:`.remote`).
        """
        check_options(name, create, project_dir, persist, mode, trust)
        if url is not None and project_dir is not None:
            raise ShmTypeError(f"{type(self).__name__}: project_dir names a directory of "
                               "this machine, and an object on a store is named on the "
                               "server; pass either url= or project_dir=, not both")
        # An explicit project_dir asks for shared memory: it wins over $SHMSHARE_URL.
        url = store_url(url) if project_dir is None else None
        if url is not None:
            return self._open_remote(url, name=name, create=create, persist=persist,
                                     trust=trust, initial=initial)
        made: list[Any] = []

        def init(att: _core.Attachment, offset: int, size: int) -> None:
            made.append(self._init_payload(att, offset, size, mode=mode,
                                           anonymous=name is None, initial=initial))

        seg = Segment._open(type(self).KIND, name, self._payload_size(), create=create,
                            project_dir=project_dir, persist=persist, mode=mode, init=init,
                            heap=self._HEAP_FLAG)
        try:
            if not made:
                _check_trust(seg, trust)
            self._bind_payload(seg, made[0] if made else None)
        except BaseException:
            seg.detach()
            raise
        self._trust = trust
        return bool(made)

    def _open_remote(self, url: str, *, name: str | None, create: bool | None, persist: bool,
                     trust: bool, initial: Iterable[tuple[Any, bytes]],
                     anonymous: bool = False) -> bool:
        """Open the object on the store at ``url`` (kinds that a store can hold)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no store version (it hands out numpy views of "
            f"shared memory, which a server such as {_hide_password(url)} cannot give); "
            "leave url= and $SHMSHARE_URL unset for it, or pass project_dir=, or use "
            "SharedTypedArray (Manager().Array), which a store holds as copies")

    @classmethod
    def _reopen(cls: type[T], address: Address, trust: bool = False, claim: bool = False) -> T:
        """The object at ``address`` (unpickling with ``claim``, the CLI): attached,
        trust-checked, bound."""
        seg = Segment._attach_address(address, claim)
        self = unconstructed(cls)
        try:
            _check_trust(seg, trust)
            self._bind_payload(seg, None)
        except BaseException:
            seg.detach()
            raise
        self._trust = trust
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (reopen, (type(self), self._seg._handoff_address(), self._trust))

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self._seg.detach()

    def _label(self) -> str:
        n = self._seg.name
        return f"{type(self).__name__} {n!r}" if n is not None else (
            f"anonymous {type(self).__name__}")

    def _detached_repr(self) -> str | None:
        return None if self._seg.attached else f"<{self._label()} (detached)>"


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}").geturl()


def reopen(cls: type[SharedObject], address: Address, trust: bool = False) -> SharedObject:
    """Unpickle a shared object: reattach ``cls`` at ``address`` (never a copy)."""
    return cls._reopen(address, trust, claim=True)


class HandleMethods:
    """The handle operations as methods, for objects whose attributes are not user data.

    Each is the module function of the same meaning (``d.name`` is
    ``shmshare.name_of(d)``, ``d.unlink()`` is ``shmshare.unlink(d)``...).
    """

    _seg: Segment
    _lock: ObjectLock

    @property
    def name(self) -> str | None:
        return self._seg.name

    @property
    def lock(self) -> ObjectLock:
        """The object's robust lock: ``with obj.lock:`` makes several operations one."""
        return self._lock

    @property
    def project_dir(self) -> Path | None:
        return self._seg.project_dir

    @property
    def persist(self) -> bool:
        return self._seg.persist

    @property
    def segment(self) -> Segment:
        """The main segment (key, id, stat...)."""
        return self._seg

    def stats(self) -> dict[str, int]:
        """Usage: bytes in extents, used, free, extents, entries, recoveries..."""
        return stats(self)  # type: ignore[arg-type]

    def check(self) -> None:
        """Verify the object's invariants; raise CorruptSegmentError if broken."""
        check(self)  # type: ignore[arg-type]

    def detach(self) -> None:
        """Detach from this process; the last detach removes a non-persistent object."""
        self._seg.detach()

    close = detach

    def unlink(self) -> None:
        """Remove the object from shared memory now (as ``SharedMemory.unlink()``).

        Processes still attached keep access until they detach; the name can
        be created again at once.  (Not ``remove()``: lists and sets have a
        ``remove(item)`` of their own.)
        """
        self._seg.remove()


def _check_trust(seg: Segment, trust: bool) -> None:
    """Refuse to read a segment someone else could have written.

    Reading a heap object means unpickling, which runs code chosen by whoever
    wrote the bytes; an array's header decides where its views point.  Unless
    the caller passes ``trust=True``, the segment must be owned and created by
    this user and writable by nobody else (no group/other write bit).

    With ``trust=True`` the segment's destroy logic may also run when this
    process removes it (see naming.lifecycle.destroy); without, a foreign
    segment is only ever detached, never inspected as a heap or removed.
    """
    if trust:
        seg._b.trust = True
        return
    st = seg._stat_at_open()
    me = os.geteuid()
    problem = None
    if st.uid != me or st.cuid != me:
        problem = f"it is owned by uid {st.uid} (created by uid {st.cuid}), not by you ({me})"
    elif st.mode & 0o022:
        problem = f"its mode {st.mode:o} lets other users write to it"
    if problem:
        raise ShmPermissionError(
            errno.EACCES, f"refusing to read {seg.kind} {seg.name or seg.id!r}: {problem}, and "
            "its contents could have been written by another user (unpickling runs their "
            "code). Pass trust=True if you trust every user who can write to it")


# -- the handle operations, for every shared object ------------------------------------


def _shared(obj: object) -> SharedObject:
    if getattr(type(obj), "_ON_STORE_HANDLE", False):  # a store's sync object (url=)
        return obj  # type: ignore[return-value]
    if not isinstance(obj, SharedObject):
        raise ShmTypeError(f"expected a shmshare shared object, not {type(obj).__name__}")
    return obj


def name_of(obj: SharedObject) -> str | None:
    """The object's name, or None for an anonymous object."""
    return _shared(obj)._seg.name


def segment_of(obj: SharedObject) -> Segment:
    """The object's main segment (key, id, ``stat()``, ``persist``, ``project_dir``)."""
    return _shared(obj)._seg


def lock_of(obj: SharedObject) -> ObjectLock:
    """The object's robust lock (``with shmshare.lock_of(ns): ...``)."""
    lock: ObjectLock = getattr(_shared(obj), "_lock")  # noqa: B009 - every kind sets one
    return lock


def detach(obj: SharedObject) -> None:
    """Detach ``obj`` from this process; the last detach removes a non-persistent object."""
    _shared(obj)._seg.detach()


def unlink(obj: SharedObject) -> None:
    """Remove ``obj`` from shared memory now; attached processes keep access until they detach."""
    _shared(obj)._seg.remove()


def check(obj: SharedObject) -> None:
    """Verify ``obj``'s invariants (heap, index, header); CorruptSegmentError if broken."""
    _shared(obj)._check_payload()


def stats(obj: SharedObject) -> dict[str, int]:
    """``obj``'s usage: bytes in extents, used, free, extents, entries, recoveries..."""
    return _shared(obj)._payload_stats()
