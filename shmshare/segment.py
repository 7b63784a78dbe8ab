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
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _core
from .errors import (
    ObjectGoneError,
    SegmentExistsError,
    SegmentNotFoundError,
    SegmentRemovedError,
    ShmLimitError,
    ShmPermissionError,
    ShmshareError,
    ShmValueError,
    WrongTypeError,
)
from .naming.handoff import add_claim, pin, read_claims
from .naming.header import (
    FLAG_ANONYMOUS,
    FLAG_HEAP,
    FLAG_PERSIST,
    HEADER_SIZE,
    Header,
    note_pid_namespace,
    pid_namespace_shared,
)
from .naming.keys import KeyFile, KeyRecord, key_file_path, resolve_project_dir, validate_name
from .naming.lifecycle import Found, destroy, find_existing, sweep

__all__ = ["Segment"]

Initializer = Callable[[_core.Attachment, int, int], None]
"""Called as ``init(attachment, payload_offset, payload_size)`` on a new segment,
while the key-file lock is still held: no other process can attach until it returns."""

_SWEPT: set[Path] = set()


class _Binding:
    """What the finalizer needs to release a segment — never the Segment itself."""

    __slots__ = (
        "attachment",
        "header",
        "key",
        "key_path",
        "kind",
        "name",
        "offset",
        "persist",
        "project_dir",
        "release_hooks",
        "released",
        "removed",
        "shmid",
        "size",
    )

    def __init__(self, *, kind: str, shmid: int, key: int, attachment: _core.Attachment,
                 offset: int, size: int, header: Header | None = None, name: str | None = None,
                 project_dir: Path | None = None, key_path: Path | None = None) -> None:
        self.kind = kind
        self.shmid = shmid
        self.key = key
        self.attachment = attachment
        self.offset = offset
        self.size = size
        self.header = header
        self.name = name
        self.project_dir = project_dir
        self.key_path = key_path
        self.persist = header.persist if header is not None else True
        self.released = False
        self.removed = False
        self.release_hooks: list[Callable[[], None]] = []


def _release(b: _Binding) -> None:
    """Detach; if this was the last attachment of a named segment, remove it.

    Runs once per Segment: from ``detach()``, when the Segment is garbage
    collected, at interpreter exit, or at the exit of a multiprocessing child.
    """
    if b.released:
        return
    b.released = True
    try:
        if b.key_path is not None and not b.persist and not b.removed:
            _remove_if_last(b)
    finally:
        for hook in b.release_hooks:
            hook()
        if not b.attachment.views_alive():
            b.attachment.detach()
        # else: views still use the memory; the attachment's own destructor
        # calls shmdt when the last of them goes away.


def _names_us(kf: KeyFile, b: _Binding) -> bool:
    """The locked key file ``kf`` still names the segment bound by ``b``.

    Device and inode alone are not enough: a key file deleted by hand (or by
    a tmp cleaner) and created again for a new object may reuse the inode.
    The record's key must also lead to this very segment.
    """
    assert b.header is not None
    if (kf.dev, kf.ino) != (b.header.dev, b.header.ino):
        return False
    record = kf.read()
    if record is None:
        return False
    try:
        key = _core.ftok(str(kf.path), record.proj_id)
        return key == b.key and _core.shmget(key, 0, 0) == b.shmid
    except ShmshareError:
        return False


def _remove_if_last(b: _Binding) -> None:
    assert b.key_path is not None and b.header is not None
    with KeyFile.locked(b.key_path, create=False) as kf:
        # A key file that is gone or names another incarnation stays as it is;
        # the segment is still ours, and nobody can find it by name any more.
        named = kf is not None and _names_us(kf, b)
        try:
            st = _core.stat(b.shmid)
        except SegmentRemovedError:
            return
        if st.nattch > 1 or st.dest:
            return  # another attachment (maybe a forked child) still uses it
        destroy(Found(b.shmid, b.key, b.header, b.attachment, st))
        if named:
            assert kf is not None
            kf.unlink()
        b.removed = True


_LIVE: weakref.WeakSet[Segment] = weakref.WeakSet()


def _release_all() -> None:
    for seg in list(_LIVE):
        seg._finalizer()


class _ForkToken:
    pass


_FORK_TOKEN = _ForkToken()


def _install_child_exit_hook(_: object) -> None:
    # multiprocessing's fork and forkserver children leave through os._exit,
    # which skips atexit; its own finalizers do run, so release through one.
    import multiprocessing.util as mpu

    mpu.Finalize(None, _release_all, exitpriority=-10)


def _register_multiprocessing_hook() -> None:
    import multiprocessing.util as mpu

    mpu.register_after_fork(_FORK_TOKEN, _install_child_exit_hook)


_register_multiprocessing_hook()


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
            binding = _create_anonymous("segment", size, mode=mode, shm_flags=flags)
        else:
            binding = _open_named("segment", name, size, create=create, project_dir=project_dir,
                                  persist=persist, mode=mode, readonly=readonly, shm_flags=flags)
        self._bind(binding)

    # -- construction ---------------------------------------------------------------

    def _bind(self, binding: _Binding) -> None:
        if binding.header is not None and not binding.attachment.readonly:
            view = binding.attachment.memoryview()
            try:
                note_pid_namespace(view)
            finally:
                view.release()
        self._b = binding
        self._finalizer = weakref.finalize(self, _release, binding)
        _LIVE.add(self)

    @classmethod
    def _open(cls, kind: str, name: str | None, size: int, *, create: bool | None,
              project_dir: str | os.PathLike[str] | None, persist: bool, mode: int,
              init: Initializer | None = None, heap: bool = False) -> Segment:
        """For shmshare's object types: a segment of ``kind``, initialised by ``init``."""
        self = cls.__new__(cls)
        extra = FLAG_HEAP if heap else 0
        if name is None:
            binding = _create_anonymous(kind, size, mode=mode, init=init, extra_flags=extra)
        else:
            binding = _open_named(kind, name, size, create=create, project_dir=project_dir,
                                  persist=persist, mode=mode, init=init, extra_flags=extra)
        self._bind(binding)
        return self

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
        self._bind(_Binding(kind="raw", shmid=shmid, key=st.key, attachment=att, offset=0,
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

    def _on_release(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when this attachment is released (before shmdt)."""
        self._b.release_hooks.append(hook)

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
        n = b.attachment.views_alive()
        if n:
            raise BufferError(
                f"cannot detach segment {self._label()}: {n} memoryview(s) or array(s) "
                "still use its memory; release them (del or .release()) first")
        self._finalizer()

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
                if kf is not None and _names_us(kf, b):
                    destroy(Found(b.shmid, b.key, b.header, b.attachment, self.stat()))
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
        b = self._b
        if b.released:
            raise ValueError(f"cannot pickle detached segment {self._label()}")
        if b.header is not None and not b.persist:
            # Removed with its last attachment: stay attached until the receiver is.
            pin(id(b), self, _claims_reader(b))
        if b.key_path is not None:
            return (_unpickle_named, (b.kind, b.name, str(b.project_dir)))
        if b.header is not None:
            return (_reattach_anonymous, (b.kind, b.shmid, b.header.token))
        return (Segment.from_id, (b.shmid,))

    def _label(self) -> str:
        b = self._b
        return repr(b.name) if b.name is not None else f"shmid={b.shmid}"

    def __repr__(self) -> str:
        b = self._b
        state = "detached" if b.released else f"{b.size} bytes"
        where = f"{b.name!r} in {str(b.project_dir)!r}" if b.name is not None else (
            "anonymous" if b.header is not None else f"key={b.key:#x}")
        return f"<shmshare.Segment {where} shmid={b.shmid} {state}>"


# -- creation and opening -------------------------------------------------------------------


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool):
        raise ShmValueError(f"size must be an int, not {type(size).__name__}")
    if size <= 0:
        raise ShmValueError(f"size must be > 0 to create a segment, not {size}")


def _create_anonymous(kind: str, size: int, *, mode: int, shm_flags: int = 0,
                      init: Initializer | None = None, extra_flags: int = 0) -> _Binding:
    _check_size(size)
    total = HEADER_SIZE + size
    shmid = _core.shmget(_core.IPC_PRIVATE, total, _core.IPC_CREAT | (mode & 0o777) | shm_flags)
    try:
        att = _core.shmat(shmid, total)
    finally:
        # Marked for removal before anything else can fail: from here on the
        # kernel frees it when the last process detaches or dies.
        _core.rmid(shmid)
    header = Header(kind=kind, name="", payload_size=size, flags=FLAG_ANONYMOUS | extra_flags)
    try:
        if init is not None:
            init(att, HEADER_SIZE, size)
        _write_header(att, header)
    except BaseException:
        att.detach()
        raise
    return _Binding(kind=kind, shmid=shmid, key=0, attachment=att, offset=HEADER_SIZE,
                    size=size, header=header)


def _claims_reader(b: _Binding) -> Callable[[], int | None]:
    def claims() -> int | None:
        if b.released:
            return None
        view = b.attachment.memoryview()
        try:
            return read_claims(view)
        finally:
            view.release()
    return claims


def _gone(what: str) -> ObjectGoneError:
    return ObjectGoneError(
        f"{what} was gone before this process received it: every process that used it, "
        "its sender too, had detached or exited (a multiprocessing child waits only "
        "briefly at exit for its receivers). Keep it alive in the sender until the "
        "receiver has it, give it a name with persist=True, or make it with a "
        "shmshare.Manager(), whose objects live until shutdown()")


def _reattach_anonymous(kind: str, shmid: int, token: int) -> Segment:
    """Unpickle an anonymous segment: attach by id, verify its token, claim it."""
    try:
        st = _core.stat(shmid)
        att = _core.shmat(shmid, st.size)
    except (SegmentRemovedError, ShmValueError, ShmPermissionError):
        # EIDRM; EINVAL: no such id; EACCES: the id now names another user's segment
        raise _gone(f"anonymous {kind} (shmid={shmid})") from None
    view = att.memoryview()
    try:
        header = Header.read(view)
        if header is not None and header.token == token and header.anonymous:
            add_claim(view)
    finally:
        view.release()
    if header is None or header.token != token or not header.anonymous:
        att.detach()
        raise _gone(f"anonymous {kind} (shmid={shmid}, an id that now names another segment)")
    self = Segment.__new__(Segment)
    self._bind(_Binding(kind=header.kind, shmid=shmid, key=0, attachment=att,
                        offset=HEADER_SIZE, size=header.payload_size, header=header))
    return self


def _unpickle_named(kind: str, name: str, project_dir: str) -> Segment:
    """Unpickle a named segment: open it by name and claim it (see naming.handoff)."""
    try:
        self = _reopen_named(kind, name, project_dir)
    except SegmentNotFoundError:
        raise _gone(f"{kind} {name!r} in {project_dir!r}") from None
    view = self._b.attachment.memoryview()
    try:
        add_claim(view)
    finally:
        view.release()
    return self


def _reopen_named(kind: str, name: str, project_dir: str) -> Segment:
    self = Segment.__new__(Segment)
    self._bind(_open_named(kind, name, 0, create=False, project_dir=project_dir,
                           persist=False, mode=0o600))
    return self


def _open_named(kind: str, name: str, size: int, *, create: bool | None,
                project_dir: str | os.PathLike[str] | None, persist: bool, mode: int,
                readonly: bool = False, shm_flags: int = 0, init: Initializer | None = None,
                extra_flags: int = 0) -> _Binding:
    validate_name(name)
    if create is not False and size:
        _check_size(size)
    pdir = resolve_project_dir(project_dir)
    if pdir not in _SWEPT:
        _SWEPT.add(pdir)
        sweep(pdir)
    path = key_file_path(pdir, name)
    existed = path.exists()
    with KeyFile.locked(path, create=create is not False, mode=mode) as kf:
        if kf is None:
            raise SegmentNotFoundError(2, f"no object named {name!r} in {str(pdir)!r}", str(path))
        record = kf.read()
        found = find_existing(kf, record, name, readonly=readonly) if record else None
        if found is not None:
            return _bind_found(found, kind, name, size, create, pdir, path)
        if create is False:
            raise SegmentNotFoundError(
                2, f"no object named {name!r} in {str(pdir)!r} (its key file is stale)", str(path))
        try:
            _check_size(size)
            return _create_named(kf, kind, name, size, pdir, record, persist=persist, mode=mode,
                                 shm_flags=shm_flags, init=init, extra_flags=extra_flags)
        except BaseException:
            if not existed or record is None:
                kf.unlink()  # bad input must not leave a key file behind
            raise


def _bind_found(found: Found, kind: str, name: str, size: int, create: bool | None,
                pdir: Path, path: Path) -> _Binding:
    try:
        if create is True:
            raise SegmentExistsError(17, f"{name!r} already exists in {str(pdir)!r}", str(path))
        if found.header.kind != kind:
            raise WrongTypeError(
                f"{name!r} in {str(pdir)!r} is a {found.header.kind}, not a {kind}; open it with "
                f"the matching type or choose another name")
        if size > found.header.payload_size:
            raise ShmValueError(
                f"{name!r} exists with {found.header.payload_size} bytes, fewer than the {size} "
                f"asked for; open it with size=0 or remove it first")
    except BaseException:
        found.attachment.detach()
        raise
    return _Binding(kind=kind, shmid=found.shmid, key=found.key, attachment=found.attachment,
                    offset=HEADER_SIZE, size=found.header.payload_size, header=found.header,
                    name=name, project_dir=pdir, key_path=path)


def _create_named(kf: KeyFile, kind: str, name: str, size: int, pdir: Path,
                  old: KeyRecord | None, *, persist: bool, mode: int, shm_flags: int,
                  init: Initializer | None, extra_flags: int) -> _Binding:
    total = HEADER_SIZE + size
    first = old.proj_id if old is not None else 1
    for proj_id in [first, *[p for p in range(1, 256) if p != first]]:
        # The record is written before shmget, so a creator killed right
        # after shmget leaves a key file that points at its segment.
        kf.write(KeyRecord(proj_id, kind, persist))
        key = _core.ftok(str(kf.path), proj_id)
        try:
            shmid = _core.shmget(key, total, _core.IPC_CREAT | _core.IPC_EXCL | (mode & 0o777)
                                 | shm_flags)
            break
        except SegmentExistsError:
            continue  # ftok collision: that key belongs to another segment
    else:
        raise ShmLimitError(f"all 255 ftok keys of {str(kf.path)!r} are taken by other segments")
    flags = (FLAG_PERSIST if persist else 0) | extra_flags
    header = Header(kind=kind, name=name, payload_size=size, flags=flags, proj_id=proj_id,
                    dev=kf.dev, ino=kf.ino)
    try:
        att = _core.shmat(shmid, total)
    except BaseException:
        _core.rmid(shmid)
        raise
    try:
        if init is not None:
            init(att, HEADER_SIZE, size)
        _write_header(att, header)
    except BaseException:
        _core.rmid(shmid)
        att.detach()
        raise
    return _Binding(kind=kind, shmid=shmid, key=key, attachment=att, offset=HEADER_SIZE,
                    size=size, header=header, name=name, project_dir=pdir, key_path=kf.path)


def _write_header(att: _core.Attachment, header: Header) -> None:
    view = att.memoryview()
    try:
        header.write(view)
    finally:
        view.release()
