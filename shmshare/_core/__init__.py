"""The only Python that touches cffi: typed wrappers over the C core.

Everything above this package sees ints, dataclasses, memoryviews and
exceptions, never ``ffi``/``lib``/cdata.  Functions are named after the C
calls they wrap (``shmget``, ``shmat``...), and raise the exceptions of
:mod:`shmshare.errors` instead of returning error codes.
"""

from __future__ import annotations

import errno
import gc
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

from ..errors import ShmshareError, ShmValueError, from_errno
from ._lib import ffi, lib

__all__ = [
    "IPC_CREAT",
    "IPC_EXCL",
    "IPC_PRIVATE",
    "SHM_HUGETLB",
    "SHM_NORESERVE",
    "Attachment",
    "Limits",
    "OwnerWatch",
    "RobustMutex",
    "ShmStat",
    "explain_shmget_error",
    "ftok",
    "limits",
    "list_ids",
    "memlock",
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
    return ShmStat(
        key=int(out.key), shmid=int(out.shmid), size=int(out.size), uid=int(out.uid),
        gid=int(out.gid), cuid=int(out.cuid), cgid=int(out.cgid), mode=int(out.mode),
        dest=bool(out.dest), locked=bool(out.locked), cpid=int(out.cpid),
        lpid=int(out.lpid), nattch=int(out.nattch), atime=int(out.atime),
        dtime=int(out.dtime), ctime=int(out.ctime),
    )


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
    what finally calls ``shmdt`` (then ``on_detached``).  :meth:`detach`
    detaches at once, and refuses with BufferError while views are alive,
    since touching a view after ``shmdt`` would crash the interpreter.
    """

    __slots__ = ("__weakref__", "_addr", "_after", "_buf", "_ptr", "readonly", "shmid", "size")

    def __init__(self, shmid: int, size: int, readonly: bool,
                 on_detached: Callable[[], None] | None) -> None:
        out = ffi.new("void **")
        _check(lib.shms_shmat(shmid, int(readonly), out),
               f"shmat(shmid={shmid}{', SHM_RDONLY' if readonly else ''})")
        addr = out[0]
        after: dict[object, Callable[[], None]] = {}

        def _shmdt(_cdata: object) -> None:
            # Runs exactly once: from detach() via ffi.release, or when the
            # last reference (this object or a view) goes away.
            lib.shms_shmdt(addr)
            if on_detached is not None:
                on_detached()
            for fn in list(after.values()):
                fn()

        self.shmid = shmid
        self.size = size
        self.readonly = readonly
        self._addr = int(ffi.cast("uintptr_t", addr))
        self._after = after
        self._ptr = ffi.gc(ffi.cast("char *", addr), _shmdt)
        self._buf = ffi.buffer(self._ptr, size)

    def after_detach(self, tag: object, fn: Callable[[], None]) -> None:
        """Run ``fn()`` right after the segment is detached (once per ``tag``)."""
        self._after.setdefault(tag, fn)

    @property
    def attached(self) -> bool:
        return self._ptr is not None

    @property
    def address(self) -> int:
        """The address the segment is mapped at in this process (for debugging)."""
        return self._addr

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


def shmat(shmid: int, size: int, readonly: bool = False,
          on_detached: Callable[[], None] | None = None) -> Attachment:
    """``shmat(2)``: attach ``shmid`` (``size`` bytes) in this process."""
    return Attachment(shmid, size, readonly, on_detached)


_SLICE = 0.1  # seconds per blocking lock call


def _could_hold(tid: int, shmid: int) -> bool:
    """False if thread ``tid`` cannot hold a lock inside segment ``shmid``: it
    does not exist, or its process does not have the segment attached."""
    if tid < 0:
        return False             # a lock word with flag bits but no thread id
    try:
        with open(f"/proc/{tid}/maps", encoding="ascii", errors="replace") as maps:
            for line in maps:    # "... 00:01 <shmid>   /SYSV<key> (deleted)"
                fields = line.split(maxsplit=5)
                if len(fields) > 5 and fields[4] == str(shmid) and fields[5].startswith("/SYSV"):
                    return True
    except FileNotFoundError:
        return False
    except OSError:              # not ours to read: only a kernel thread cannot
        return not _kernel_thread(tid)
    return False


_PF_KTHREAD = 0x00200000


def _kernel_thread(tid: int) -> bool:
    try:
        with open(f"/proc/{tid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        flags = int(stat.rsplit(")", 1)[1].split()[6])   # field 9, after "(comm)"
    except (OSError, IndexError, ValueError):
        return False
    return bool(flags & _PF_KTHREAD)


class OwnerWatch:
    """Tells a damaged lock word from a slow holder during a long lock wait.

    A robust mutex whose owner dies is marked by the kernel, and the next
    locker is told at once (EOWNERDEAD).  A lock word naming a thread that
    does not exist, or whose process does not even have the segment
    attached, is therefore damage (a stray write, a bad copy), and every
    locker would wait forever.  Call :meth:`poll` on each wait slice: from
    ``after`` seconds on, if the owner named by ``owner()`` has stayed such
    a thread for ``confirm`` seconds -- and ``same_namespace()`` says every
    user of the segment shares our PID namespace, so that thread ids mean
    the same to all; None: unknown, never raise) -- it raises
    CorruptSegmentError.
    """

    __slots__ = ("_owner", "_same_ns", "_shmid", "_start", "_suspect", "_what", "after",
                 "confirm")

    def __init__(self, owner: Callable[[], int], shmid: int,
                 same_namespace: Callable[[], bool] | None, what: str, *,
                 after: float = 2.0, confirm: float = 1.0) -> None:
        self._owner = owner
        self._shmid = shmid
        self._same_ns = same_namespace
        self._what = what
        self._start: float | None = None
        self._suspect: tuple[int, float] | None = None
        self.after = after
        self.confirm = confirm

    def poll(self) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        if now - self._start < self.after:
            return
        tid = self._owner()
        if (not tid or _could_hold(tid, self._shmid) or self._same_ns is None
                or not self._same_ns()):
            self._suspect = None
            return
        if self._suspect is None or self._suspect[0] != tid:
            self._suspect = (tid, now)
            return
        if now - self._suspect[1] >= self.confirm:
            from ..errors import CorruptSegmentError
            raise CorruptSegmentError(
                f"{self._what}: the lock names thread {tid} as its holder, which does not "
                f"exist or does not have the segment attached: the lock word is damaged, "
                f"and every locker would wait forever. Remove the object and create it "
                f"again")


class RobustMutex:
    """A process-shared robust mutex living at ``offset`` inside an Attachment.

    ``acquire`` returns True when the previous owner died holding the lock:
    the caller must then repair the data the lock protects and call
    :meth:`mark_consistent` before releasing, or the mutex becomes unusable.
    """

    SIZE: int = int(lib.shms_mutex_size())

    __slots__ = ("_att", "_m", "guard", "same_namespace")

    def __init__(self, attachment: Attachment, offset: int) -> None:
        from .guard import LockGuard, mutex_error  # guard.py imports this module

        self._att = attachment  # keeps the mapping alive
        self._m = ffi.cast("void *", attachment.pointer(offset))
        #: The mutex as objects hold it (``ObjectLock``, see guard.py); a dead
        #: owner is reported and the mutex made consistent (nothing to repair).
        self.guard = LockGuard(self._m, heap=False, shmid=attachment.shmid, keep=attachment,
                               error=mutex_error)
        # Set by the owner of the segment (Segment.pid_namespace_shared): while
        # it says True, a long wait on a lock word naming a thread that does not
        # exist ends in CorruptSegmentError instead of waiting forever.
        self.same_namespace: Callable[[], bool] | None = None

    def initialize(self) -> None:
        """Initialise the mutex in place; only its creator calls this, once."""
        _check(lib.shms_mutex_init(self._m), "pthread_mutex_init")

    def kind_ok(self) -> bool:
        """False if the mutex's type word is damaged (not robust/shared/checking)."""
        return bool(lib.shms_mutex_kind_ok(self._m))

    def owner(self) -> int:
        """Thread id in the lock word (0: unlocked or unknown on this libc; -1: no
        thread, only flag bits)."""
        return int(lib.shms_mutex_owner(self._m))

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock; True if the previous owner died holding it.

        ``timeout=None`` waits forever, ``0`` tries once.  Raises
        :class:`~shmshare.errors.LockTimeoutError` when it runs out.  Waits
        in slices, so that Ctrl-C is honoured and a damaged lock word is
        recognised (:class:`OwnerWatch`).
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        watch: OwnerWatch | None = None
        while True:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            rc = lib.shms_mutex_lock(self._m, max(0, int(left * 1e9)))
            if rc == 0:
                return False
            if rc == errno.EOWNERDEAD:
                return True
            if rc not in (errno.ETIMEDOUT, errno.EBUSY):
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if watch is None:
                watch = OwnerWatch(self.owner, self._att.shmid, self.same_namespace, "lock")
            watch.poll()
        from ..errors import CorruptSegmentError, LockTimeoutError
        if rc in (errno.ETIMEDOUT, errno.EBUSY):
            raise LockTimeoutError(f"lock not acquired within {timeout} s", rc)
        if rc == errno.ENOTRECOVERABLE:
            raise CorruptSegmentError(
                "the lock is unrecoverable: a previous holder died and the state it "
                "protected was never repaired; remove the object and create it again", rc)
        if rc == errno.EDEADLK:
            raise RuntimeError("this thread already holds the lock (EDEADLK)")
        raise from_errno(rc, "pthread_mutex_lock")

    def mark_consistent(self) -> None:
        _check(lib.shms_mutex_consistent(self._m), "pthread_mutex_consistent")


    def release(self) -> None:
        rc = lib.shms_mutex_unlock(self._m)
        if rc == errno.EPERM:
            raise RuntimeError("release of a lock this thread does not hold")
        _check(rc, "pthread_mutex_unlock")
