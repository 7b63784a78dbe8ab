"""Typed wrapper over the C heap and its hash dict (``src/heap.c``, ``dict.c``).

Only this module and ``shmshare._core.__init__`` touch ``ffi``/``lib``.

A :class:`Heap` lives at ``[offset, offset+size)`` of an :class:`Attachment`
(extent 0) and grows by creating further segments on its own.  Every
operation takes the heap's robust process-shared lock, unless ``held=True``
says the caller already holds it (via :meth:`Heap.lock`).  Waiting for the
lock happens in short slices so that Ctrl-C is honoured; ``lock_timeout``
(seconds, None = forever) bounds the total wait of unlocked operations.

Close the heap before detaching its Attachment: the C handle keeps a raw
pointer into it.
"""

from __future__ import annotations

import errno
import functools
import struct
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from .._log import logger
from ..errors import (
    CorruptSegmentError,
    LockTimeoutError,
    SegmentRemovedError,
    ShmLimitError,
    ShmValueError,
    WrongTypeError,
    from_errno,
)
from . import IPC_CREAT, IPC_EXCL, Attachment, OwnerWatch, explain_shmget_error
from ._lib import ffi, lib
from .guard import LockGuard

__all__ = ["SCAN_START", "Heap", "reap_extents", "set_test_fail_point", "set_test_key_mask",
           "sweep_extent"]

#: ``dict_scan(SCAN_START)`` starts at the first (or, reverse, the last) entry.
SCAN_START = -1

_SLICE_NS = 100_000_000          # lock wait per C call: Ctrl-C stays responsive
_SCRATCH = 4096                  # initial per-thread buffer for values
_SCAN_BUF = 64 * 1024            # minimum buffer for a scan batch
_REC = struct.Struct("=QQQ")     # scan record header: seq, klen, vlen
_NO_VALUE = (1 << 64) - 1

_OK = 0
_RECOVERED = int(lib.SHMS_RECOVERED)
_ECORRUPT = int(lib.SHMS_ECORRUPT)
_ETOOSMALL = int(lib.SHMS_ETOOSMALL)
_ENOTFOUND = int(lib.SHMS_ENOTFOUND)
_EBADHEAP = int(lib.SHMS_EBADHEAP)
_ETOOMANY = int(lib.SHMS_ETOOMANY)
_EWRONGKIND = int(lib.SHMS_EWRONGKIND)
_EEXTGONE = int(lib.SHMS_EEXTGONE)
_ENOKEY = int(lib.SHMS_ENOKEY)
_BUSY = (errno.ETIMEDOUT, errno.EBUSY)
# What a closed handle's counter reads: 2**64-1, a value the real counter never takes.
_CLOSED = ("this shared object is detached from this process (detach() was called, or "
           "its Manager was shut down); open it again to use it")
_NO_COUNTER = memoryview(bytearray(b"\xff" * 8)).cast("Q")
_NVER = int(lib.SHMS_DICT_NVER)
# What a handle without (or closed to) the dict's version stripes reads: 2**64-1
# in every stripe, a version no stripe reaches, so no cached value matches it.
_NO_VERSIONS = memoryview(bytearray(b"\xff" * 8 * _NVER)).cast("Q")
_NO_STRIPE = (1 << 64) - 1
_unpack = ffi.unpack
_BIG = 1 << 20  # values above this are unpickled from a lent buffer (_read_big)
# No zero-filling: the buffer is written by the copy before it is read.
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)
_STATS = ("bytes_total", "bytes_used", "bytes_free", "extents", "generation",
          "entries", "recoveries", "modcount", "used_blocks")


def _closed(*_: Any) -> int:
    raise ValueError(_CLOSED)


def _error(rc: int, what: str, asked: int = 0) -> Exception:
    """The exception for a C result code ``rc`` raised while doing ``what``;
    ``asked``: bytes the last extent shmget asked for."""
    if rc == _ECORRUPT:
        return CorruptSegmentError(
            f"{what}: the heap is marked corrupt (run check() for the reason); "
            f"remove the object and create it again", rc)
    if rc == _EBADHEAP:
        return CorruptSegmentError(
            f"{what}: not a shmshare heap of this version/ABI (bad magic, layout "
            f"version or pthread_mutex_t size)", rc)
    if rc == _ETOOMANY:
        return ShmLimitError(f"{what}: the heap already spans {lib.SHMS_MAX_EXT} "
                             f"segments, its maximum", errno.ENOSPC)
    if rc == _EWRONGKIND:
        return WrongTypeError(f"{what}: the heap holds another kind of structure", rc)
    if rc == _EEXTGONE:
        return SegmentRemovedError(errno.EIDRM, f"{what}: one of the heap's extent "
                                   f"segments was removed or replaced")
    if rc in _BUSY:
        return LockTimeoutError(f"{what}: heap lock not acquired in time", rc)
    if rc == errno.EDEADLK:
        return RuntimeError(f"{what}: this thread already holds the heap lock "
                            f"(pass held=True)")
    if rc == errno.ENOTRECOVERABLE:
        return CorruptSegmentError(f"{what}: the heap lock is unrecoverable", rc)
    if rc == _ENOKEY:
        return ShmLimitError(f"{what}: growing the heap failed: every key this heap may "
                             f"give a new segment is taken by another segment (see "
                             f"'ipcs -m'; on a kernel booted with ipcmni_extend, heaps "
                             f"whose shmids agree in the low 15 bits share keys)",
                             errno.ENOSPC)
    if rc in (errno.ENOSPC, errno.ENOMEM, errno.EINVAL):
        hint = explain_shmget_error(rc, 1, asked, IPC_CREAT | IPC_EXCL)
        if rc == errno.EINVAL:
            hint = ("the allocation does not fit in one segment of kernel.shmmax bytes; "
                    "raise it with 'sysctl -w kernel.shmmax=...'")
        return ShmLimitError(f"{what}: growing the heap by a segment of {asked} bytes "
                             f"failed: {errno.errorcode[rc]}" + (f" ({hint})" if hint else ""),
                             rc)
    return from_errno(rc, what)


def sweep_extent(shmid: int, *, dry_run: bool = False) -> int | None:
    """gc: if ``shmid`` is an extent of ours whose heap is gone, remove it (unless
    ``dry_run``) and return the main shmid it names (-1: unfinished, names
    none); else None.  The argument is in ``src/extent.c``."""
    main = ffi.new("int64_t *")
    return int(main[0]) if lib.shms_ext_sweep(shmid, int(dry_run), main) else None


def reap_extents(main_shmid: int, token: int = 0, *, force: bool = False) -> int:
    """Remove the extents of the heap whose main segment is ``main_shmid``: with
    ``force`` (the caller removes that segment and is its only user) at once,
    else only if that segment is gone.  Never reads the heap header, so a
    damaged heap stays removable.  Returns how many were removed."""
    return int(lib.shms_ext_reap(main_shmid, token, int(force)))


def set_test_fail_point(point: int) -> None:
    """Tests only: 1 makes this process ``_exit(70)`` right after the next extent's
    shmget (the moment before anything identifies the segment), 2 right before
    it (the slot is PENDING); 0 turns it off."""
    lib.shms_test_fail_point(point)


def set_test_key_mask(mask: int) -> None:
    """Tests only: derive extent keys from ``main shmid & mask`` (a ``2**k - 1``
    below ``0x7FFF``) instead of its low 15 bits, so that live heaps share keys as
    they do on a kernel booted with ``ipcmni_extend``; 0 restores the default."""
    lib.shms_test_idx_mask(mask)


class _Scratch:
    """Per-thread output buffers (cffi releases the GIL during C calls)."""

    __slots__ = ("buf", "cap", "res", "res_view")

    def __init__(self) -> None:
        self.cap = _SCRATCH
        self.buf = ffi.new("char[]", self.cap)
        self.res = ffi.new("uint64_t[4]")
        self.res_view = memoryview(ffi.buffer(self.res)).cast("Q")  # faster than cdata

    def grow(self, need: int) -> None:
        cap = max(need, self.cap * 2)
        self.buf = ffi.new("char[]", cap)
        self.cap = cap


class Heap:
    """A process-local handle on a heap in shared memory."""

    __slots__ = ("__weakref__", "_att", "_extents_seen", "_extents_view", "_fetch", "_h",
                 "_tls", "guard", "lock_timeout", "modcount_view", "same_namespace", "store",
                 "versions_view")

    #: Bytes of the heap header at the start of extent 0 (layout detail).
    HEADER_SIZE: int = int(lib.shms_heap_header_size())

    def __init__(self, att: Attachment, handle: Any) -> None:
        self._att = att              # keeps extent 0 mapped
        self._h: Any = handle
        lib.shms_heap_set_main(handle, att.shmid)
        # Whoever detaches the main segment last removes the extents (extent.c).
        att.after_detach(Heap, functools.partial(
            lib.shms_ext_reap, att.shmid, int(lib.shms_heap_token(handle)), 0))
        #: The heap lock as objects hold it (``ObjectLock``): see guard.py.
        self.guard = LockGuard(handle, heap=True, shmid=att.shmid, keep=None, error=_error)
        self._tls = threading.local()
        # The hot calls, bound to the handle (no Python frame, fewest arguments):
        # ``store(key, klen, value, vlen)`` is d[k] = v for a key whose every byte
        # counts (cmp_len == len), returning 0 or a code for dict_set to handle.
        # close() swaps in stand-ins that raise, like the views below.
        self.store: Callable[[bytes, int, bytes, int], int] = partial(
            lib.shms_dict_store, handle)
        self._fetch: Callable[..., int] = partial(lib.shms_dict_fetch, handle)
        self.lock_timeout: float | None = None
        # Set by the object owning the segment (Segment.pid_namespace_shared):
        # lets a long lock wait recognise a damaged lock word (OwnerWatch).
        self.same_namespace: Callable[[], bool] | None = None
        # A one-item "Q" memoryview of the heap's modification counter (a
        # memoryview reads it faster than cffi indexing).  Read it through the
        # heap each time, never keep it: close() swaps in a harmless stand-in
        # before the memory behind it may be unmapped.
        self.modcount_view = memoryview(
            ffi.buffer(lib.shms_heap_modcount_ptr(handle), 8)).cast("Q")
        # The dict's version stripes ("Q" memoryview, see READ CACHE in dict.c),
        # mapped by the first dict_read_versioned that needs them; the same
        # rules as modcount_view.
        self.versions_view = _NO_VERSIONS
        # The heap's extent count, read after each store (the only operation
        # that allocates) to log growth; same rules as modcount_view.
        self._extents_view = memoryview(
            ffi.buffer(lib.shms_heap_n_extents_ptr(handle), 8)).cast("Q")
        self._extents_seen = self._extents_view[0]

    # ------------------------------------------------------------ lifecycle
    @staticmethod
    def _base(att: Attachment, offset: int, size: int) -> Any:
        if offset < 0 or size <= 0 or offset + size > att.size or offset % 64:
            raise ShmValueError(f"heap [{offset}, {offset + size}) does not fit the "
                                f"{att.size}-byte segment, or is not 64-byte aligned")
        return ffi.cast("void *", att.pointer(offset))

    @classmethod
    def create(cls, att: Attachment, offset: int, size: int, *, mode: int = 0o600,
               anonymous: bool = False) -> Heap:
        """Initialise a new heap in place; ``mode`` is used for its extents.

        ``anonymous`` is recorded in the header; extents of every heap go
        when the main segment goes (``src/extent.c``).
        """
        out = ffi.new("shms_heap_t **")
        flags = int(lib.SHMS_F_ANONYMOUS) if anonymous else 0
        rc = lib.shms_heap_create(cls._base(att, offset, size), size, mode & 0o777, flags, out)
        if rc:
            raise (ShmValueError(f"heap of {size} bytes is too small", rc)
                   if rc == errno.EINVAL else _error(rc, "creating the heap"))
        return cls(att, out[0])

    @classmethod
    def open(cls, att: Attachment, offset: int, size: int) -> Heap:
        """Open an existing heap; CorruptSegmentError if it is not one."""
        out = ffi.new("shms_heap_t **")
        rc = lib.shms_heap_open(cls._base(att, offset, size), size, out)
        if rc:
            raise _error(rc, "opening the heap")
        heap = cls(att, out[0])
        # Attach every extent now: one grown by a sole user is already marked
        # for removal and lives only while someone holds it (src/extent.c).
        # A busy lock's holder holds them all; a corrupt heap fails its ops.
        try:
            heap.lock(timeout=0)
        except (RuntimeError, LockTimeoutError, CorruptSegmentError):
            return heap
        except BaseException:
            heap.close()
            raise
        heap.unlock()
        return heap

    def close(self) -> None:
        """Detach the extents this handle attached (not extent 0); idempotent."""
        h, self._h = self._h, None
        # Never read the counters again: their memory may be unmapped next.
        self.modcount_view = self._extents_view = _NO_COUNTER
        self.versions_view = _NO_VERSIONS
        self.store = self._fetch = _closed
        if h is not None:
            self.guard.close()
            lib.shms_heap_close(h)

    def __del__(self) -> None:
        if getattr(self, "_h", None) is not None:
            self.close()

    def destroy_extents(self) -> None:
        """IPC_RMID every extent segment (by whoever removes the main segment
        while no other process is attached)."""
        lib.shms_heap_destroy_extents(self._handle())

    def _handle(self) -> Any:
        h = self._h
        if h is None:
            raise ValueError(_CLOSED)
        return h

    def _scratch(self) -> _Scratch:
        try:
            return self._tls.s  # type: ignore[no-any-return]
        except AttributeError:
            s = self._tls.s = _Scratch()
            return s

    # -------------------------------------------------------------- locking
    def lock(self, timeout: float | None = None) -> bool:
        """Take the heap lock; True if a dead owner's state was repaired.

        ``None`` waits forever (in Ctrl-C-friendly slices), ``0`` tries once.
        """
        h = self._handle()
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = None
        while True:
            if deadline is None:
                ns = _SLICE_NS
            else:
                ns = min(_SLICE_NS, max(0, int((deadline - time.monotonic()) * 1e9)))
            rc = lib.shms_heap_lock(h, ns)
            if rc == _OK:
                return False
            if rc == _RECOVERED:
                return True
            if rc not in _BUSY or (deadline is not None and time.monotonic() >= deadline):
                raise _error(rc, "locking the heap")
            if watch is None:
                watch = self._watch("locking the heap")
            watch.poll()

    def unlock(self) -> None:
        rc = lib.shms_heap_unlock(self._handle())
        if rc == errno.EPERM:
            raise RuntimeError("unlock of a heap lock this thread does not hold")
        if rc:
            raise _error(rc, "unlocking the heap")

    def _watch(self, what: str) -> OwnerWatch:
        h = self._h
        return OwnerWatch(lambda: int(lib.shms_heap_lock_owner(h)), self._att.shmid,
                          self.same_namespace, what)

    def _retry(self, rc: int, started: list[Any], what: str) -> None:
        """Called when an unlocked op returned rc: return to retry, else raise.

        ``started`` is the caller's wait state: [start time, OwnerWatch].
        """
        if rc not in _BUSY:
            h = self._h
            raise _error(rc, what, int(lib.shms_heap_last_grow(h)) if h is not None else 0)
        if not started:
            started += [time.monotonic(), self._watch(what)]
        if self.lock_timeout is not None and time.monotonic() - started[0] >= self.lock_timeout:
            raise _error(rc, what)
        started[1].poll()

    @property
    def recoveries(self) -> int:
        """Dead-owner recoveries performed through this handle."""
        return int(lib.shms_heap_recoveries(self._handle()))

    def root_ref(self) -> int:
        """The ref of the heap's root structure (for tests that damage it)."""
        return int(lib.shms_heap_root_ref(self._handle()))

    @property
    def modcount(self) -> int:
        """The heap's modification counter (bumped by every mutation)."""
        return int(lib.shms_heap_modcount(self._handle()))

    # ----------------------------------------------------------------- dict
    def wait_change(self, seen: int, timeout: float) -> bool:
        """Sleep until the heap's modification counter differs from ``seen``.

        Returns False when ``timeout`` seconds pass first.  Read ``seen``
        (``modcount_view[0]``) while holding the lock, release it, then wait:
        every change committed after the read ends the wait.
        """
        h = self._handle()
        rc = lib.shms_heap_wait_change(h, seen, max(0, int(timeout * 1e9)))
        return bool(rc != errno.ETIMEDOUT)

    def dict_get(self, key: bytes, cmp_len: int, *, held: bool = False) -> bytes | None:
        """The value stored under ``key`` (its first ``cmp_len`` bytes), or None."""
        return self.dict_read(key, cmp_len, held=held)[0]

    def dict_read(self, key: bytes, cmp_len: int, *,
                  held: bool = False) -> tuple[bytes | None, int]:
        """``(value or None, modcount)``: the counter the read is consistent with.

        The counter is bumped, under the lock, after every committed change
        and every crash recovery, so a caller may keep the value until
        ``modcount_view[0]`` moves.  One C call when uncontended.
        """
        h = self._h
        if h is None:
            raise ValueError(_CLOSED)
        try:
            s = self._tls.s
        except AttributeError:
            s = self._tls.s = _Scratch()
        started: list[Any] = []
        while True:
            rc = lib.shms_dict_get(h, key, len(key), cmp_len, s.buf, s.cap, s.res, held,
                                   _SLICE_NS)
            if rc == _OK:
                return ffi.unpack(s.buf, s.res[0]), int(s.res[1])
            if rc == _ENOTFOUND:
                return None, int(s.res[1])
            if rc == _ETOOSMALL:
                s.grow(int(s.res[0]))
            elif rc == errno.EDEADLK and not held:
                held = True  # this thread holds the lock (ERRORCHECK mutex)
            else:
                self._fail_key(rc, key, cmp_len, started, "dict get")

    def dict_read_versioned(self, key: bytes, cmp_len: int
                            ) -> tuple[bytes | memoryview | None, int, int]:
        """``(value or None, stripe, version)``: the value may be kept while
        ``versions_view[stripe] == version`` (stripe -1: it may not).

        Every change of the key bumps its stripe before it commits, so a
        value whose stripe still reads the same version is current (dict.c,
        READ CACHE).
        """
        try:
            s = self._tls.s
        except AttributeError:
            s = self._tls.s = _Scratch()
        rc = self._fetch(key, cmp_len, s.buf, s.cap, s.res) if cmp_len == len(key) else -1
        if rc == _OK:
            res = s.res_view
            data: bytes | memoryview | None = _unpack(s.buf, res[0])
        elif rc == _ENOTFOUND:
            return None, -1, 0
        elif rc == _ETOOSMALL and s.res_view[0] > _BIG:
            return self._read_big(key, cmp_len, s), -1, 0
        else:  # the general path: a larger buffer, the lock held here, waits, errors
            data, _ = self.dict_read(key, cmp_len)
            res = self._tls.s.res_view
        stripe = res[2]
        if data is None or stripe == _NO_STRIPE:
            return data, -1, 0
        if self.versions_view is _NO_VERSIONS:
            self._map_versions()
        return data, stripe, res[3]

    def _read_big(self, key: bytes, cmp_len: int, s: _Scratch) -> memoryview | None:
        """A large value, copied once into this thread's big buffer and lent out as
        a memoryview: unpickling straight from it saves a copy and a fresh
        allocation (page faults) per read.  Give it back with :meth:`recycle`;
        until then a read on this thread (a reentrant one) uses another buffer."""
        tls = self._tls
        big, tls.big = getattr(tls, "big", None), None
        need = s.res_view[0]
        while True:
            if big is None or len(big) < need:
                big = _new_uncleared("char[]", need)
            rc = self._fetch(key, cmp_len, big, len(big), s.res)
            if rc == _OK:
                view = memoryview(ffi.buffer(big, s.res_view[0]))
                tls.lent = (view, big)
                return view
            if rc == _ENOTFOUND:
                tls.big = big
                return None
            if rc != _ETOOSMALL:  # the general path: the lock held here, waits, errors
                tls.big = big
                data, _ = self.dict_read(key, cmp_len)
                return None if data is None else memoryview(data)
            need = s.res_view[0]

    def recycle(self, view: memoryview) -> None:
        """Take back a big buffer lent by a read (the value was unpickled)."""
        tls = self._tls
        lent = getattr(tls, "lent", None)
        if lent is not None and lent[0] is view:
            tls.lent = None
            try:
                view.release()
            except BufferError:  # still exported somewhere: let it keep the buffer
                return
            tls.big = lent[1]

    def _map_versions(self) -> None:
        out = ffi.new("const volatile uint64_t **")
        started: list[Any] = []
        held = False
        while True:
            rc = lib.shms_dict_versions(self._handle(), out, held, _SLICE_NS)
            if rc == _OK:
                break
            if rc == errno.EDEADLK and not held:
                held = True  # this thread holds the lock (ERRORCHECK mutex)
                continue
            self._retry(rc, started, "mapping the dict's versions")
        if out[0] != ffi.NULL and self._h is not None:
            self.versions_view = memoryview(ffi.buffer(out[0], 8 * _NVER)).cast("Q")

    def _fail_key(self, rc: int, key: bytes, cmp_len: int, started: list[Any],
                  what: str) -> None:
        if rc == errno.EINVAL and not 0 <= cmp_len <= len(key) < 0xFFFFFFFF:
            raise ShmValueError(f"{what}: cmp_len {cmp_len} outside 0..{len(key)}, or "
                                f"key too long")
        self._retry(rc, started, what)

    def dict_set(self, key: bytes, cmp_len: int, value: bytes, *,
                 only_if_absent: bool = False, held: bool = False) -> bool:
        """Store ``value``; True if ``key`` was new.  An existing key keeps its
        stored bytes and position.  ``only_if_absent``: leave an existing
        value alone (setdefault)."""
        h = self._h
        if h is None:
            raise ValueError(_CLOSED)
        try:
            s = self._tls.s
        except AttributeError:
            s = self._tls.s = _Scratch()
        rc = lib.shms_dict_set(h, key, len(key), cmp_len, value, len(value), only_if_absent,
                               s.res, held, _SLICE_NS)
        if self._extents_view[0] != self._extents_seen:
            self._note_growth()
        if rc == _OK:
            return bool(s.res[0])
        if rc == errno.EDEADLK:  # this thread holds the lock (ERRORCHECK mutex)
            held = True
            rc = lib.shms_dict_set(h, key, len(key), cmp_len, value, len(value),
                                   only_if_absent, s.res, held, _SLICE_NS)
            if rc == _OK:
                return bool(s.res[0])
        started: list[Any] = []
        while True:
            self._fail_key(rc, key, cmp_len, started, "dict set")
            rc = lib.shms_dict_set(h, key, len(key), cmp_len, value, len(value),
                                   only_if_absent, s.res, held, _SLICE_NS)
            if rc == _OK:
                return bool(s.res[0])

    def dict_store(self, key: bytes, cmp_len: int, value: bytes) -> None:
        """``dict_set`` without its result: ``d[k] = v``.

        One C call when it succeeds; any other outcome (lock held by this
        thread, busy, an error) goes through ``dict_set``, which retries or
        raises (an op that failed changed nothing, so running it again is safe).
        """
        if cmp_len != len(key) or self.store(key, cmp_len, value, len(value)):
            self.dict_set(key, cmp_len, value)

    def _note_growth(self) -> None:
        before, self._extents_seen = self._extents_seen, self._extents_view[0]
        logger.info("heap of segment shmid %d grew from %d to %d extent(s) (at most %d)",
                    self._att.shmid, before, self._extents_seen, lib.SHMS_MAX_EXT)

    def dict_pop(self, key: bytes, cmp_len: int, *, held: bool = False) -> bytes | None:
        """Remove ``key`` and return its value; None if absent."""
        h = self._handle()
        s = self._scratch()
        started: list[Any] = []
        while True:
            rc = lib.shms_dict_pop(h, key, len(key), cmp_len, s.buf, s.cap, s.res, held,
                                   _SLICE_NS)
            if rc == _OK:
                return ffi.unpack(s.buf, s.res[0])  # type: ignore[no-any-return]
            if rc == _ENOTFOUND:
                return None
            if rc == _ETOOSMALL:
                s.grow(int(s.res[0]))
            else:
                if rc == errno.EDEADLK and not held:
                    held = True  # this thread holds the lock (ERRORCHECK mutex)
                    continue
                self._fail_key(rc, key, cmp_len, started, "dict pop")

    def dict_len(self, *, held: bool = False) -> int:
        h = self._handle()
        s = self._scratch()
        started: list[Any] = []
        while True:
            rc = lib.shms_dict_len(h, s.res, held, _SLICE_NS)
            if rc == _OK:
                return int(s.res[0])
            if rc == errno.EDEADLK and not held:
                held = True  # this thread holds the lock (ERRORCHECK mutex)
                continue
            self._retry(rc, started, "dict len")

    def dict_clear(self, *, held: bool = False) -> None:
        h = self._handle()
        started: list[Any] = []
        while True:
            rc = lib.shms_dict_clear(h, held, _SLICE_NS)
            if rc == _OK:
                return
            if rc == errno.EDEADLK and not held:
                held = True  # this thread holds the lock (ERRORCHECK mutex)
                continue
            self._retry(rc, started, "dict clear")

    def dict_popitem(self, *, held: bool = False) -> tuple[bytes, bytes] | None:
        """Remove and return the last inserted (key, value); None if empty."""
        h = self._handle()
        s = self._scratch()
        started: list[Any] = []
        while True:
            rc = lib.shms_dict_popitem(h, s.buf, s.cap, s.res, held, _SLICE_NS)
            if rc == _OK:
                klen, vlen = int(s.res[0]), int(s.res[1])
                data = ffi.unpack(s.buf, klen + vlen)
                return data[:klen], data[klen:]
            if rc == _ENOTFOUND:
                return None
            if rc == _ETOOSMALL:
                s.grow(int(s.res[2]))
            else:
                if rc == errno.EDEADLK and not held:
                    held = True  # this thread holds the lock (ERRORCHECK mutex)
                    continue
                self._retry(rc, started, "dict popitem")

    def dict_scan(self, after_seq: int = SCAN_START, *, reverse: bool = False,
                  values: bool = True, held: bool = False
                  ) -> list[tuple[int, bytes, bytes | None]]:
        """A batch of live records ``(seq, key, value)`` in insertion order.

        Starts strictly after ``after_seq`` (reverse: strictly before it);
        ``SCAN_START`` (-1) starts at the first (reverse: last) entry.  Pass
        the last seq of a batch to get the next; an empty list ends.  A key
        re-set keeps its seq; a deleted and re-added key gets a new one.
        """
        h = self._handle()
        s = self._scratch()
        if s.cap < _SCAN_BUF:
            s.grow(_SCAN_BUF)
        started: list[Any] = []
        while True:
            rc = lib.shms_dict_scan(h, after_seq, reverse, values, s.buf, s.cap, s.res,
                                    held, _SLICE_NS)
            if rc == _OK:
                return self._parse(ffi.unpack(s.buf, s.res[1]), int(s.res[0]))
            if rc == _ETOOSMALL:
                s.grow(int(s.res[2]))
            else:
                if rc == errno.EDEADLK and not held:
                    held = True  # this thread holds the lock (ERRORCHECK mutex)
                    continue
                self._retry(rc, started, "dict scan")

    @staticmethod
    def _parse(data: bytes, n: int) -> list[tuple[int, bytes, bytes | None]]:
        out: list[tuple[int, bytes, bytes | None]] = []
        pos = 0
        unpack = _REC.unpack_from
        for _ in range(n):
            seq, klen, vlen = unpack(data, pos)
            pos += 24
            key = data[pos:pos + klen]
            pos += klen
            if vlen == _NO_VALUE:
                val = None
            else:
                val = data[pos:pos + vlen]
                pos += vlen
            out.append((seq, key, val))
            pos = (pos + 7) & ~7
        return out

    # ---------------------------------------------------- checking, stats
    def check(self, *, held: bool = False) -> str | None:
        """Full structural check; None when consistent, else the problem."""
        h = self._handle()
        msg = ffi.new("char[]", 512)
        started: list[Any] = []
        while True:
            rc = lib.shms_heap_check(h, msg, 512, held, _SLICE_NS)
            if rc == 0:
                return None
            if rc == 1:
                return ffi.string(msg).decode("utf-8", "replace")  # type: ignore[no-any-return]
            if rc == errno.EDEADLK and not held:
                held = True  # this thread holds the lock (ERRORCHECK mutex)
                continue
            self._retry(rc, started, "checking the heap")

    def rebuild(self, *, held: bool = False) -> None:
        """Run the crash-recovery rebuild now (for tests and repair tools)."""
        h = self._handle()
        started: list[Any] = []
        while True:
            rc = lib.shms_heap_rebuild(h, held, _SLICE_NS)
            if rc == 0:
                return
            if rc == errno.EDEADLK and not held:
                held = True  # this thread holds the lock (ERRORCHECK mutex)
                continue
            self._retry(rc, started, "rebuilding the heap")

    def stats(self, *, held: bool = False) -> dict[str, int]:
        """bytes_total/used/free (in extents), extents, generation, entries,
        recoveries (all processes), modcount, used_blocks, handle_recoveries."""
        h = self._handle()
        out = ffi.new("uint64_t[]", len(_STATS))
        started: list[Any] = []
        while True:
            rc = lib.shms_heap_stats(h, out, len(_STATS), held, _SLICE_NS)
            if rc == 0:
                break
            if rc == errno.EDEADLK and not held:
                held = True  # this thread holds the lock (ERRORCHECK mutex)
                continue
            self._retry(rc, started, "reading heap stats")
        d = {k: int(out[i]) for i, k in enumerate(_STATS)}
        d["handle_recoveries"] = int(lib.shms_heap_recoveries(h))
        return d
