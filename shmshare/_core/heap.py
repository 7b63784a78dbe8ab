"""Typed wrapper over the C heap (``src/heap.c``, ``alloc.c``, ``extent.c``, ``recover.c``).

A :class:`Heap` lives at ``[offset, offset+size)`` of an :class:`Attachment`
(extent 0) and grows by creating further segments on its own.  Every
operation takes the heap's robust process-shared lock, unless ``held=True``
says the caller already holds it (via :meth:`Heap.lock`).  Waiting for the
lock happens in short slices so that Ctrl-C is honoured; ``lock_timeout``
(seconds, None = forever) bounds the total wait of unlocked operations.

The class is assembled from layers, one module each: ``heap_base``
(handle, buffers, the one retry loop), ``heap_dict`` (the hash dict) and
this module (lifecycle, the lock, extents, checks); ``extents`` has the
removal of a heap's extents, which needs no handle.

Close the heap before detaching its Attachment: the C handle keeps a raw
pointer into it.
"""

from __future__ import annotations

import errno
import pickle
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from ..errors import ShmValueError
from . import Attachment
from ._hotpath import HotPath
from ._lib import ffi, lib
from .guard import LockGuard
from .heap_base import set_growth_hook
from .heap_dict import (
    BIG_VALUE,
    NO_VERSIONS,
    NOT_READ,
    READ_CACHE_MAX_BYTES,
    SCAN_START,
    DictMethods,
)
from .results import DETACHED, ECLOSED, ECORRUPT, OK, RECOVERED, failure
from .slices import SLICE_NS, wait_in_slices

__all__ = ["SCAN_START", "Heap", "set_growth_hook"]

# What a closed handle's counters read: 2**64-1, a value the real counters never take.
_NO_COUNTER = memoryview(bytearray(b"\xff" * 8)).cast("Q")
_GUARD_MADE = threading.Lock()  # held while a handle's guard is made or closed (_make_guard)
# What a new handle's extent sync may meet and leave to the heap's operations: the
# lock busy (its holder holds every extent) or held by this thread, a corrupt heap.
_SYNC_LATER = frozenset({errno.EBUSY, errno.ETIMEDOUT, errno.EDEADLK, errno.ENOTRECOVERABLE,
                         ECORRUPT, int(lib.SHMS_EBADHEAP)})
_PEEK = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_dict_peek")))
_STORE_TRY = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_dict_store_try")))
_STORE_BYTES_TRY = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_dict_store_bytes_try")))
_DICT_LEN = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_dict_len")))
_TAKE_TRY = int(ffi.cast("uintptr_t", ffi.addressof(lib, "shms_dict_take_try")))
_STATS = ("bytes_total", "bytes_used", "bytes_free", "extents", "generation",
          "entries", "recoveries", "modcount", "used_blocks")


def _closed(*_: Any) -> int:
    raise ValueError(DETACHED)


class Heap(DictMethods):
    """A process-local handle on a heap in shared memory."""

    # and those of its bases:
    __slots__ = (
        "__weakref__",
        "_hot",
        "cache_keep",
        "get_hot",
        "guard",
        "has_hot",
        "list_push",
        "list_store",
        "modcount_view",
        "pop_hot",
    )

    list_push: Callable[[int, bytes, int], int]
    list_store: Callable[[int, bytes, int], int]

    #: Bytes of the heap header at the start of extent 0 (layout detail).
    HEADER_SIZE: int = int(lib.shms_heap_header_size())

    def __init__(self, att: Attachment, handle: Any) -> None:
        self._att = att              # keeps extent 0 mapped
        # close() only closes the handle (src/extent.c, CLOSING): a call of another
        # thread may still hold it, and answers "detached"; it is freed with the
        # last reference (this, a method under way, the guard).
        handle = ffi.gc(handle, lib.shms_heap_free)
        self._h: Any = handle
        # Whoever detaches the main segment last removes the extents (extent.c).
        att.bind_heap(handle)
        # self.guard, the heap lock as objects hold it (``ObjectLock``, see guard.py):
        # made by its first use (__getattr__); an object that only reads and writes
        # through the hot calls below never needs it.
        # self._tls, this heap's per-thread buffers: made by the first operation
        # that needs them (HeapBase.__getattr__); attaching never does.
        # The hot calls, bound to the handle (no Python frame, fewest arguments):
        # ``store(key, klen, value, vlen)`` is d[k] = v for a key whose every byte
        # counts (cmp_len == len), returning 0 or a code for dict_set to handle
        # (it never grows the heap: growth takes dict_set, which logs it).
        # close() swaps in stand-ins that raise, like the views below.
        # These three are HotPath's (ext/hotpath.c): one C call each, the GIL kept
        # and the lock tried once.  ``_peek(key)`` is dict_read_versioned's read;
        # ``get_hot(cache, key, default)`` is d.get(key, default) for a key the C
        # paths encode (a str, an int, bytes, a tuple: ext/hotkeys.c) through the
        # read cache (a hit, or the same read kept there), unpickled;
        # default if the read found no such key; or NOT_READ (the general path).
        self._hot = HotPath(int(ffi.cast("uintptr_t", handle)), _PEEK, _STORE_TRY,
                            _STORE_BYTES_TRY, BIG_VALUE, pickle.loads, NOT_READ,
                            READ_CACHE_MAX_BYTES, _DICT_LEN, _TAKE_TRY)
        self.store: Callable[[bytes, int, bytes, int], int] = self._hot.store
        self._peek: Callable[[bytes], Any] = self._hot.fetch
        self.get_hot: Callable[..., Any] = self._hot.get
        # ``has_hot(cache, key)``: key in d the same way, no value read: True,
        # False, or NOT_READ (the general path: dict_contains).
        self.has_hot: Callable[[dict[Any, Any], Any], Any] = self._hot.has
        # ``pop_hot(cache, key)``: d.pop(key) the same way: the value's pickle, taken
        # out; None if absent; or NOT_READ (nothing taken: the general path).
        self.pop_hot: Callable[[dict[Any, Any], Any], Any] = self._hot.pop
        # ``cache_keep(cache, key, value, stripe, version)``: the general path's
        # read kept in the same cache, counted with what get_hot keeps.
        self.cache_keep: Callable[[dict[Any, Any], Any, bytes, int, int], None] = self._hot.keep
        # self._fetch (shms_dict_fetch), self.list_push(i, value, vlen) -- a list
        # heap's insert (append: i = 2**63-1), the same way (list_ops.c) -- and
        # self.list_store(i, value, vlen), its lst[i] = x, are bound to the handle
        # by their first use (__getattr__): attaching a dict never needs list_push,
        # nor a first read the fetch.
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
        self.versions_view = NO_VERSIONS
        # The heap's extent count, read after each operation that may allocate
        # to report growth (set_growth_hook); same rules as modcount_view.
        self._extents_view = memoryview(
            ffi.buffer(lib.shms_heap_n_extents_ptr(handle), 8)).cast("Q")
        self._extents_seen = self._extents_view[0]

    def __getattr__(self, name: str) -> Any:
        # Only for an unset slot (close() sets these to stand-ins that raise): the
        # handle-bound calls made by their first use.
        if name == "_fetch":
            fn = lib.shms_dict_fetch
        elif name == "list_push":
            fn = lib.shms_list_push
        elif name == "list_store":
            fn = lib.shms_list_store
        elif name == "guard":
            return self._make_guard()
        else:
            return super().__getattr__(name)
        bound = partial(fn, self._handle())
        setattr(self, name, bound)
        return bound

    def held_here(self) -> bool:
        """Whether the calling thread holds the heap lock through this handle's guard
        (False, and no guard made, if it has none yet)."""
        try:
            guard = object.__getattribute__(self, "guard")
        except AttributeError:
            return False
        return cast(LockGuard, guard).held()

    def _make_guard(self) -> LockGuard:
        # One guard per handle, whichever thread asks first: two would each keep
        # their own idea of who here holds the lock.
        with _GUARD_MADE:
            try:
                return cast(LockGuard, object.__getattribute__(self, "guard"))  # another thread's
            except AttributeError:
                pass
            h = self._h
            guard = LockGuard(ffi.NULL if h is None else h, heap=True, shmid=self._att.shmid,
                              keep=h)  # the handle outlives every call through the guard
            if h is None:
                guard.close()  # made after close(): every acquire raises, as it would have
            else:
                # Under this thread's hold of the lock (with obj.lock: ...), the
                # one-call paths run held instead of handing over.
                self._hot.guarded(guard._g, int(ffi.cast("uintptr_t", guard._g)))
            self.guard = guard
            return guard

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
                   if rc == errno.EINVAL else failure(rc, "creating the heap", asked=0))
        return cls(att, out[0])

    @classmethod
    def open(cls, att: Attachment, offset: int, size: int) -> Heap:
        """Open an existing heap; CorruptSegmentError if it is not one."""
        out = ffi.new("shms_heap_t **")
        rc = lib.shms_heap_open(cls._base(att, offset, size), size, out)
        if rc:
            raise failure(rc, "opening the heap", asked=0)
        heap = cls(att, out[0])
        # Attach every extent now: one grown by a sole user is already marked
        # for removal and lives only while someone holds it (src/extent.c).
        # A busy lock's holder holds them all; a corrupt heap fails its ops.
        try:
            rc = lib.shms_heap_sync_extents(heap._h)
            if rc and rc not in _SYNC_LATER:
                raise heap._failure(rc, "opening the heap")
        except BaseException:
            heap.close()
            raise
        return heap

    def close(self) -> None:
        """Detach the extents this handle attached (not extent 0); idempotent."""
        h, self._h = self._h, None
        # Never read the counters again: their memory may be unmapped next.
        self.modcount_view = self._extents_view = _NO_COUNTER
        self.versions_view = NO_VERSIONS
        self.store = self._fetch = self._peek = self.get_hot = self.has_hot = _closed
        self.pop_hot = _closed
        self.list_push = self.list_store = _closed
        if h is not None:
            # getattr: None when __init__ was interrupted before setting them
            hot = getattr(self, "_hot", None)
            if hot is not None:
                hot.close()  # before the handle is freed: it may be kept elsewhere
            with _GUARD_MADE:  # one made from now on sees _h None (_make_guard)
                try:  # not getattr: that would make one
                    guard = object.__getattribute__(self, "guard")
                except AttributeError:
                    guard = None
            if guard is not None:
                guard.close()
            # Waits for the calls other threads are inside (at most a slice), so
            # that the caller may unmap extent 0 next; h is freed with its last user.
            lib.shms_heap_close(h)

    def __del__(self) -> None:
        if getattr(self, "_h", None) is not None:
            self.close()

    def destroy_extents(self) -> None:
        """IPC_RMID every extent segment (by whoever removes the main segment
        while no other process is attached)."""
        lib.shms_heap_destroy_extents(self._handle())

    # -------------------------------------------------------------- locking
    def lock(self, timeout: float | None = None) -> bool:
        """Take the heap lock; True if a dead owner's state was repaired.

        ``None`` waits forever (in Ctrl-C-friendly slices), ``0`` tries once.
        """
        if timeout == 0:  # one try (what wait_in_slices would do, without its set-up)
            rc = lib.shms_heap_lock(self._handle(), 0)
        else:
            rc = wait_in_slices(partial(lib.shms_heap_lock, self._handle()), timeout,
                                lambda: self._watch("locking the heap"))
        if rc == OK:
            return False
        if rc == RECOVERED:
            return True
        raise self._failure(rc, "locking the heap")

    def unlock(self) -> None:
        rc = lib.shms_heap_unlock(self._handle())
        if rc == errno.EPERM:
            raise RuntimeError("unlock of a heap lock this thread does not hold")
        if rc:
            raise self._failure(rc, "unlocking the heap")

    def wait_change(self, seen: int, timeout: float) -> bool:
        """Sleep until the heap's modification counter differs from ``seen``.

        Returns False when ``timeout`` seconds pass first.  Read ``seen``
        (``modcount_view[0]``) while holding the lock, release it, then wait:
        every change committed after the read ends the wait.
        """
        h = self._handle()
        rc = lib.shms_heap_wait_change(h, seen, max(0, int(timeout * 1e9)))
        if rc == ECLOSED:  # another thread detached the object meanwhile
            raise ValueError(DETACHED)
        return bool(rc != errno.ETIMEDOUT)

    # ------------------------------------------------------------- counters
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

    # ---------------------------------------------------- checking, stats
    def check(self, *, held: bool = False) -> str | None:
        """Full structural check; None when consistent, else the problem."""
        h = self._handle()
        msg = ffi.new("char[]", 512)

        def call(held: bool) -> int:
            return int(lib.shms_heap_check(h, msg, 512, held, SLICE_NS))

        if self._until_done("checking the heap", call, call(held), held, done=(0, 1)) == 0:
            return None
        return ffi.string(msg).decode("utf-8", "replace")  # type: ignore[no-any-return]

    def rebuild(self, *, held: bool = False) -> None:
        """Run the crash-recovery rebuild now (for tests and repair tools)."""
        h = self._handle()

        def call(held: bool) -> int:
            return int(lib.shms_heap_rebuild(h, held, SLICE_NS))

        self._until_done("rebuilding the heap", call, call(held), held)

    def stats(self, *, held: bool = False) -> dict[str, int]:
        """bytes_total/used/free (in extents), extents, generation, entries,
        recoveries (all processes), modcount, used_blocks, handle_recoveries."""
        h = self._handle()
        out = ffi.new("uint64_t[]", len(_STATS))

        def call(held: bool) -> int:
            return int(lib.shms_heap_stats(h, out, len(_STATS), held, SLICE_NS))

        self._until_done("reading heap stats", call, call(held), held)
        d = {k: int(out[i]) for i, k in enumerate(_STATS)}
        d["handle_recoveries"] = int(lib.shms_heap_recoveries(h))
        return d
