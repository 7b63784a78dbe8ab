"""Attach, create and release shmshare's segments: named, anonymous or raw.

A :class:`Binding` (:mod:`.binding`) is everything that must be known to
release an attachment.  The functions here make one:
``open_named`` (find by name under the key-file lock, or create),
and ``create_anonymous`` (a random key of ``ANON_KEY_BASE``'s range, marked for
removal at once, which makes it IPC_PRIVATE); how a
segment travels in a pickle is :mod:`.address`; ``release`` (:mod:`.binding`)
detaches and, for the last user of a named segment, removes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import _core
from .._core import proc
from ..errors import (
    SegmentExistsError,
    SegmentNotFoundError,
    SegmentRemovedError,
    ShmLimitError,
    ShmshareError,
    ShmValueError,
    WrongTypeError,
)
from .binding import Binding, names_us, release
from .header import ANON_KEY_BASE, FLAG_ANONYMOUS, FLAG_PERSIST, HEADER_SIZE, OWN_PIDNS, Header
from .keys import (
    IPC_NAMESPACE,
    KEY_SUFFIX,
    KeyFile,
    KeyRecord,
    key_file_path,
    validate_name,
)
from .lifecycle import Found, find_existing, sweep
from .project_dir import checkable_project_dir, resolve_project_dir

__all__ = [
    "Address",
    "Binding",
    "Initializer",
    "create_anonymous",
    "names_us",
    "open_named",
    "release",
]

Address = tuple[Any, ...]
"""How a segment travels in a pickle: ``("named", kind, name, project_dir)``,
``("anonymous", kind, shmid, token)`` or ``("raw", shmid)``."""

Initializer = Callable[[_core.Attachment, int, int], None]
"""Called as ``init(attachment, payload_offset, payload_size)`` on a new segment,
while the key-file lock is still held: no other process can attach until it returns."""

_SWEPT: set[Path] = set()  # project dirs swept by this process


# -- creation and opening -------------------------------------------------------------------


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool):
        raise ShmValueError(f"size must be an int, not {type(size).__name__}")
    if size <= 0:
        raise ShmValueError(f"size must be > 0 to create a segment, not {size}")


def _anonymous_shmget(total: int, flags: int) -> int:
    """shmget at a free key of ANON_KEY_BASE's range (see there)."""
    for _ in range(64):
        key = ANON_KEY_BASE | int.from_bytes(os.urandom(3), "little")
        try:
            return _core.shmget(key, total, flags | _core.IPC_CREAT | _core.IPC_EXCL)
        except SegmentExistsError:
            continue
    raise ShmLimitError("64 random keys for an anonymous segment were all taken: "
                        f"too many segments in {ANON_KEY_BASE:#x}..{ANON_KEY_BASE | 0xFFFFFF:#x}")


def _anonymous_segment(total: int, flags: int) -> tuple[int, _core.Attachment]:
    """A fresh anonymous segment, attached and already marked for removal.

    Until our shmat it is headerless with nobody attached, which is what a
    creator killed right after its shmget leaves: gc removes such a segment
    without asking whether its creator lives (a pid is no answer across PID
    namespaces), so a creation that loses its segment to gc makes another.
    """
    for _ in range(64):
        shmid = _anonymous_shmget(total, flags)
        try:
            att = _core.shmat(shmid, total)
        except ShmshareError:
            if _removed(shmid):
                continue  # a gc took it before we attached (shmat says EINVAL)
            raise
        finally:
            # Marked for removal before anything else can fail: from here on the
            # kernel frees it when the last process detaches or dies.
            with contextlib.suppress(SegmentRemovedError):
                _core.rmid(shmid)
        return shmid, att
    raise ShmLimitError("64 anonymous segments in a row were removed before this process could "
                        "attach them: is something running `shmshare gc` in a loop?")


def _removed(shmid: int) -> bool:
    try:
        _core.stat(shmid)
    except SegmentRemovedError:
        return True
    return False


def create_anonymous(kind: str, size: int, *, mode: int, shm_flags: int = 0,
                      init: Initializer | None = None, extra_flags: int = 0) -> Binding:
    _check_size(size)
    total = HEADER_SIZE + size
    shmid, att = _anonymous_segment(total, (mode & 0o777) | shm_flags)
    header = Header(kind=kind, name="", payload_size=size, flags=FLAG_ANONYMOUS | extra_flags)
    try:
        if init is not None:
            init(att, HEADER_SIZE, size)
        _write_header(att, header)
    except BaseException:
        att.detach()
        raise
    return Binding(kind=kind, shmid=shmid, key=0, attachment=att, offset=HEADER_SIZE,
                    size=size, header=header)


def open_named(kind: str, name: str, size: int, *, create: bool | None,
                project_dir: str | os.PathLike[str] | None, persist: bool, mode: int,
                readonly: bool = False, shm_flags: int = 0, init: Initializer | None = None,
                extra_flags: int = 0, check_size: bool = True) -> Binding:
    """Open the segment ``name`` of ``kind``, or create it (``create`` as for Segment).

    ``check_size=False`` when the caller checks the payload itself (shared
    objects: their layout, not the byte count, says whether it fits).
    """
    validate_name(name)
    if create is not False and size:
        _check_size(size)
    if create is not True:
        b = _open_existing_fast(kind, name, size if check_size else 0, create, project_dir,
                                readonly)
        if b is not None:
            return b
    pdir = resolve_project_dir(project_dir)
    path = key_file_path(pdir, name)
    with KeyFile.locked(path, create=create is not False, mode=mode) as kf:
        if kf is None:
            raise SegmentNotFoundError(2, f"no object named {name!r} in {str(pdir)!r}", str(path))
        record = kf.read()
        found = find_existing(kf, record, name, readonly=readonly) if record else None
        if found is not None:
            return _bind_found(found, kind, name, size if check_size else 0, create, pdir,
                               path)
        if create is False:
            raise SegmentNotFoundError(
                2, f"no object named {name!r} in {str(pdir)!r} (its key file is stale)", str(path))
        if pdir not in _SWEPT:
            # Orphans are removed before the first create in a project dir, not
            # on every first open: opening an existing name stays cheap.  Our
            # own key file is locked here, so the sweep passes it by.
            _SWEPT.add(pdir)
            sweep(pdir)
        try:
            _check_size(size)
            return _create_named(kf, kind, name, size, pdir, record, persist=persist, mode=mode,
                                 shm_flags=shm_flags, init=init, extra_flags=extra_flags)
        except BaseException:
            if record is None:  # made here (or empty, or garbage): not someone's name
                kf.unlink()  # bad input must not leave a key file behind
            raise


def _open_existing_fast(kind: str, name: str, size: int, create: bool | None,
                        project_dir: str | os.PathLike[str] | None,
                        readonly: bool) -> Binding | None:
    """The common case of opening an existing name, in one C call (_core.named_open):
    the same project-directory, lock, record, namespace and identity checks as the
    general path (find_existing, verified), with fewer syscalls and no Python in
    between.  None: not the common case, nothing held; the general path takes over
    (and finds out what it is)."""
    pdir = checkable_project_dir(project_dir)
    if pdir is None:
        return None
    path = f"{pdir}/{name}{KEY_SUFFIX}"
    got = _core.named_open(pdir, path, name, kind, IPC_NAMESPACE, OWN_PIDNS, readonly)
    if got is None:
        return None
    b = None
    try:  # (an interrupt before this line drops ``got``: its mapping's owner detaches)
        header = Header.verified(kind, name, path, got.proj_id, got.dev, got.ino, got.fields)
        if size > header.payload_size:
            raise _smaller(name, pdir, header.payload_size, size)
        b = Binding(kind=kind, shmid=got.stat.shmid, key=got.key, attachment=got.attachment,
                    offset=HEADER_SIZE, size=header.payload_size, header=header, name=name,
                    project_dir=pdir, key_path=path, stat=got.stat, pidns_noted=True)
        return b
    except BaseException:
        if b is None and got.attachment.attached:
            got.attachment.detach()
        raise


def _smaller(name: str, pdir: Path | str, payload_size: int, size: int) -> ShmValueError:
    return ShmValueError(
        f"{name!r} exists with {payload_size} bytes, fewer than the {size} asked for; "
        f"open it with size=0 or remove it first")


def _bind_found(found: Found, kind: str, name: str, size: int, create: bool | None,
                pdir: Path | str, path: Path | str) -> Binding:
    try:
        if create is True:
            raise SegmentExistsError(17, f"{name!r} already exists in {str(pdir)!r}", str(path))
        if found.header.kind != kind:
            raise WrongTypeError(
                f"{name!r} in {str(pdir)!r} is a {found.header.kind}, not a {kind}; open it with "
                f"the matching type or choose another name")
        if size > found.header.payload_size:
            raise _smaller(name, pdir, found.header.payload_size, size)
    except BaseException:
        found.attachment.detach()
        raise
    return Binding.of_found(found, name, pdir, path)


def _proj_ids(first: int) -> Iterator[int]:
    """The ftok proj_ids a creation tries, ``first`` first.  Never the one whose keys
    are the anonymous range's (``ANON_KEY_BASE``): gc removes a headerless segment
    nobody attached there without asking whether its creator lives."""
    anon = ANON_KEY_BASE >> 24
    if first != anon:
        yield first
    yield from (p for p in range(1, 256) if p not in (first, anon))


def _create_named(kf: KeyFile, kind: str, name: str, size: int, pdir: Path,
                  old: KeyRecord | None, *, persist: bool, mode: int, shm_flags: int,
                  init: Initializer | None, extra_flags: int) -> Binding:
    """Create ``name``'s segment; key file locked.

    Until its header is written the segment is what a creator killed after its
    shmget leaves, and an opener holding the lock of a key file whose ftok key
    collides with ours removes that (lifecycle.verified) without asking about
    our pid; a creation that loses its segment so makes another.
    """
    total = HEADER_SIZE + size
    flags = (FLAG_PERSIST if persist else 0) | extra_flags
    for _ in range(8):
        shmid, key, proj_id = _named_shmget(kf, kind, persist, total,
                                             (mode & 0o777) | shm_flags, old)
        header = Header(kind=kind, name=name, payload_size=size, flags=flags, proj_id=proj_id,
                        dev=kf.dev, ino=kf.ino, key_path=str(kf.path))
        try:
            att = _core.shmat(shmid, total)
        except BaseException as exc:
            if isinstance(exc, ShmshareError) and _removed(shmid):
                continue  # taken before we attached (shmat says EINVAL)
            with contextlib.suppress(SegmentRemovedError):
                _core.rmid(shmid)
            raise
        try:
            if init is not None:
                init(att, HEADER_SIZE, size)
            _write_header(att, header)
            lost = _core.stat(shmid).dest  # removed before the header was there
        except BaseException:
            with contextlib.suppress(SegmentRemovedError):
                _core.rmid(shmid)
            att.detach()
            raise
        if lost:
            att.detach()
            continue
        return Binding(kind=kind, shmid=shmid, key=key, attachment=att, offset=HEADER_SIZE,
                       size=size, header=header, name=name, project_dir=pdir,
                       key_path=kf.path)
    raise ShmLimitError(f"the segment of {str(kf.path)!r} was removed 8 times while being "
                        f"created: another key file's key collides with it and something "
                        f"keeps removing it")


def _named_shmget(kf: KeyFile, kind: str, persist: bool, total: int, flags: int,
                  old: KeyRecord | None) -> tuple[int, int, int]:
    """shmget a new segment at the first free key of ``kf``: (shmid, key, proj_id)."""
    for proj_id in _proj_ids(old.proj_id if old is not None else 1):
        # The record is written before shmget, so a creator killed right
        # after shmget leaves a key file that points at its segment.
        kf.write(KeyRecord(proj_id, kind, persist, creator=proc.token()))
        key = kf.key(proj_id)
        try:
            return _core.shmget(key, total, _core.IPC_CREAT | _core.IPC_EXCL | flags), key, proj_id
        except SegmentExistsError:
            continue  # ftok collision: that key belongs to another segment
    raise ShmLimitError(f"all 254 ftok keys of {str(kf.path)!r} are taken by other segments")


def _write_header(att: _core.Attachment, header: Header) -> None:
    view = att.memoryview()
    try:
        header.write(view)
    finally:
        view.release()

