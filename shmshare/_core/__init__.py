"""The only Python that touches cffi: typed wrappers over the C core.

One module per concern: this one the System V calls and ``Attachment``;
``mutex`` the robust mutex, ``guard`` how objects hold a lock, ``owner_watch``
damaged-lock detection; ``heap`` (on ``heap_base`` and ``heap_dict``) the
heap; ``sync``/``queue`` the sync records; ``proc`` process tokens;
``results`` what a C result code means, ``slices`` how waits are cut,
``fork_hooks`` what each layer does around a fork.

Everything above this package sees ints, dataclasses, memoryviews and
exceptions, never ``ffi``/``lib``/cdata.  Functions are named after the C
calls they wrap (``shmget``, ``shmat``...), and raise the exceptions of
:mod:`shmshare.errors` instead of returning error codes.
"""

from __future__ import annotations

import errno
import gc
import struct
import sys
import weakref
from typing import Any, NamedTuple

from ..errors import ShmshareError, ShmValueError, from_errno
from ._lib import ffi, lib

__all__ = [
    "IPC_CREAT",
    "IPC_EXCL",
    "IPC_PRIVATE",
    "SHM_HUGETLB",
    "SHM_NORESERVE",
    "Attachment",
    "AttrItems",
    "DictItems",
    "LengthWord",
    "Limits",
    "NamedOpen",
    "OwnerWatch",
    "RobustMutex",
    "ShmStat",
    "ViewItems",
    "explain_shmget_error",
    "ftok",
    "limits",
    "list_ids",
    "memlock",
    "named_open",
    "open_fd",
    "owned_map",
    "release_fd",
    "rmid",
    "set_attrs",
    "shmat",
    "shmget",
    "stat",
]

IPC_PRIVATE: int = lib.IPC_PRIVATE
IPC_CREAT: int = lib.IPC_CREAT
IPC_EXCL: int = lib.IPC_EXCL
SHM_HUGETLB: int = lib.SHM_HUGETLB
SHM_NORESERVE: int = lib.SHM_NORESERVE


# NamedTuple, not a dataclass: dataclasses imports inspect, which costs more
# start-up time than the rest of shmshare._core together.
class ShmStat(NamedTuple):
    """Every field of ``struct shmid_ds`` (IPC_STAT), in plain Python types."""

    key: int
    shmid: int
    size: int
    uid: int
    gid: int
    cuid: int
    cgid: int
    mode: int
    dest: bool
    locked: bool
    cpid: int
    lpid: int
    nattch: int
    atime: int
    dtime: int
    ctime: int


class Limits(NamedTuple):
    """System V shared-memory limits (IPC_INFO) and current usage (SHM_INFO).

    ``shmall`` and ``shm_tot`` count pages; the other sizes count bytes.
    """

    shmmax: int
    shmmin: int
    shmmni: int
    shmseg: int
    shmall: int
    used_ids: int
    shm_tot: int
    shm_rss: int
    shm_swp: int
    page_size: int


def _check(rc: int, what: str, hint: str | None = None) -> None:
    if rc:
        raise from_errno(rc, what, hint)


def _check_id(rc: int, what: str, hint: str | None = None) -> None:
    """Like _check for calls on an existing shmid: EINVAL there means the id is gone."""
    _check(errno.EIDRM if rc == errno.EINVAL else rc, what, hint)


def ftok(path: str, proj_id: int) -> int:
    """``ftok(3)``: the key derived from ``path``'s inode and ``proj_id`` (1..255)."""
    if not 1 <= proj_id <= 255:
        raise ShmValueError(f"proj_id must be in 1..255, not {proj_id}")
    out = ffi.new("int64_t *")
    _check(lib.shms_ftok(path.encode(), proj_id, out), f"ftok({path!r}, {proj_id})")
    return int(out[0])


def limits() -> Limits:
    """The kernel's System V shared-memory limits and usage."""
    out = ffi.new("shms_limits_t *")
    _check(lib.shms_limits(out), "reading System V limits (IPC_INFO)")
    return Limits(
        shmmax=int(out.shmmax), shmmin=int(out.shmmin), shmmni=int(out.shmmni),
        shmseg=int(out.shmseg), shmall=int(out.shmall), used_ids=int(out.used_ids),
        shm_tot=int(out.shm_tot), shm_rss=int(out.shm_rss), shm_swp=int(out.shm_swp),
        page_size=int(out.page_size),
    )


def explain_shmget_error(err: int, key: int, size: int, flags: int) -> str | None:
    """The precise reason behind an ambiguous shmget errno, or None."""
    try:
        lim = limits()
    except ShmshareError:
        return None
    if err == errno.EINVAL:
        if size > lim.shmmax:
            return (f"size {size} exceeds kernel.shmmax={lim.shmmax}; raise it with "
                    f"'sysctl -w kernel.shmmax=...' or use a smaller size")
        if size and size < lim.shmmin:
            return f"size {size} is below kernel.shmmin={lim.shmmin}"
        if not flags & IPC_EXCL and key != IPC_PRIVATE:
            return (f"a segment with key {key:#x} exists and is smaller than the "
                    f"{size} bytes requested; open it with size=0 or remove it")
    if err == errno.ENOSPC:
        if lim.used_ids >= lim.shmmni:
            return (f"kernel.shmmni exhausted: all {lim.shmmni} segment ids are in use; "
                    f"remove unused segments ('python -m shmshare gc', 'ipcs -m') or "
                    f"raise it with 'sysctl -w kernel.shmmni=...'")
        pages = (size + lim.page_size - 1) // lim.page_size
        return (f"kernel.shmall exhausted: {lim.shm_tot} of {lim.shmall} pages are in use "
                f"and {pages} more were asked for; remove unused segments or raise it with "
                f"'sysctl -w kernel.shmall=...'")
    if err == errno.ENOMEM:
        return f"the kernel could not allocate {size} bytes for the segment"
    if err == errno.EPERM and flags & SHM_HUGETLB:
        return "SHM_HUGETLB needs CAP_IPC_LOCK or membership of vm.hugetlb_shm_group"
    return None


def shmget(key: int, size: int, flags: int) -> int:
    """``shmget(2)``: the shmid of the segment for ``key`` (create per ``flags``)."""
    if size < 0:
        raise ShmValueError(f"segment size must be >= 0, not {size}")
    out = ffi.new("int64_t *")
    rc = lib.shms_shmget(key, size, flags, out)
    if rc:
        hint = explain_shmget_error(rc, key, size, flags)
        raise from_errno(rc, f"shmget(key={key:#x}, size={size})", hint)
    return int(out[0])


def stat(shmid: int) -> ShmStat:
    """``shmctl(IPC_STAT)``: the segment's ``shmid_ds``."""
    out = ffi.new("shms_stat_t *")
    _check_id(lib.shms_stat(shmid, out), f"shmctl(shmid={shmid}, IPC_STAT)")
    return _shm_stat(out)


# shms_stat_t's layout, read in one unpack (its 16 fields one by one cost more than
# the shmctl); native alignment, as the C compiler lays it out.
_STAT = struct.Struct("@qqQIIIIIiiqqQqqq")
assert _STAT.size == ffi.sizeof("shms_stat_t")


def _shm_stat(out: Any) -> ShmStat:
    w = _STAT.unpack(ffi.buffer(out))
    return _new_tuple(ShmStat, (*w[:8], w[8] != 0, w[9] != 0, *w[10:]))


_new_tuple = tuple.__new__


def set_attrs(shmid: int, *, uid: int = -1, gid: int = -1, mode: int = -1) -> None:
    """``shmctl(IPC_SET)`` of uid, gid and/or mode (-1 keeps the current value)."""
    _check_id(lib.shms_set(shmid, uid, gid, mode), f"shmctl(shmid={shmid}, IPC_SET)")


def rmid(shmid: int) -> None:
    """``shmctl(IPC_RMID)``: destroy once the last process detaches."""
    _check_id(lib.shms_rmid(shmid), f"shmctl(shmid={shmid}, IPC_RMID)")


def memlock(shmid: int, lock: bool) -> None:
    """``shmctl(SHM_LOCK / SHM_UNLOCK)``: pin the segment in RAM, or unpin it."""
    what = f"shmctl(shmid={shmid}, {'SHM_LOCK' if lock else 'SHM_UNLOCK'})"
    _check_id(lib.shms_memlock(shmid, int(lock)), what,
           "needs CAP_IPC_LOCK or enough RLIMIT_MEMLOCK" if lock else None)


def list_ids() -> list[int]:
    """The shmids of every segment on the system (SHM_INFO + SHM_STAT_ANY)."""
    cap = 256
    while True:
        ids = ffi.new("int64_t[]", cap)
        n = ffi.new("int *")
        _check(lib.shms_list_ids(ids, cap, n), "listing segments (SHM_INFO)")
        if n[0] <= cap:
            return [int(ids[i]) for i in range(n[0])]
        cap = n[0] * 2


class Attachment:
    """One ``shmat`` of a segment in this process.

    The mapping stays valid while the Attachment *or any buffer taken from it*
    is alive: views hold the underlying cdata, and the cdata's destructor is
    what finally calls ``shmdt``.  :meth:`detach`
    detaches at once, and refuses with BufferError while views are alive,
    since touching a view after ``shmdt`` would crash the interpreter.
    """

    __slots__ = ("__weakref__", "_buf", "_ptr", "readonly", "shmid", "size",
                 "users")

    def __init__(self, shmid: int, size: int, readonly: bool, _ptr: Any = None) -> None:
        # _ptr: a mapping already owned (owned_map), attached by a C call of this package
        self._ptr = _ptr if _ptr is not None else _owned_shmat(shmid, readonly)
        # Its destructor is C (shms_unmap: shmdt, then the reap registered by
        # bind_heap): it runs exactly once, from detach() via
        # ffi.release or when the last reference (this object or a view) goes
        # away, and no Python-level interrupt can land inside it and skip it.
        self.shmid = shmid
        self.size = size
        self.readonly = readonly
        # This process's users of the mapping (naming.attach.release detaches it with
        # the last): weak references a C callback (set.discard) drops, so that one
        # dropped half-made (an interrupt) counts no more; a WeakSet, in Python, cost.
        self.users: set[weakref.ref[Any]] = set()
        self._buf = ffi.buffer(self._ptr, size)

    def add_user(self, user: object) -> None:
        """Count ``user`` (weakly) among the users of this mapping."""
        self.users.add(weakref.ref(user, self.users.discard))

    def drop_user(self, user: object) -> int:
        """Count ``user`` no more; how many users are left."""
        users = self.users
        users.discard(weakref.ref(user))  # equal to ours while ``user`` lives
        return len(users)

    def user_count(self) -> int:
        """How many live users this mapping has."""
        return len(self.users)

    def bind_heap(self, handle: Any) -> None:
        """Bind the heap ``handle`` at this mapping's payload to this segment; once
        unmapped, the mapping reaps the heap's extents if its main segment is gone
        by then (shms_ext_reap); once per mapping."""
        _check(lib.shms_heap_bind(handle, self.shmid, self._ptr),
               "registering a heap's extents for reaping")

    @property
    def attached(self) -> bool:
        return self._ptr is not None

    @property
    def address(self) -> int:
        """The address the segment is mapped at in this process (for debugging)."""
        if self._ptr is None:
            raise ValueError("segment is detached")
        return int(ffi.cast("uintptr_t", self._ptr))

    def memoryview(self) -> memoryview:
        """A writable (unless read-only) memoryview of the whole segment."""
        if self._buf is None:
            raise ValueError("segment is detached")
        mv = memoryview(self._buf)
        return mv.toreadonly() if self.readonly else mv

    def populate(self, offset: int, length: int) -> None:
        """Map ``length`` bytes at ``offset`` now, in one call (see shms_populate):
        cheaper than the page faults the first touch of each page would take."""
        if self._ptr is None or length <= 0:
            return
        if offset < 0 or offset + length > self.size:
            raise ValueError(f"populate({offset}, {length}) is outside the {self.size}-byte "
                             "segment")
        _check(lib.shms_populate(self._ptr + offset, length),
               f"madvise(MADV_POPULATE_READ) of shmid={self.shmid}")

    def atomic_add(self, offset: int, value: int) -> int:
        """Add ``value`` to the aligned u64 at ``offset`` atomically; the new value."""
        if self._ptr is None:
            raise ValueError("segment is detached")
        if offset < 0 or offset % 8 or offset + 8 > self.size:
            raise ValueError(f"atomic_add at {offset}: not an aligned word of the segment")
        return int(lib.shms_atomic_add(self._ptr + offset, value & 0xFFFF_FFFF_FFFF_FFFF))

    def views_alive(self, collect: bool = True) -> int:
        """How many live buffer exports keep this mapping in use (0 = none).

        ``collect``: if some seem alive, run the cycle collector first (views
        dropped but kept by a reference cycle).  A finalizer passes False: a
        collection costs milliseconds, and there a live view only defers the
        shmdt to the attachment's own destructor.
        """
        if self._buf is None:
            return 0
        # Each memoryview family (and numpy array) built on the buffer holds
        # exactly one reference to it; ours + getrefcount's argument make 2.
        n = sys.getrefcount(self._buf) - 2
        if n > 0 and collect:
            gc.collect()
            n = sys.getrefcount(self._buf) - 2
        return n

    def detach(self) -> None:
        """``shmdt`` now; BufferError while memoryviews of it are alive."""
        if self._ptr is None:
            return
        n = self.views_alive()
        if n:
            raise BufferError(
                f"cannot detach segment shmid={self.shmid}: {n} memoryview(s) or array(s) "
                f"still use its memory; release them (del or .release()) first")
        ptr, self._ptr, self._buf = self._ptr, None, None
        ffi.release(ptr)

    def pointer(self, offset: int = 0) -> object:
        """cdata ``char *`` at ``offset`` — for use by shmshare._core only."""
        if self._ptr is None:
            raise ValueError("segment is detached")
        return self._ptr + offset


# Mappings owned from their shmat on (src/owned_map.c): this allocator's alloc is the
# C call that attaches, its free the one that detaches, and cffi builds the object
# that owns the memory right after the alloc returns, with no bytecode in between
# (where a signal handler could raise and leave the mapping without an owner).
# The memory is the segment's: never cleared.
owned_map = ffi.new_allocator(lib.shms_map_alloc, lib.shms_unmap, False)

# cffi builds a lib function at its first access and parses a type string at its
# first use (each several µs, tens in a fresh process whose caches are cold).  The
# ones that opening a named object by name takes (named.py, heap.py, guard.py) are
# made here, once per process, so that its first attach does not pay for them.
for _name in ("shms_map_named", "shms_named_release", "shms_heap_open", "shms_heap_bind",
              "shms_heap_sync_extents", "shms_heap_modcount_ptr", "shms_heap_n_extents_ptr",
              "shms_guard_init", "shms_guard_undo", "shms_guard_release", "shms_heap_close",
              "shms_guard_close"):
    getattr(lib, _name)
for _name in ("char[]", "shms_heap_t **", "void *", "shms_guard_t *", "int64_t *"):
    ffi.typeof(_name)
del _name


def _owned_shmat(shmid: int, readonly: bool) -> Any:
    status = ffi.new("int64_t[1]")
    for _ in range(3):  # again only if a signal handler took the request (owned_map.c)
        try:
            return owned_map("char[]", lib.shms_map_shmat(shmid, int(readonly), status))
        except MemoryError:
            if status[0] != lib.SHMS_MAP_NOT_RUN:
                _check(int(status[0]),
                       f"shmat(shmid={shmid}{', SHM_RDONLY' if readonly else ''})")
                raise
    raise MemoryError(f"shmat(shmid={shmid}): the attach request was never carried out")


def shmat(shmid: int, size: int, readonly: bool = False) -> Attachment:
    """``shmat(2)``: attach ``shmid`` (``size`` bytes) in this process."""
    return Attachment(shmid, size, readonly)


# Defined in their own modules, which import the names above.
# Base classes whose len() / obj[i] / d[k] = v answer in C (ext/hotslots.c).
from ._hotpath import AttrItems, DictItems, LengthWord, ViewItems  # noqa: E402
from .mutex import RobustMutex  # noqa: E402
from .named import NamedOpen, named_open, open_fd, release_fd  # noqa: E402
from .owner_watch import OwnerWatch  # noqa: E402
