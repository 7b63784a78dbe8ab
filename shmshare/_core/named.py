"""Opening a key file and its segment in one C call (src/named.c), and descriptors
owned from the instant they exist: the two places where an interrupt landing
between a C call and the Python that takes over what it made would leak a
locked key file (see docs/concepts/locks-and-recovery.md)."""

from __future__ import annotations

import errno
import struct
from typing import Any, NamedTuple

from . import Attachment, ShmStat, owned_map
from ._lib import ffi, lib

__all__ = ["NamedOpen", "named_open", "open_fd", "release_fd"]


class NamedOpen(NamedTuple):
    """What :func:`named_open` found: the key file's device and inode (the file is
    closed again, unlocked), its record's proj_id, the segment's key, its stat,
    its mapping, and the fields of its identity header that the call did not
    compare with what it was asked (``fields``: flags, token, payload size,
    creator pid, creation time, inspector pid, last pid before the inspection,
    mount namespace)."""

    dev: int
    ino: int
    proj_id: int
    key: int
    stat: ShmStat
    attachment: Attachment
    fields: tuple[Any, ...]


# The words shms_named_open fills (named.c): creation time is a double.
_WORDS = struct.Struct(f"<{int(lib.SHMS_NAMED_FIELDS) - 5}qdqqqq")


def named_open(dir: str, path: str, name: str, kind: str, ipcns: int, pidns: int,
               readonly: bool = False) -> NamedOpen | None:
    """Check the project directory ``dir``, open and lock its key file ``path``, read
    its record (which must name no other IPC namespace than ``ipcns``), attach the
    segment at its key, verify that its header is ``name``'s, of ``kind``, and let
    the key file go, in one call (src/named.c), which also notes an attach from
    outside PID namespace ``pidns`` (0: unknown) as header.note_pid_namespace
    does; None when anything is not the common case (then nothing is left open,
    locked or attached)."""
    # The words the call fills: plain memory, since the call leaves nothing open
    # in them (a char[] read through a buffer: owned_map's type, already made).
    words = _new("char[]", _WORDS_SIZE)
    buf = ffi.buffer(words)
    # The request points at these (owned_map.c): they live until the call is done.
    d, p = dir.encode("utf-8", "surrogateescape"), path.encode("utf-8", "surrogateescape")
    n, k = name.encode(), kind.encode()
    # The call is the alloc of the object that owns the mapping (owned_map): an
    # interrupt at any point after it drops that object, which detaches.
    for _ in range(3):  # again only if a signal handler took the request
        try:
            ptr = owned_map("char[]", lib.shms_map_named(d, p, n, k, int(readonly), ipcns,
                                                          pidns, words))
            break
        except MemoryError:
            if _WORDS.unpack_from(buf)[_STATUS] != lib.SHMS_MAP_NOT_RUN:
                return None  # the common case it was not: nothing is held
    else:
        return None
    w = _WORDS.unpack_from(buf)
    st = _new_tuple(ShmStat, (*w[8:16], w[16] != 0, w[17] != 0, *w[18:24]))
    att = Attachment(st.shmid, st.size, readonly, ptr)
    return _new_tuple(NamedOpen, (w[1], w[2], w[4], w[6], st, att, w[24:32]))


_STATUS = int(lib.SHMS_NAMED_STATUS)
_WORDS_SIZE = 8 * int(lib.SHMS_NAMED_FIELDS)
_named_words = ffi.new_allocator(lib.shms_named_words, lib.shms_named_free, False)
_new = ffi.new
_new_tuple = tuple.__new__
# The first allocation through an allocator, and the first unpack of a Struct, cost a
# fresh process several µs each that later ones do not: paid here, at import, as
# _core/__init__.py does for the lib functions and types, not by the first open.
_WORDS.unpack_from(ffi.buffer(_named_words("char[]", _WORDS_SIZE)))  # (no descriptor in it)


def open_fd(path: str, flags: int, mode: int) -> tuple[int, Any]:
    """``os.open``, the descriptor owned from the instant it exists: ``(fd, owner)``,
    where dropping ``owner`` or :func:`release_fd` unlocks (flock) and closes it,
    once.  An interrupt at any point leaks nothing.  OSError as ``os.open``."""
    owner = _named_words("char[]", 8)  # -1 in it: no descriptor yet
    rc = lib.shms_open_fd(path.encode(), flags, mode, owner)
    if rc:
        raise OSError(rc, f"{errno.errorcode.get(rc, rc)}: cannot open {path!r}", path)
    return int(ffi.cast("int64_t *", owner)[0]), owner


def release_fd(owner: Any) -> None:
    """Unlock and close the descriptor of :func:`open_fd`'s ``owner`` (idempotent)."""
    lib.shms_named_release(owner)
