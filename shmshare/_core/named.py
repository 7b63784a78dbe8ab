"""Opening a key file and its segment in one C call (src/named.c), and descriptors
owned from the instant they exist: the two places where an interrupt landing
between a C call and the Python that takes over what it made would leak a
locked key file (see docs/concepts/locks-and-recovery.md)."""

from __future__ import annotations

import errno
from typing import Any, NamedTuple

from . import Attachment, ShmStat
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


def named_open(path: str, readonly: bool = False) -> NamedOpen | None:
    """Open and lock the key file ``path``, read its record, attach the segment at
    its key, in one call (src/named.c); None when anything is not the common
    case (then nothing is left open, locked or attached)."""
    # Owned by a destructor from before the call: dropped at any moment (an
    # interrupt), it unlocks and closes the key file the call left open.
    out = ffi.new("int64_t[]", lib.SHMS_NAMED_FIELDS)
    out[0] = -1  # no descriptor yet (0 would be stdin's)
    owner = ffi.gc(out, lib.shms_named_release)  # (it keeps out alive)
    record = ffi.new("char[]", lib.SHMS_RECORD_MAX)
    handed = False  # the mapping is being handed to an Attachment (its owner from then)
    try:
        if lib.shms_named_open(path.encode(), int(readonly), out, record):
            return None
        w = list(out)
        st = ShmStat(key=w[8], shmid=w[9], size=w[10], uid=w[11], gid=w[12], cuid=w[13],
                     cgid=w[14], mode=w[15], dest=bool(w[16]), locked=bool(w[17]),
                     cpid=w[18], lpid=w[19], nattch=w[20], atime=w[21], dtime=w[22],
                     ctime=w[23])
        handed = True
        att = Attachment(st.shmid, st.size, readonly, ffi.cast("void *", w[7]))
        return NamedOpen(w[0], w[1], w[2], w[3], ffi.buffer(record, w[5])[:], w[4], w[6],
                         st, att, owner)
    except BaseException:
        # Interrupted (KeyboardInterrupt) after the C call: nothing may stay held.
        # Once handed, the Attachment detaches (now or when dropped): detaching
        # here too could unmap whatever is mapped at that address by then.
        if out[7] and not handed:
            lib.shms_shmdt(ffi.cast("void *", out[7]))
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
