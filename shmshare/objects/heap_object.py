"""``HeapObject``: the base of every shared object stored on a heap (all but arrays).

Identity, naming, lifecycle, trust and pickling come from
:class:`~shmshare.objects.shared_object.SharedObject`; this adds the heap
(created with the object's initial data inside its creation), the object's
robust lock, the read cache, and the wait that sleeps without the lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, cast

from .._core.extents import never_grew, reap_extents
from .._core.heap import Heap
from .._core.heap_dict import BIG_VALUE, NOT_READ
from ..errors import CorruptSegmentError
from ..naming.header import HEADER_SIZE, Header
from ..naming.lifecycle import register_destroy_hook
from ..segment import Segment
from .codec import PLAIN_TYPES, dumps, encode_key, large_parts, loads
from .lock import ObjectLock
from .shared_object import SharedObject

__all__ = ["HeapObject"]

INITIAL_SIZE = 64 * 1024  # objects start small and grow online

def _not_hot(cache: dict[Any, Any], key: Any, default: Any = None) -> Any:
    return NOT_READ  # a store without Heap.get_hot/has_hot (Redis): the general path


# Keys whose Python equality is exactly the canonical encoding's, so that the
# read cache may be keyed by the key object itself.
_CACHEABLE = (str, int, bytes)
_CACHE_MAX_VALUE = BIG_VALUE  # larger values are never cached (Heap._peek copies no more)


def _destroy_extents(att: Any, header: Header, nattch: int) -> None:
    # Runs whenever a heap-backed segment is removed (last detach, rm, gc, unlink).
    # It needs no heap header (one that fails never_grew's checks is reaped in
    # full), so a damaged heap stays removable: extent keys
    # derive from the main shmid (_core/src/extent.c).  With other processes
    # attached, the main segment dies with the last of them, who removes the
    # extents right after detaching it.  A heap that never grew has none to find:
    # the walk of the kernel's table (a syscall per segment) is skipped.
    if nattch <= 1 and not never_grew(att, HEADER_SIZE, header.payload_size):
        reap_extents(att.shmid, force=True)


register_destroy_hook(_destroy_extents)


class _LazyLock:
    """``HeapObject._lock``, the heap's ObjectLock, made by its first use: an object
    that only reads and writes through the hot calls never needs one.  Threads that
    ask at once may each make one; setdefault keeps the first, and all are on the
    heap's one guard (Heap._make_guard)."""

    def __get__(self, obj: HeapObject | None, cls: type | None = None) -> Any:
        if obj is None:
            return self
        # An instance attribute from now on, found before this (non-data) descriptor.
        return vars(obj).setdefault("_lock", ObjectLock(obj._heap, obj))


class HeapObject(SharedObject):
    """A shared object stored on a heap: ``_heap``, ``_lock``, and the read cache.

    Everything the objects above do to their storage goes through ``_heap``,
    an :class:`~shmshare.objects.store.EntryStore`: the shared-memory heap, or
    (``url=``) a Redis store's entries.  A subclass that uses nothing else
    sets ``_ON_STORES`` and works on both.
    """

    _HEAP_FLAG = True
    _ON_STORES: ClassVar[bool] = False  # written only against .store: it runs on Redis too
    _heap: Heap
    _lock: ObjectLock = cast(ObjectLock, _LazyLock())

    def _payload_size(self) -> int:
        return INITIAL_SIZE

    def _init_payload(self, att: Any, offset: int, size: int, *, mode: int, anonymous: bool,
                      initial: Iterable[tuple[Any, bytes]]) -> Heap:
        heap = Heap.create(att, offset, size, mode=mode, anonymous=anonymous)
        try:
            for key, value in initial:
                kb, n = encode_key(key)
                heap.dict_set(kb, n, value)
        except BaseException:
            heap.destroy_extents()  # the segment is removed by the caller; its extents here
            heap.close()
            raise
        return heap

    def _bind_payload(self, seg: Segment, made: Heap | None) -> None:
        heap = made if made is not None else Heap.open(seg._attachment(), HEADER_SIZE, seg.size)
        self._attach(seg, heap)

    def _attach(self, seg: Segment, heap: Heap) -> None:
        heap.same_namespace = seg._pid_namespace_check()
        seg._on_release(heap.close)
        self._bind_store(seg, heap, None)

    def _open_remote(self, url: str, *, name: str | None, create: bool | None, persist: bool,
                     trust: bool, initial: Iterable[tuple[Any, bytes]],
                     anonymous: bool = False) -> bool:
        if not self._ON_STORES:
            return super()._open_remote(url, name=name, create=create, persist=persist,
                                        trust=trust, initial=initial)
        from .remote import open_remote

        encoded = [(*encode_key(key), value) for key, value in initial]
        handle, entries, lock, created = open_remote(
            self, url, name=name, create=create, persist=persist, trust=trust,
            initial=encoded, anonymous=anonymous)
        # The store's handle stands where a segment would (name, persist, detach...).
        self._bind_store(cast(Segment, handle), cast(Heap, entries), cast(ObjectLock, lock))
        self._trust = trust
        return created

    def __reduce__(self) -> tuple[Any, ...]:
        from .remote import RemoteHandle, reopen_remote

        h = self._seg
        if isinstance(h, RemoteHandle):
            return (reopen_remote, (type(self), h.url, h.store_name, h.anonymous, h.persist,
                                    self._trust))
        return super().__reduce__()

    def _bind_store(self, seg: Segment, heap: Heap, lock: ObjectLock | None) -> None:
        """Bind the object to its storage: ``heap`` speaks :class:`.store.EntryStore`;
        ``lock`` None: the heap's, made by its first use (_LazyLock)."""
        self._seg = seg
        self._heap = heap
        if lock is not None:
            self._lock = lock
        self._rcache: dict[Any, bytes] = {}  # SharedList's own cache (list.py)
        self._rbytes = 0
        self._rmark = -1
        self._read_cache: dict[Any, list[Any]] = {}  # [bytes, stripe, version]
        # What the general path keeps there, counted with what get_hot keeps
        # (Heap.cache_keep); only a heap hands out versions (stripe >= 0).
        self._cache_keep: Callable[..., None] | None = getattr(heap, "cache_keep", None)
        # d.get(key, default) for a key the C paths encode (a str, an int, bytes, a
        # tuple: ext/hotkeys.c) through the read cache (Heap.get_hot, one C call for
        # a hit, a re-read and an absent key; used by SharedDict's get(); d[k] is
        # DictItems' in C): the value, default, or NOT_READ for the general path.
        self._get_hot: Callable[..., Any] = getattr(heap, "get_hot", _not_hot)
        self._has_hot: Callable[..., Any] = getattr(heap, "has_hot", _not_hot)
        self._pop_hot: Callable[..., Any] = getattr(heap, "pop_hot", _not_hot)
        # A large array stored with its data copied once (a heap's; None: a store's).
        self._store_parts: Callable[..., None] | None = getattr(heap, "dict_store_parts", None)

    def _held(self) -> bool:
        return self._lock.held()

    def _taken(self, key: Any) -> bytes | None:
        """The stored bytes of ``key``, taken out (a dict's item, a set's member);
        None if absent."""
        data = self._pop_hot(self._read_cache, key)  # one C call, held or not
        if data is NOT_READ:
            kb, n = encode_key(key)
            data = self._heap.dict_pop(kb, n, held=self._held())
        return data  # type: ignore[no-any-return]

    def _store_slow(self, kb: bytes, data: bytes) -> None:
        """Where a C slot's store (DictItems' d[k] = v, AttrItems' ns.x = v) hands
        over when the store did not take the pickle at once (the lock busy or held
        here, the heap full, damage): the general path waits, grows or raises."""
        self._heap.dict_set(kb, len(kb), data, held=self._heap.held_here())

    def _check_payload(self) -> None:
        problem = self._heap.check()
        if problem is not None:
            raise CorruptSegmentError(f"{self._label()}: {problem}")

    def _payload_stats(self) -> dict[str, int]:
        return self._heap.stats()

    # Read cache.  ``_read_cache`` maps keys to ``[bytes, stripe, version]``:
    # the pickled bytes this process last read, valid while the key's
    # version stripe in shared memory still reads ``version``.  Every change
    # of a key bumps its stripe before it commits (dict.c, READ CACHE), so a
    # write to one key leaves the other keys' entries valid.  A hit costs
    # one read of shared memory and a local dict lookup, without the lock;
    # values are still unpickled per read, so callers get copies as always.

    def _encoded(self, value: Any) -> bytes | tuple[bytes, Any, bytes]:
        """``value`` as the store takes it: pickled, or, a large bytes, bytearray
        or array on a heap, the three parts of its pickle (codec.large_parts: its
        data copied once, by the store)."""
        if self._store_parts is not None and type(value) not in PLAIN_TYPES:
            parts = large_parts(value)
            if parts is not None:
                return parts
        return dumps(value)

    def _store(self, kb: bytes, n: int, value: Any) -> None:
        """Store ``value`` under the encoded key (:meth:`_encoded`, :meth:`_write`)."""
        self._write(kb, n, self._encoded(value))

    def _write(self, kb: bytes, n: int, data: bytes | tuple[bytes, Any, bytes], *,
               held: bool = False) -> None:
        """Store what :meth:`_encoded` made under the encoded key."""
        if isinstance(data, bytes):
            if not held:
                self._heap.dict_store(kb, n, data)
            elif n != len(kb) or self._heap.store(kb, n, data, len(data)):  # C, held
                self._heap.dict_set(kb, n, data, held=True)  # grows, repairs, raises
        else:
            assert self._store_parts is not None
            self._store_parts(kb, n, *data, held=held)

    def _loaded(self, data: Any) -> Any:
        """The object ``_read`` returned the stored form of (not None)."""
        if type(data) is bytes:
            return loads(data)
        if type(data) is memoryview:  # a large value, in a buffer lent by the heap
            try:
                return loads(data)
            finally:
                self._heap.recycle(data)
        return data.load()  # a large array, read in one copy (_core/heap_split.py)

    def _has(self, key: Any) -> bool:
        """Whether ``key`` is stored: a valid cache entry says so, else the store,
        which fetches no value (a large one would be copied only to be dropped)."""
        got = self._has_hot(self._read_cache, key)  # one C call (ext/hotkeys.c's keys)
        if got is not NOT_READ:
            return got  # type: ignore[no-any-return]
        hit = self._read_cache.get(key) if type(key) in _CACHEABLE else None
        if hit is not None and self._heap.versions_view[hit[1]] == hit[2]:
            return True
        kb, n = encode_key(key)
        return self._heap.dict_contains(kb, n)

    def _read(self, key: Any) -> Any:
        """The stored bytes for ``key``, or None: through the cache when valid.
        Not always bytes: unpickle it with :meth:`_loaded`."""
        cacheable = type(key) in _CACHEABLE
        hit = self._read_cache.get(key) if cacheable else None
        if hit is not None and self._heap.versions_view[hit[1]] == hit[2]:
            return cast(bytes, hit[0])
        kb, n = encode_key(key)
        data, stripe, version = self._heap.dict_read_versioned(kb, n)
        if not cacheable:
            return data
        if (type(data) is not bytes or stripe < 0 or len(data) > _CACHE_MAX_VALUE
                or self._cache_keep is None):
            # Absent, uncacheable, or large (then lent as a memoryview: never kept).
            if hit is not None:
                self._read_cache.pop(key, None)
            return data
        # Past the cap the cache is emptied in place, never replaced: SharedDict's
        # C d[k] holds this dict (DictItems).  A thread reading it meanwhile holds
        # its entry, a list.
        self._cache_keep(self._read_cache, key, data, stripe, version)
        return data
