"""The base of every shared object stored on a heap (dict today; list, queue... later).

It owns the object's segment (named or anonymous, see :mod:`shmshare.segment`)
and the heap handle on it, gives the object its lock, and makes it pickle by
reference: a few hundred bytes that reattach in the receiving process.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any, TypeVar

from .._core.heap import Heap
from ..errors import ShmPermissionError
from ..naming.header import HEADER_SIZE, Header
from ..naming.lifecycle import register_destroy_hook
from ..segment import Segment
from .codec import encode_key
from .lock import ObjectLock

__all__ = ["HeapObject"]

T = TypeVar("T", bound="HeapObject")

INITIAL_SIZE = 64 * 1024  # objects start small and grow online

# Keys whose Python equality is exactly the canonical encoding's, so that the
# read cache may be keyed by the key object itself.
_CACHEABLE = (str, int, bytes)
_CACHE_MAX_BYTES = 64 << 20  # the cache is dropped past this many bytes
_CACHE_MAX_VALUE = 1 << 20  # larger values are never cached


def _destroy_extents(att: Any, header: Header, nattch: int) -> None:
    # Runs whenever a heap-backed segment is removed (last detach, rm, gc,
    # unlink): the heap's extra segments go with it -- at once if no other
    # process can still use them, else with the last user (Heap.retire).
    heap = Heap.open(att, HEADER_SIZE, header.payload_size)
    try:
        if nattch <= 1:
            heap.destroy_extents()
        else:
            heap.retire()
    finally:
        heap.close()


register_destroy_hook(_destroy_extents)


class HeapObject:
    """Shared state: ``_seg`` (the main segment), ``_heap``, and ``lock``."""

    KIND = ""
    _seg: Segment
    _heap: Heap
    _trust: bool
    lock: ObjectLock

    def __init__(self, name: str | None = None, *, create: bool | None = None,
                 project_dir: str | os.PathLike[str] | None = None, persist: bool = False,
                 mode: int = 0o600, initial_size: int = INITIAL_SIZE,
                 trust: bool = False) -> None:
        created: list[Heap] = []

        def init(att: Any, offset: int, size: int) -> None:
            created.append(Heap.create(att, offset, size, mode=mode, anonymous=name is None))

        seg = Segment._open(self.KIND, name, initial_size, create=create,
                            project_dir=project_dir, persist=persist, mode=mode, init=init,
                            heap=True)
        if not created:
            _check_trust(seg, trust)
        heap = created[0] if created else Heap.open(seg._attachment(), HEADER_SIZE, seg.size)
        self._attach(seg, heap)
        self._trust = trust

    def _attach(self, seg: Segment, heap: Heap) -> None:
        self._seg = seg
        self._heap = heap
        heap.same_namespace = seg._pid_namespace_check()
        self.lock = ObjectLock(heap, self)
        seg._on_release(heap.last_detach)
        seg._on_release(heap.close)
        self._rcache: dict[Any, bytes] = {}  # SharedList's own cache (list.py)
        self._rbytes = 0
        self._rmark = -1
        self._read_cache: dict[Any, tuple[bytes, int, int]] = {}
        self._read_cache_bytes = 0

    def _wait_locked(self, deadline: float | None, slice_: float = 0.1) -> bool:
        """With ``self.lock`` held: release it, sleep until the heap changes (or a
        slice passes), and take it again.  False if ``deadline`` had passed.

        Sleeping never holds the lock, so a process killed here blocks nobody.
        """
        seen = self._heap.modcount_view[0]
        self.lock.release()
        try:
            remaining = slice_ if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._heap.wait_change(seen, min(slice_, remaining))
        finally:
            self.lock.acquire()
        return True

    # Read cache.  ``_read_cache`` maps keys to ``(bytes, stripe, version)``:
    # the pickled bytes this process last read, valid while the key's
    # version stripe in shared memory still reads ``version``.  Every change
    # of a key bumps its stripe before it commits (dict.c, READ CACHE), so a
    # write to one key leaves the other keys' entries valid.  A hit costs
    # one read of shared memory and a local dict lookup, without the lock;
    # values are still unpickled per read, so callers get copies as always.

    def _read(self, key: Any) -> bytes | memoryview | None:
        """The stored bytes for ``key``, or None: through the cache when valid."""
        cacheable = type(key) in _CACHEABLE
        hit = self._read_cache.get(key) if cacheable else None
        if hit is not None and self._heap.versions_view[hit[1]] == hit[2]:
            return hit[0]
        kb, n = encode_key(key)
        data, stripe, version = self._heap.dict_read_versioned(kb, n)
        if not cacheable:
            return data
        if type(data) is not bytes or stripe < 0 or len(data) > _CACHE_MAX_VALUE:
            # Absent, uncacheable, or large (then lent as a memoryview: never kept).
            if hit is not None:
                self._read_cache.pop(key, None)
            return data
        if self._read_cache_bytes > _CACHE_MAX_BYTES:
            # A new dict, not clear(): other threads may be reading the old one.
            self._read_cache, self._read_cache_bytes = {}, 0
        self._read_cache[key] = (data, stripe, version)
        self._read_cache_bytes += len(data) - (len(hit[0]) if hit is not None else 0)
        return data

    @classmethod
    def _reopen(cls: type[T], segment_ref: tuple[Any, tuple[Any, ...]],
                trust: bool = False) -> T:
        opener, args = segment_ref
        seg = opener(*args)
        try:
            _check_trust(seg, trust)
        except BaseException:
            seg.detach()
            raise
        self = cls.__new__(cls)
        self._attach(seg, Heap.open(seg._attachment(), HEADER_SIZE, seg.size))
        self._trust = trust
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (type(self), self._seg.__reduce__(), self._trust))

    # -- identity and lifecycle -----------------------------------------------------

    @property
    def name(self) -> str | None:
        return self._seg.name

    @property
    def project_dir(self) -> os.PathLike[str] | None:
        return self._seg.project_dir

    @property
    def persist(self) -> bool:
        return self._seg.persist

    @property
    def segment(self) -> Segment:
        """The main segment (key, id, stat...)."""
        return self._seg

    def stats(self) -> dict[str, int]:
        """Heap usage: bytes in extents, used, free, extents, entries, recoveries..."""
        return self._heap.stats()

    def check(self) -> None:
        """Verify the heap and index invariants; raise CorruptSegmentError if broken."""
        from ..errors import CorruptSegmentError

        problem = self._heap.check()
        if problem is not None:
            raise CorruptSegmentError(f"{self._label()}: {problem}")

    def detach(self) -> None:
        """Detach from this process; the last detach removes a non-persistent object."""
        self._seg.detach()

    close = detach

    def unlink(self) -> None:
        """Remove the object from shared memory now (as ``SharedMemory.unlink()``).

        Processes still attached keep access until they detach; the name can
        be created again at once.  (Not ``remove()``: lists and sets have a
        ``remove(item)`` of their own.)
        """
        self._seg.remove()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _label(self) -> str:
        n = self._seg.name
        return f"{type(self).__name__} {n!r}" if n is not None else (
            f"anonymous {type(self).__name__}")


def _reopen(cls: type[HeapObject], segment_ref: tuple[Any, tuple[Any, ...]],
            trust: bool = False) -> HeapObject:
    return cls._reopen(segment_ref, trust)


def _check_trust(seg: Segment, trust: bool) -> None:
    """Refuse to unpickle from a segment someone else could have written.

    Unpickling runs code chosen by whoever wrote the bytes.  Unless the
    caller passes ``trust=True``, the object's segment must be owned and
    created by this user and writable by nobody else (no group/other write
    bit): otherwise another user could plant a malicious pickle.
    """
    if trust:
        return
    st = seg.stat()
    me = os.geteuid()
    problem = None
    if st.uid != me or st.cuid != me:
        problem = f"it is owned by uid {st.uid} (created by uid {st.cuid}), not by you ({me})"
    elif st.mode & 0o022:
        problem = f"its mode {st.mode:o} lets other users write to it"
    if problem:
        raise ShmPermissionError(
            errno.EACCES, f"refusing to read {seg.kind} {seg.name or seg.id!r}: {problem}, and "
            "reading it means unpickling data another user could have written (running their "
            "code). Pass trust=True if you trust every user who can write to it")
