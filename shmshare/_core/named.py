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
    unlocks and closes it), its inode and size, the segment's key, its stat and
    its mapping."""

    fd: int
    dev: int
    ino: int
    fsize: int
    key: int
    stat: ShmStat
    attachment: Attachment
    cell: Any  # the words fd came in: named_release (or dropping it) closes fd


def named_open(dir: str, path: str, ipcns: int, readonly: bool = False) -> NamedOpen | None:
    """Check the project directory ``dir``, open and lock its key file ``path``, read
    its record (which must name no other IPC namespace than ``ipcns``), attach the
    segment at its key, in one call (src/named.c); None when anything is not the
    common case (then nothing is left open, locked or attached)."""
    # The words the call fills, owned by a destructor from before the call: dropped
    # at any moment (an interrupt), they unlock and close the key file the call left
    # open.  A char[] read as words through a memoryview: a first open pays cffi
    # for each new type it names, and owned_map's is this one.
    cell = ffi.new("char[]", 8 * lib.SHMS_NAMED_FIELDS)
    words = memoryview(ffi.buffer(cell)).cast("q")
    words[0] = -1  # no descriptor yet (0 would be stdin's)
    owner = ffi.gc(cell, lib.shms_named_release)  # (it keeps cell alive)
    try:
        # The call is the alloc of the object that owns the mapping (owned_map): an
        # interrupt at any point after it drops that object, which detaches.
        for _ in range(3):  # again only if a signal handler took the request
            try:
                ptr = owned_map("char[]", lib.shms_map_named(
                    dir.encode(), path.encode(), int(readonly), ipcns, owner))
                break
            except MemoryError:
                if words[lib.SHMS_NAMED_STATUS] != lib.SHMS_MAP_NOT_RUN:
                    return None  # the common case it was not: nothing is held
        else:
            return None
        w = words.tolist()
        w[16] = bool(w[16])
        w[17] = bool(w[17])
        st = ShmStat._make(w[8:24])
        att = Attachment(st.shmid, st.size, readonly, ptr)
        return NamedOpen(w[0], w[1], w[2], w[3], w[6], st, att, owner)
    except BaseException:
        # Interrupted (KeyboardInterrupt) after the call: the key file is released
        # here; the mapping by its owner, now or when dropped.
        lib.shms_named_release(owner)
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
