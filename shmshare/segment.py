"""``Segment``: one System V shared-memory segment, named, anonymous or raw.

* **Named** (``Segment("name", size)``): found through a key file in a
  project directory (see :mod:`shmshare.naming.keys`), verified by its header, and
  removed — segment and key file — when the last process detaches, unless
  created with ``persist=True``.
* **Anonymous** (``Segment(None, size)``): ``IPC_PRIVATE``, marked for removal
  (IPC_RMID) right after the creator attaches, so the kernel frees it when its
  last user detaches or dies, even after SIGKILL.  Linux lets processes that
  know its id (children, or anyone it is pickled to) still attach it.
* **Raw** (``Segment.from_key(key)`` / ``Segment.from_id(shmid)``): a segment
  another program made; no header, never removed unless you call ``remove()``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _core
from ._core import fork_hooks
from .errors import SegmentRemovedError, ShmValueError
from .naming import releases
from .naming.address import address_of, attach_address
from .naming.attach import (
    Address,
    Binding,
    Initializer,
    create_anonymous,
    names_us,
    open_named,
)
from .naming.handoff import pin, read_claims
from .naming.header import FLAG_HEAP, Header, note_pid_namespace, pid_namespace_shared
from .naming.keys import KeyFile
from .naming.lifecycle import Found, destroy

__all__ = ["Segment"]


def _install_child_exit_hook() -> None:
    # multiprocessing's fork and forkserver children leave through os._exit,
    # which skips atexit; its own finalizers do run, so release through one.
    import multiprocessing.util as mpu

    mpu.Finalize(None, releases.release_all, exitpriority=-10)


fork_hooks.multiprocessing_child(_install_child_exit_hook)


class Segment:
    """A System V shared-memory segment attached in this process.

    ``Segment(name, size)`` opens the named segment or creates it
    (``create=None``); ``create=True`` insists on creating
    (``shmshare.SegmentExistsError`` otherwise), ``create=False`` on
    opening (``shmshare.SegmentNotFoundError``).  ``name=None`` makes an
    anonymous segment, shared with children and through pickling.

    ``.buf`` is a memoryview of the ``size`` usable bytes.  Detach with
    ``.detach()`` or a ``with`` block; detaching while views of ``.buf`` are
    alive raises BufferError rather than risking a crash.
    """

    def __init__(self, name: str | None = None, size: int = 0, *, create: bool | None = None,
                 project_dir: str | os.PathLike[str] | None = None, persist: bool = False,
                 mode: int = 0o600, readonly: bool = False, hugetlb: bool = False,
                 noreserve: bool = False) -> None:
        flags = (_core.SHM_HUGETLB if hugetlb else 0) | (_core.SHM_NORESERVE if noreserve else 0)
        if name is None:
            if create is False:
                raise ShmValueError("an anonymous segment (name=None) can only be created")
            binding = create_anonymous("segment", size, mode=mode, shm_flags=flags)
        else:
            binding = open_named("segment", name, size, create=create, project_dir=project_dir,
                                  persist=persist, mode=mode, readonly=readonly, shm_flags=flags)
        self._bind(binding)

    # -- construction ---------------------------------------------------------------

    def _bind(self, binding: Binding) -> None:
        if (binding.header is not None and not binding.attachment.readonly
                and not binding.pidns_noted):
            view = binding.attachment.memoryview()
            try:
                note_pid_namespace(view)
            finally:
                view.release()
        self._b = binding
        self._release_key = releases.track(self, binding)  # for its one release

    @classmethod
    def _open(cls, kind: str, name: str | None, size: int, *, create: bool | None,
              project_dir: str | os.PathLike[str] | None, persist: bool, mode: int,
              init: Initializer | None = None, heap: bool = False) -> Segment:
        """For shmshare's object types: a segment of ``kind``, initialised by ``init``
        when it is created.  An existing one is opened whatever its size (the
        object checks its own layout)."""
        extra = FLAG_HEAP if heap else 0
        if name is None:
            binding = create_anonymous(kind, size, mode=mode, init=init, extra_flags=extra)
        else:
            binding = open_named(kind, name, size, create=create, project_dir=project_dir,
                                 persist=persist, mode=mode, init=init, extra_flags=extra,
                                 check_size=False)
        return cls._from_binding(binding)

    @classmethod
    def _from_binding(cls, binding: Binding) -> Segment:
        self = cls.__new__(cls)
        self._bind(binding)
        return self

    @classmethod
    def _attach_address(cls, address: Address, claim: bool = False) -> Segment:
        """The segment ``address`` refers to: how every segment and every shared
        object is unpickled (``claim=True``: the receiving end of a pickle)."""
        return cls._from_binding(attach_address(address, claim=claim))

    def _address(self) -> Address:
        b = self._b
        if b.released:
            raise ValueError(f"cannot pickle detached segment {self._label()}")
        return address_of(b)

    @classmethod
    def from_key(cls, key: int, size: int = 0, *, create: bool | None = None,
                 mode: int = 0o600, readonly: bool = False) -> Segment:
        """A raw segment by System V key (e.g. one a C program made with ``ftok``).

        The whole segment is ``.buf``; shmshare writes no header into it and
        never removes it unless you call ``remove()``.
        """
        if key == _core.IPC_PRIVATE:
            raise ShmValueError("key 0 is IPC_PRIVATE; use Segment(None, size) instead")
        flags = {None: _core.IPC_CREAT, True: _core.IPC_CREAT | _core.IPC_EXCL, False: 0}[create]
        if flags and size <= 0 and create is True:
            raise ShmValueError("size must be > 0 to create a segment")
        shmid = _core.shmget(key, size if flags else 0, flags | (mode & 0o777))
        return cls.from_id(shmid, readonly=readonly)

    @classmethod
    def from_id(cls, shmid: int, *, readonly: bool = False) -> Segment:
        """A raw segment by shmid (as listed by ``ipcs -m``)."""
        st = _core.stat(shmid)
        att = _core.shmat(shmid, st.size, readonly=readonly)
        self = cls.__new__(cls)
        self._bind(Binding(kind="raw", shmid=shmid, key=st.key, attachment=att, offset=0,
                            size=st.size))
        return self

    # -- properties -----------------------------------------------------------------

    @property
    def buf(self) -> memoryview:
        """A memoryview of the usable bytes (the identity header excluded)."""
        b = self._b
        if b.released:
            raise ValueError("segment is detached")
        return b.attachment.memoryview()[b.offset:b.offset + b.size]

    @property
    def size(self) -> int:
        return self._b.size

    @property
    def key(self) -> int:
        """The System V key (0 for anonymous segments)."""
        return self._b.key

    @property
    def id(self) -> int:
        """The shmid, as ``ipcs -m`` shows it."""
        return self._b.shmid

    @property
    def name(self) -> str | None:
        return self._b.name

    @property
    def kind(self) -> str:
        return self._b.kind

    @property
    def project_dir(self) -> Path | None:
        return self._b.project_dir

    @property
    def persist(self) -> bool:
        return self._b.persist

    @property
    def header(self) -> Header | None:
        return self._b.header

    @property
    def attached(self) -> bool:
        return not self._b.released

    def _attachment(self) -> _core.Attachment:
        """The raw attachment, for shmshare's object types built on segments."""
        return self._b.attachment

    def pid_namespace_shared(self) -> bool:
        """True while every process that attached shares this one's PID namespace.

        Lock words name thread ids; only then can a lock word that names a
        thread which cannot hold it be called damaged rather than foreign.
        """
        return self._pid_namespace_check()()

    def _pid_namespace_check(self) -> Callable[[], bool]:
        """:meth:`pid_namespace_shared` as a function that holds only the mapping
        (objects keep it; a reference to the Segment would keep it attached)."""
        att = self._attachment()
        if self._b.header is None:
            return lambda: False

        def check() -> bool:
            view = att.memoryview()
            try:
                return pid_namespace_shared(view)
            finally:
                view.release()
        return check

    def _before_detach(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` first in an explicit ``detach()``, before live views are counted."""
        self._b.detach_hooks.append(hook)

    def _on_release(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when this attachment is released (before shmdt)."""
        self._b.release_hooks.append(hook)

    def _stat_at_open(self) -> _core.ShmStat:
        """The IPC_STAT taken while opening (once), else a fresh one: for the trust
        check right after the open, which then costs no syscall."""
        st, self._b.stat = self._b.stat, None
        return st if st is not None else self.stat()

    def stat(self) -> _core.ShmStat:
        """``shmctl(IPC_STAT)``: owner, mode, nattch, pids and times."""
        return _core.stat(self._b.shmid)

    def chmod(self, mode: int) -> None:
        """Change the permission bits (IPC_SET)."""
        _core.set_attrs(self._b.shmid, mode=mode & 0o777)

    def chown(self, uid: int = -1, gid: int = -1) -> None:
        """Change the owner and/or group (IPC_SET); -1 keeps the current value."""
        _core.set_attrs(self._b.shmid, uid=uid, gid=gid)

    def memlock(self, lock: bool = True) -> None:
        """Pin the segment in RAM (SHM_LOCK), or unpin it (SHM_UNLOCK)."""
        _core.memlock(self._b.shmid, lock)

    # -- lifecycle ------------------------------------------------------------------

    def detach(self) -> None:
        """Detach from this process; the last detach removes a non-persistent named segment.

        Raises BufferError (and stays attached) while views of ``.buf`` exist.
        """
        b = self._b
        if b.released:
            return
        for hook in b.detach_hooks:
            hook()
        # A mapping shared with another object of this process is not unmapped now:
        # views of it (maybe the other object's) stay valid, so they are no obstacle.
        n = b.attachment.views_alive() if b.attachment.user_count() <= 1 else 0
        if n:
            raise BufferError(
                f"cannot detach segment {self._label()}: {n} memoryview(s) or array(s) "
                "still use its memory; release them (del or .release()) first")
        releases.release_now(self._release_key)

    def remove(self) -> None:
        """Remove the segment now (and its key file); attached processes keep their access.

        The memory is freed when the last process detaches; the name can be
        created again at once.
        """
        b = self._b
        if b.removed:
            return
        if b.key_path is not None:
            assert b.header is not None
            with KeyFile.locked(b.key_path, create=False) as kf:
                if kf is not None and names_us(kf, b):
                    st = self.stat()
                    destroy(Found(b.shmid, b.key, b.header, b.attachment, st), trust=b.trust,
                            st=st)
                    kf.unlink()
                    b.removed = True
                    return
        if b.header is not None and b.header.anonymous:
            b.removed = True  # marked for removal at creation already
            return
        try:
            _core.rmid(b.shmid)
        except SegmentRemovedError:
            pass
        b.removed = True

    unlink = remove  # the name multiprocessing.shared_memory and shmshare's objects use

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Segment._attach_address, (self._handoff_address(), True))

    def _handoff_address(self) -> Address:
        """The address to pickle; a segment that its last detach removes is pinned
        (kept attached here) until a receiver has attached it (naming.handoff)."""
        address = self._address()
        b = self._b
        if b.header is not None and not b.persist:
            pin(id(b), self, _claims_reader(b))
        return address

    def _label(self) -> str:
        b = self._b
        return repr(b.name) if b.name is not None else f"shmid={b.shmid}"

    def __repr__(self) -> str:
        b = self._b
        state = "detached" if b.released else f"{b.size} bytes"
        where = f"{b.name!r} in {str(b.project_dir)!r}" if b.name is not None else (
            "anonymous" if b.header is not None else f"key={b.key:#x}")
        return f"<shmshare.Segment {where} shmid={b.shmid} {state}>"


def _claims_reader(b: Binding) -> Callable[[], int | None]:
    def claims() -> int | None:
        if b.released:
            return None
        view = b.attachment.memoryview()
        try:
            return read_claims(view)
        finally:
            view.release()
    return claims
