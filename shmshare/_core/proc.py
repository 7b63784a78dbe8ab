"""Process liveness the kernel guarantees: tokens in a table of robust mutexes.

``token()`` names this process; ``alive(token)`` says whether the process
that got it still lives.  See ``src/proc.c`` for why this is safe against
pid reuse and works across PID namespaces that share the IPC namespace.

A token is ``uid << 32 | table << 29 | slot << 17 | generation``: the
table (one System V segment per user, the first of a few candidate keys that
is ours), the slot in it, and the slot's generation.  Tables of other users
are attached read-only to answer ``alive``; nobody can write a table but its
owner.  The table lives as long as the system (it is never removed: 256 KiB
per user); ``ipcrm`` of it makes every current token look dead.
"""

from __future__ import annotations

import errno
import os
import threading

from ..errors import SegmentExistsError, SegmentNotFoundError, ShmLimitError, ShmshareError
from . import IPC_CREAT, IPC_EXCL, fork_hooks, shmget, stat
from ._lib import ffi, lib
from .results import failure

__all__ = ["alive", "holder_pid", "learn", "table_shmids", "token"]

_NSLOTS = 4096                      # 12 bits of slot
_SIZE = 64 * (_NSLOTS + 1)
_CANDIDATES = 8                     # 3 bits of table index
_KEY_BASE = 0x7E000000
_GEN_BITS = 17

_lock = threading.Lock()
_me = 0                             # this process's token; 0: not registered yet
# (uid, table index) -> (shmid, address, slots).  Tables are attached with a
# bare shmat and never detached: the kernel marks a dead owner's mutex only
# if the table is still mapped when the process exits (an Attachment would
# be detached by the interpreter's shutdown, before the process is gone).
_tables: dict[tuple[int, int], tuple[int, object, int]] = {}


def _key(uid: int, index: int) -> int:
    return _KEY_BASE | ((uid * _CANDIDATES + index) * 0x9E3779B1 & 0xFFFFFF)


def _ours(shmid: int, uid: int) -> bool:
    st = stat(shmid)
    return st.uid == uid and st.cuid == uid and not st.mode & 0o022 and st.size >= _SIZE


def _table(uid: int, index: int, create: bool) -> tuple[int, object, int] | None:
    """(attachment, pointer, slots) of table ``index`` of ``uid``; None if not there."""
    got = _tables.get((uid, index))
    if got is not None:
        return got
    key = _key(uid, index)
    try:
        shmid = shmget(key, 0, 0)
    except SegmentNotFoundError:
        if not create:
            return None
        try:
            shmid = shmget(key, _SIZE, IPC_CREAT | IPC_EXCL | 0o644)
        except SegmentExistsError:
            shmid = shmget(key, 0, 0)
    except ShmshareError:
        return None                 # e.g. a segment of another user we may not read
    try:
        if not _ours(shmid, uid):
            return None
    except ShmshareError:
        return None
    out = ffi.new("void **")
    if lib.shms_shmat(shmid, int(not create), out):
        return None
    ptr = out[0]
    if lib.shms_proc_check(ptr) != 0 if create else ffi.cast("uint64_t *", ptr)[0] == 0:
        lib.shms_shmdt(ptr)
        return None                 # a segment of ours at that key, but not a table
    got = (shmid, ptr, int(lib.shms_proc_slots(_SIZE)))
    lib.shms_proc_know(uid, index, ptr, got[2])
    _tables[(uid, index)] = got
    return got


def _register() -> int:
    uid = os.geteuid()
    for index in range(_CANDIDATES):
        t = _table(uid, index, create=True)
        if t is None:
            continue
        slot, gen = ffi.new("uint32_t *"), ffi.new("uint32_t *")
        rc = lib.shms_proc_register(t[1], t[2], slot, gen)
        if rc == errno.ENOSPC:
            raise ShmLimitError(f"the process table is full: {t[2]} processes of this user "
                                "use shmshare at once")
        if rc:
            raise failure(rc, "registering in the process table")
        return uid << 32 | index << 29 | int(slot[0]) << _GEN_BITS | int(gen[0])
    raise ShmLimitError(f"no usable process table for uid {uid}: all {_CANDIDATES} "
                        "candidate keys are taken by segments of other users")


def token() -> int:
    """This process's token (registered on first use, again after a fork)."""
    global _me
    if _me:
        return _me
    with _lock:
        if not _me:
            _me = _register()
            lib.shms_sync_set_me(_me)  # the sync fast take's copy (cleared in a forked child)
        return _me


def _split(tok: int) -> tuple[int, int, int, int]:
    return (tok >> 32, (tok >> 29) & 7, (tok >> _GEN_BITS) & (_NSLOTS - 1),
            tok & ((1 << _GEN_BITS) - 1))


def alive(tok: int) -> bool:
    """True while the process that got ``tok`` from :func:`token` lives.

    0 (no holder) is never alive.  A token whose table cannot be read (removed
    with ipcrm, another user's table we may not read) counts as dead only if
    the table is gone; unreadable means alive, so nothing is taken from a
    live process.
    """
    if tok <= 0:
        return False
    if tok == _me:
        return True
    uid, index, slot, gen = _split(tok)
    t = _table(uid, index, create=uid == os.geteuid())
    if t is None:
        try:
            shmget(_key(uid, index), 0, 0)
        except SegmentNotFoundError:
            return False
        except ShmshareError:
            return True
        return False
    return bool(lib.shms_proc_alive(t[1], t[2], slot, gen))


def learn(tok: int) -> None:
    """Make ``tok``'s table known to the C core (``shms_proc_token_alive``)."""
    uid, index, _, _ = _split(tok)
    _table(uid, index, create=uid == os.geteuid())


def holder_pid(tok: int) -> int:
    """The pid (in its own PID namespace) of the process that got ``tok``; 0 if unknown."""
    uid, index, slot, _ = _split(tok)
    t = _tables.get((uid, index))
    return int(lib.shms_proc_pid(t[1], slot)) if t is not None and tok > 0 else 0


def table_shmids() -> set[int]:
    """Ids of the process tables this process has attached (the tests' leak check skips them)."""
    return {t[0] for t in _tables.values()}


def _forget_in_child() -> None:
    # The table slot is held by a thread of the parent: the child has no token.
    global _me, _lock
    _me = 0
    _lock = threading.Lock()


fork_hooks.at_fork(after_in_child=_forget_in_child)
