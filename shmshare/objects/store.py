"""The store interface: what a dict-shaped shared object asks of its storage.

SharedDict, SharedNamespace and SharedValue are written once, against this
interface; the shared-memory :class:`~shmshare._core.heap.Heap` is its first
implementation and :class:`~shmshare.stores.redis.entries.RedisEntries` the
second.  Keys arrive encoded (:func:`~shmshare.objects.codec.encode_key`:
the bytes and the length of their canonical prefix, which decides
equality); values arrive pickled.

Every method is one atomic step on the store.  ``held=True`` says the
caller holds the object's lock (``with d.lock:``), so the step must not wait
for it; a store whose steps check the lock by themselves (Redis) may ignore
the flag.  Several steps become one under the object's lock, which every
store provides beside this interface (``acquire``/``release``/``held()``).

Reads return ``bytes``, or a ``memoryview`` lent by the store that the
caller gives back with :meth:`recycle` once unpickled.  ``dict_read_versioned``
supports a per-process read cache: a stripe of -1 says "do not cache", which
is all a store without shared version counters ever answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["EntryStore"]


class EntryStore(Protocol):
    """Entries in insertion order, each step atomic (see the module docstring)."""

    def dict_get(self, key: bytes, cmp_len: int, *, held: bool = False) -> bytes | None: ...

    def dict_read_versioned(self, key: bytes, cmp_len: int
                            ) -> tuple[bytes | memoryview | None, int, int]: ...

    def dict_contains(self, key: bytes, cmp_len: int, *, held: bool = False) -> bool:
        """Whether ``key`` is stored, without fetching its value."""

    def dict_set(self, key: bytes, cmp_len: int, value: bytes, *,
                 only_if_absent: bool = False, held: bool = False) -> bool:
        """Store ``value``; True if the key was new (an existing key keeps its place)."""

    def dict_store(self, key: bytes, cmp_len: int, value: bytes) -> None: ...

    def store(self, key: bytes, cmp_len: int, value: bytes, value_len: int) -> int:
        """The fast path of ``d[k] = v``: 0 when stored, else call ``dict_set``."""

    def dict_pop(self, key: bytes, cmp_len: int, *, held: bool = False) -> bytes | None: ...

    def dict_len(self, *, held: bool = False) -> int: ...

    def dict_clear(self, *, held: bool = False) -> None: ...

    def dict_popitem(self, *, held: bool = False) -> tuple[bytes, bytes] | None: ...

    def dict_scan(self, after_seq: int = -1, *, reverse: bool = False, values: bool = True,
                  held: bool = False, decode: Callable[[bytes], Any] | None = None
                  ) -> list[tuple[int, Any, bytes | None]]:
        """A batch ``(seq, key, value)`` after (reverse: before) ``after_seq``; [] ends.
        The key is its bytes, or ``decode(key bytes)``."""

    def recycle(self, view: memoryview) -> None: ...

    def check(self) -> str | None:
        """What is broken, or None."""

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...
