"""Opening a key file and its segment in one C call (src/named.c), and descriptors
owned from the instant they exist: the two places where an interrupt landing
between a C call and the Python that takes over what it made would leak a
locked key file (see docs/concepts/locks-and-recovery.md)."""

from __future__ import annotations

import errno
from typing import Any, NamedTuple

from . import Attachment, ShmStat, owned_map
from ._lib import ffi, lib

__all__ = ["NamedOpen", "named_open", "named_release", "open_fd", "release_fd"]


class NamedOpen(NamedTuple):
    """What :func:`named_open` found: the key file ``fd`` (locked; the caller
    unlocks and closes it), its inode and record, the segment and its stat."""

    fd: int
    dev: int
    ino: int
    fsize: int
    record: bytes
    proj_id: int
    key: int
    stat: ShmStat
    attachment: Attachment
    cell: Any  # the words fd came in: named_release (or dropping it) closes fd


def named_open(dir: str, path: str, ipcns: int, readonly: bool = False) -> NamedOpen | None:
    """Check the project directory ``dir``, open and lock its key file ``path``, read
    its record (which must name no other IPC namespace than ``ipcns``), attach the
    segment at its key, in one call (src/named.c); None when anything is not the
    common case (then nothing is left open, locked or attached)."""
    # Owned by a destructor from before the call: dropped at any moment (an
    # interrupt), it unlocks and closes the key file the call left open.
    out = ffi.new("int64_t[]", lib.SHMS_NAMED_FIELDS)
    out[0] = -1  # no descriptor yet (0 would be stdin's)
    owner = ffi.gc(out, lib.shms_named_release)  # (it keeps out alive)
    record = ffi.new("char[]", lib.SHMS_RECORD_MAX)
    try:
        # The call is the alloc of the object that owns the mapping (owned_map): an
        # interrupt at any point after it drops that object, which detaches.
        for _ in range(3):  # again only if a signal handler took the request
            try:
                ptr = owned_map("char[]", lib.shms_map_named(
                    dir.encode(), path.encode(), int(readonly), ipcns, out, record))
                break
            except MemoryError:
                if out[lib.SHMS_NAMED_STATUS] != lib.SHMS_MAP_NOT_RUN:
                    lib.shms_named_release(out)  # (nothing is held: SLOW releases all)
                    return None
        else:
            return None
        w = list(out)
        st = ShmStat(key=w[8], shmid=w[9], size=w[10], uid=w[11], gid=w[12], cuid=w[13],
                     cgid=w[14], mode=w[15], dest=bool(w[16]), locked=bool(w[17]),
                     cpid=w[18], lpid=w[19], nattch=w[20], atime=w[21], dtime=w[22],
                     ctime=w[23])
        att = Attachment(st.shmid, st.size, readonly, ptr)
        return NamedOpen(w[0], w[1], w[2], w[3], ffi.buffer(record, w[5])[:], w[4], w[6],
                         st, att, owner)
    except BaseException:
        # Interrupted (KeyboardInterrupt) after the call: the key file is released
        # here; the mapping by its owner, now or when dropped.
        lib.shms_named_release(out)
        raise


def named_release(got: NamedOpen) -> None:
    """Unlock and close the key file of ``got``, in one C call (idempotent)."""
    lib.shms_named_release(got.cell)


def open_fd(path: str, flags: int, mode: int) -> tuple[int, Any]:
    """``os.open``, the descriptor owned from the instant it exists: ``(fd, owner)``,
    where dropping ``owner`` or :func:`release_fd` unlocks (flock) and closes it,
    once.  An interrupt at any point leaks nothing.  OSError as ``os.open``."""
    cell = ffi.new("int64_t[1]")
    cell[0] = -1
    owner = ffi.gc(cell, lib.shms_named_release)
    rc = lib.shms_open_fd(path.encode(), flags, mode, owner)
    if rc:
        raise OSError(rc, f"{errno.errorcode.get(rc, rc)}: cannot open {path!r}", path)
    return int(cell[0]), owner


def release_fd(owner: Any) -> None:
    """Unlock and close the descriptor of :func:`open_fd`'s ``owner`` (idempotent)."""
    lib.shms_named_release(owner)
