"""What every :class:`~shmshare._core.heap.Heap` method stands on: the handle,
per-thread buffers, the one loop that retries a C heap call, and growth notes.

Every heap operation is one C call that takes the heap's lock itself
(``held=False``) or runs under the caller's (``held=True``), waiting at
most one slice (:mod:`.slices`).  :meth:`HeapBase._until_done` is the only
place that decides what to do with any other result: wait on (the lock was
busy), call again with ``held`` (this thread holds the lock), grow the
buffer, or raise (:mod:`.results`).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import Any

from ..errors import ShmValueError
from . import fork_hooks
from ._lib import ffi, lib
from .owner_watch import OwnerWatch
from .results import BUSY, DETACHED, ETOOSMALL, OK, failure
from .slices import Deadline

# No zero-filling: a big buffer is written by the copy before it is read.
new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)

__all__ = ["HeapBase", "set_growth_hook"]

_SCRATCH = 4096  # initial per-thread buffer for values
#: A thread's scratch buffer grows to what one operation needs; past this size it
#: is let go once the operation has copied its result out (Scratch.take).
SCRATCH_KEEP = 4 << 20
#: The buffer large reads are lent in (HeapBase._read_lent) is kept for the
#: thread's next one up to this size, and dropped past it.
BIG_KEEP = 64 << 20

# Held while a heap makes its per-thread buffers' home (HeapBase.__getattr__):
# reentrant (a signal handler may use a heap meanwhile), and made anew in a
# forked child (a thread of the parent may have held it at the fork).
_TLS_MADE = threading.RLock()


def _new_tls_lock() -> None:
    global _TLS_MADE
    _TLS_MADE = threading.RLock()


fork_hooks.at_fork(after_in_child=_new_tls_lock)

#: ``hook(shmid, before, after, most)``: a heap grew from ``before`` to ``after``
#: extents; set by the layer that logs (``shmshare._log``).  The core decides
#: nothing about how growth is reported.
_growth_hook: Callable[[int, int, int, int], None] | None = None


def set_growth_hook(hook: Callable[[int, int, int, int], None] | None) -> None:
    """Call ``hook(shmid, before, after, most)`` after an operation that grew a heap."""
    global _growth_hook
    _growth_hook = hook


class Scratch:
    """Per-thread output buffers (cffi releases the GIL during C calls)."""

    __slots__ = ("buf", "cap", "res", "res_view")

    def __init__(self) -> None:
        self.cap = _SCRATCH
        self.buf = ffi.new("char[]", self.cap)
        self.res = ffi.new("uint64_t[4]")
        self.res_view = memoryview(ffi.buffer(self.res)).cast("Q")  # faster than cdata

    def grow(self, need: int) -> None:
        cap = max(need, self.cap * 2)
        self.buf = new_uncleared("char[]", cap)  # an output: written before it is read
        self.cap = cap

    def take(self, n: int) -> bytes:
        """The first ``n`` bytes of the buffer, copied; a buffer grown past
        SCRATCH_KEEP is let go (a 10 MiB read must not cost every thread that
        made one 10 MiB for as long as it lives)."""
        data: bytes = ffi.unpack(self.buf, n)
        if self.cap > SCRATCH_KEEP:
            self.cap = _SCRATCH
            self.buf = ffi.new("char[]", self.cap)
        return data


class HeapBase:
    """The parts of a heap handle that its operations share (see ``Heap``)."""

    # Set by Heap.__init__; here because the methods below use them.
    __slots__ = ("_att", "_extents_seen", "_extents_view", "_h", "_tls", "lock_timeout",
                 "same_namespace")
    _att: Any
    _h: Any
    _tls: threading.local
    _extents_view: memoryview
    _extents_seen: int
    lock_timeout: float | None
    same_namespace: Callable[[], bool] | None

    def __getattr__(self, name: str) -> Any:
        # Only for an unset slot: this heap's per-thread buffers, made by the
        # first operation that needs them, once: a second one made by a racing
        # thread would strand the first thread's buffers mid-operation.
        if name == "_tls":
            with _TLS_MADE:
                try:
                    return object.__getattribute__(self, "_tls")
                except AttributeError:
                    tls = self._tls = threading.local()
                    return tls
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _handle(self) -> Any:
        h = self._h
        if h is None:
            raise ValueError(DETACHED)
        return h

    def _ready(self) -> tuple[Any, Scratch]:
        """The live handle and this thread's buffers (ValueError once closed)."""
        h = self._h
        if h is None:
            raise ValueError(DETACHED)
        return h, self._scratch()

    def _scratch(self) -> Scratch:
        try:
            return self._tls.s  # type: ignore[no-any-return]
        except AttributeError:
            s = self._tls.s = Scratch()
            return s

    def _read_lent(self, call: Callable[[Any, int], int], s: Scratch) -> memoryview | int:
        """A large read: ``call(buf, cap)`` into this thread's big buffer, again
        while it answers ETOOSMALL (``s.res[0]``: the length needed, as when it was
        first too small), and the bytes read lent out as a memoryview: unpickling
        straight from it saves a copy and a fresh allocation (page faults) per
        read.  Give it back with :meth:`recycle`; until then a read on this thread
        (a reentrant one) uses another buffer.  Any other code of ``call`` is
        returned (the buffer kept for the next read)."""
        tls = self._tls
        big, tls.big = getattr(tls, "big", None), None
        while True:
            need = s.res_view[0]
            if big is None or len(big) < need:
                big = new_uncleared("char[]", need)
            rc = call(big, len(big))
            if rc == OK:
                view = memoryview(ffi.buffer(big, s.res_view[0]))
                tls.lent = (view, big)
                return view
            if rc != ETOOSMALL:
                tls.big = big if len(big) <= BIG_KEEP else None
                return int(rc)

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
            tls.big = lent[1] if len(lent[1]) <= BIG_KEEP else None

    def _watch(self, what: str) -> OwnerWatch:
        h = self._h
        return OwnerWatch(lambda: int(lib.shms_heap_lock_owner(h)), self._att.shmid,
                          self.same_namespace, what)

    def _failure(self, rc: int, what: str) -> Exception:
        h = self._h
        return failure(rc, what, asked=int(lib.shms_heap_last_grow(h)) if h is not None else 0)

    def _until_done(self, what: str, call: Callable[[bool], int], rc: int, held: bool = False,
                    *, done: tuple[int, ...] = (0,), grow: Callable[[], None] | None = None,
                    key: tuple[bytes, int] | None = None) -> int:
        """The one retry loop: ``rc`` is what ``call(held)`` just returned; call it
        again until it returns a code in ``done``, and return that code.

        Busy: wait on, in slices, polling the owner watch, until ``lock_timeout``
        (then LockTimeoutError).  EDEADLK while ``held`` is False: this thread
        holds the lock (an ERRORCHECK mutex), so call again with ``held``.
        ETOOSMALL: ``grow()`` the buffer ``call`` reads, and call again.
        Anything else raises.  An op that failed changed nothing, so calling
        it again is safe.  ``key``: the key and cmp_len of a dict op, to
        explain an EINVAL.
        """
        deadline: Deadline | None = None
        watch: OwnerWatch | None = None
        while rc not in done:
            if rc in BUSY:
                if deadline is None or watch is None:
                    deadline, watch = Deadline(self.lock_timeout), self._watch(what)
                if deadline.passed():
                    raise self._failure(rc, what)
                watch.poll()
            elif rc == errno.EDEADLK and not held:
                held = True
            elif rc == ETOOSMALL and grow is not None:
                grow()
            elif rc == errno.EINVAL and key is not None and not (
                    0 <= key[1] <= len(key[0]) < 0xFFFFFFFF):
                raise ShmValueError(f"{what}: cmp_len {key[1]} outside 0..{len(key[0])}, "
                                    f"or key too long")
            else:
                raise self._failure(rc, what)
            rc = call(held)
        if self._extents_view[0] != self._extents_seen:
            self._note_growth()
        return rc

    def _note_growth(self) -> None:
        before, self._extents_seen = self._extents_seen, self._extents_view[0]
        hook = _growth_hook
        if hook is not None:
            hook(self._att.shmid, before, self._extents_seen, int(lib.SHMS_MAX_EXT))
