"""``SharedArray``: a numpy array (or typed memoryview) in shared memory, zero-copy.

Layout of the segment's payload: one page of array header — magic, the
dtype's description, the shape, and a robust mutex for ``sa.lock`` — then the
data, C-contiguous and page-aligned.  ``np.asarray(sa)`` / ``sa.numpy()`` are
views on that memory: writes are seen by every process at once.

Views keep the mapping alive.  ``sa.detach()`` while views exist raises
BufferError; if the SharedArray object is garbage-collected instead, the
detach is deferred until the last view dies — never a dangling view.

The object builds its own view once per attachment and keeps it (``sa[i]``
is then one numpy indexing, not a new view each time); ``detach()`` drops
it before it counts the views still alive, and nothing uses it after.

Lock-free use is the common case: give each worker a disjoint slice
(``a[i::n]`` or row blocks) and no lock is needed.  Hold ``sa.lock`` for
read-modify-write of shared regions (``with sa.lock: a += 1``).

numpy is optional: without it, ``sa.memoryview()`` gives a typed memoryview
for dtypes that are plain struct formats.
"""

from __future__ import annotations

import json
import math
import operator
import struct
import weakref
from typing import Any

from .. import _core
from ..errors import CorruptSegmentError, SegmentNotFoundError, ShmTypeError, ShmValueError
from ..naming.header import HEADER_SIZE
from ..segment import Segment
from .lock import ObjectLock
from .options import unconstructed
from .shared_object import HandleMethods, SharedObject

__all__ = ["SharedArray"]

_MAGIC = b"SHMSARR1"
# Slices of at least this many bytes are mapped in one madvise before use (see
# _populate), in chunks of _CHUNK bytes, each once per attachment.
_POPULATE_MIN = 1 << 20
_CHUNK = 2 << 20
_META = 4096  # array header size: the data after it stays page-aligned
_MUTEX_AT = 64
_DESCR_AT = _MUTEX_AT + 64  # after the mutex: length-prefixed JSON (dtype descr, shape)


_NUMPY: list[Any] = []  # [numpy or None] once looked up: imported on first use


def _np() -> Any:
    if not _NUMPY:
        try:
            import numpy as found
        except ImportError:  # pragma: no cover - exercised with numpy hidden
            found = None  # type: ignore[assignment]
        _NUMPY.append(found)
    return _NUMPY[0]


def _describe(dtype: Any) -> tuple[Any, int, str | None]:
    """(JSON-able description, itemsize, struct format or None) for ``dtype``."""
    np = _np()
    if np is not None:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise ShmTypeError(f"dtype must be a numpy dtype or its name (such as 'float64'), "
                               f"not {_short(dtype)}{_array_hint(dtype)}") from None
        fmt = dt.char if dt.kind in "biufc?" and dt.byteorder in "=|" else None
        return np.lib.format.dtype_to_descr(dt), dt.itemsize, fmt
    fmt = str(dtype)
    try:
        size = struct.calcsize(fmt)
    except struct.error:
        raise ShmValueError(f"without numpy, dtype must be a struct format code, not "
                            f"{dtype!r}") from None
    return {"struct": fmt}, size, fmt


def _shape(shape: Any) -> tuple[int, ...] | None:
    """``shape`` (an int or a sequence of ints) as a tuple; fails at construction."""
    if shape is None:
        return None
    dims = (shape,) if isinstance(shape, int) else shape
    try:
        out = tuple(operator.index(n) for n in dims)
    except TypeError:
        raise ShmTypeError(f"shape must be an int or a sequence of ints, not "
                           f"{_short(shape)}{_array_hint(shape)}") from None
    if any(n < 0 for n in out):
        raise ShmValueError(f"negative dimensions are not allowed: {out}")
    return out


def _array_hint(x: Any) -> str:
    """For an array passed where a shape or dtype goes: how to copy one in."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        return ""
    return ("; to share an array, make one of its shape and dtype and copy it in: "
            "s = SharedArray(a.shape, a.dtype, name=...); s[...] = a")


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _same_dtype(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class SharedArray(_core.ViewItems, HandleMethods, SharedObject, kind="array"):
    """``SharedArray(shape, dtype="float64", *, name=None, create=None, project_dir=None,
    persist=False, mode=0o600, trust=False)``.

    With a ``name`` (``SharedArray("frames")`` also works: a shape is never a
    str), unrelated processes open the same array; opening an existing one
    needs no shape or dtype (they come from its header), and a shape or dtype
    that differs from the header is a ShmValueError.  Opening one that does
    not exist without a shape is a SegmentNotFoundError.
    """

    _want: tuple[tuple[int, ...] | None, Any, int]  # shape, dtype descr, bytes: for creating

    def __init__(self, shape: Any = None, dtype: Any = None, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600, trust: bool = False) -> None:
        if isinstance(shape, str):  # SharedArray("frames"[, dtype]): open it by name
            if name is not None:
                raise TypeError("SharedArray() got the name twice (positionally and name=)")
            if isinstance(dtype, (int, tuple, list)):
                raise ShmTypeError(f"SharedArray({shape!r}, {dtype!r}): with a shape, pass the "
                                   f"name as a keyword: SharedArray({dtype!r}, name={shape!r})")
            name, shape = shape, None
        want_shape = _shape(shape)
        descr, itemsize, _ = _describe("float64" if dtype is None else dtype)
        self._want = (want_shape, descr, itemsize * math.prod(want_shape or ()))
        if want_shape is None:
            if name is None:
                raise ShmValueError("an anonymous SharedArray needs a shape")
            if create is True:
                raise ShmValueError(f"creating SharedArray {name!r} needs a shape")
        try:
            self._open(name=name, create=False if want_shape is None else create,
                       project_dir=project_dir, persist=persist, mode=mode, trust=trust)
        except SegmentNotFoundError as exc:
            if want_shape is None:
                raise SegmentNotFoundError(
                    exc.errno, f"{exc.strerror}: no SharedArray to open; give a shape (and "
                    "dtype) to create it", exc.filename) from None
            raise
        try:
            self._verify_opened(name, want_shape, None if dtype is None else descr)
        except BaseException:
            self._seg.detach()
            raise

    def _verify_opened(self, name: str | None, shape: tuple[int, ...] | None,
                       descr: Any) -> None:
        """The array opened is the one asked for (None: anything)."""
        if shape is not None and tuple(self.shape) != shape:
            raise ShmValueError(f"{name!r} has shape {self.shape}, not {shape}")
        if descr is not None and not _same_dtype(self._descr, descr):
            raise ShmValueError(f"{name!r} has dtype {self._descr!r}, not {descr!r}")

    def _payload_size(self) -> int:
        return _META + max(self._want[2], 1)

    def _init_payload(self, att: _core.Attachment, offset: int, size: int, *, mode: int,
                      anonymous: bool, initial: Any) -> None:
        want_shape, descr, _ = self._want
        meta = json.dumps({"descr": descr, "shape": list(want_shape or ()),
                           **self._meta_extra()}).encode()
        if _DESCR_AT + 4 + len(meta) > _META:
            raise ShmValueError("dtype description too large for the array header")
        view = att.memoryview()
        try:
            view[offset + _DESCR_AT:offset + _DESCR_AT + 4] = len(meta).to_bytes(4, "little")
            view[offset + _DESCR_AT + 4:offset + _DESCR_AT + 4 + len(meta)] = meta
        finally:
            view.release()
        _core.RobustMutex(att, offset + _MUTEX_AT).initialize()
        view = att.memoryview()
        try:
            view[offset:offset + 8] = _MAGIC
        finally:
            view.release()

    def _meta_extra(self) -> dict[str, Any]:
        """More JSON for the array header (subclasses)."""
        return {}

    def _bind_payload(self, seg: Segment, made: Any) -> None:
        att = seg._attachment()
        view = att.memoryview()
        try:
            base = HEADER_SIZE
            if bytes(view[base:base + 8]) != _MAGIC:
                raise CorruptSegmentError("not a SharedArray header (damaged or half-made)")
            n = int.from_bytes(view[base + _DESCR_AT:base + _DESCR_AT + 4], "little")
            raw = bytes(view[base + _DESCR_AT + 4:base + _DESCR_AT + 4 + n])
        finally:
            view.release()
        mutex = _core.RobustMutex(att, HEADER_SIZE + _MUTEX_AT)
        try:
            meta = json.loads(raw)
            descr, shape = meta["descr"], tuple(int(d) for d in meta["shape"])
            _, itemsize, fmt = _describe_stored(descr)
            if itemsize * math.prod(shape) > seg.size - _META or min(shape, default=0) < 0:
                raise ValueError("shape does not fit the segment")
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptSegmentError(f"SharedArray header is damaged: {exc}") from None
        if not mutex.kind_ok():
            raise CorruptSegmentError("SharedArray header is damaged: its lock is not a "
                                      "robust process-shared mutex")
        mutex.same_namespace = seg._pid_namespace_check()
        self._seg = seg
        self._descr = descr
        self._meta: dict[str, Any] = meta
        self.shape: tuple[int, ...] = shape
        self.itemsize, self._format = itemsize, fmt
        self._lock = ObjectLock(mutex, self)  # a dead owner: plain data, nothing to repair
        # After detach the mutex's memory is unmapped: the lock must refuse, not touch it.
        seg._on_release(mutex.guard.close)
        self._cache: Any = None  # this object's own view (numpy, or a typed memoryview)
        self._mapped: set[int] = set()  # chunks populated in this attachment
        me = weakref.ref(self)  # not self: the segment must not keep the object alive
        seg._before_detach(lambda: _drop_cache(me))

    def _check_payload(self) -> None:
        probe = unconstructed(type(self))
        probe._bind_payload(self._seg, None)  # re-reads and re-verifies the header

    def _payload_stats(self) -> dict[str, int]:
        return {"bytes_total": self._seg.size, "nbytes": self.nbytes, "recoveries":
                self._lock.recoveries}

    # -- views ----------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        return self.itemsize * math.prod(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> Any:
        np = _np()
        return np.lib.format.descr_to_dtype(self._descr) if np is not None else self._format

    def _raw(self) -> memoryview:
        return self._seg.buf[_META:_META + self.nbytes]

    def _view(self) -> Any:
        """This object's own view: numpy's, or a typed memoryview without numpy."""
        view = self._cache
        if view is None:
            view = self._cache = self._make_view()
            self._fast_views(view)
        return view

    def _fast_views(self, view: Any) -> None:
        # a[i] and a[i] = v go to the view in C (ViewItems) from now on, until
        # _drop_cache.
        self._fast_get = self._fast_set = view

    def _make_view(self) -> Any:
        np = _np()
        if np is None:
            return self.memoryview()
        return np.frombuffer(self._raw(), dtype=self.dtype).reshape(self.shape)

    def numpy(self) -> Any:
        """A zero-copy numpy view of the array."""
        np = _np()
        if np is None:
            raise ImportError("SharedArray.numpy() needs numpy; use memoryview() without it")
        view = self._view()
        if not isinstance(view, np.ndarray):  # a typed array keeps a memoryview of its own
            return np.frombuffer(self._raw(), dtype=self.dtype).reshape(self.shape)
        return view.view()  # a view of its own: reshaping it leaves ours alone

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        a = self.numpy()
        return a if dtype is None else a.astype(dtype, copy=False)

    def memoryview(self) -> memoryview:
        """A typed memoryview (struct format, shape) — works without numpy."""
        if self._format is None:
            raise TypeError(f"dtype {self._descr!r} has no memoryview format; use numpy()")
        raw = self._raw().cast("B")
        return raw.cast(self._format, self.shape) if self.nbytes else raw  # type: ignore[call-overload]

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    # a[i] and a[i] = v are ViewItems': the cached view indexed in C, no Python
    # frame.  These are their way for a slice, or before the view is built or
    # after detach dropped it (building it then raises as detached).
    def _getitem(self, index: Any) -> Any:
        view = self._view()
        if type(index) is slice:
            self._populate(index)
        return view[index]

    def _setitem(self, index: Any, value: Any) -> None:
        view = self._view()
        if type(index) is slice:
            self._populate(index)
        view[index] = value

    def _populate(self, rows: slice) -> None:
        """Map the rows a large slice covers before numpy touches them.

        A fresh System V attachment takes one page fault per 4 KiB page on
        first touch (shared memory segments have no fault-around); one
        madvise(MADV_POPULATE_READ) maps a range several times faster.  Only
        for slices of at least 1 MiB, and each 2 MiB chunk once per
        attachment: a small or repeated slice pays nothing.
        """
        if not self.shape or self.nbytes < _POPULATE_MIN:
            return
        start, stop, step = rows.indices(self.shape[0])
        if step < 0:
            start, stop = stop + 1, start + 1
        if stop <= start:
            return
        row = self.nbytes // self.shape[0] if self.shape[0] else 0
        lo, hi = start * row, stop * row
        if hi - lo < _POPULATE_MIN:
            return
        first, last = lo // _CHUNK, (hi - 1) // _CHUNK
        missing = [c for c in range(first, last + 1) if c not in self._mapped]
        if not missing:
            return
        begin = max(lo, missing[0] * _CHUNK)
        end = min(hi, (missing[-1] + 1) * _CHUNK)
        self._seg._attachment().populate(HEADER_SIZE + _META + begin, end - begin)
        self._mapped.update(missing)

    # -- what multiprocessing.Array users expect -------------------------------------

    def get_lock(self) -> ObjectLock:
        return self.lock

    def get_obj(self) -> Any:
        """The raw storage: a zero-copy numpy view (a typed memoryview without numpy)."""
        return self.numpy() if _np() is not None else self.memoryview()

    def __repr__(self) -> str:
        where = f", name={self.name!r}" if self.name is not None else ""
        state = "" if self._seg.attached else " (detached)"
        return f"<SharedArray shape={self.shape} dtype={self._descr!r}{where}{state}>"


def _drop_cache(ref: weakref.ref[SharedArray]) -> None:
    obj = ref()
    if obj is not None:
        obj._fast_get = obj._fast_set = obj._cache = None
        obj._mapped = set()


def _describe_stored(descr: Any) -> tuple[Any, int, str | None]:
    if isinstance(descr, dict) and "struct" in descr:
        return descr, struct.calcsize(descr["struct"]), descr["struct"]
    np = _np()
    if np is None:
        raise ImportError("this SharedArray has a numpy dtype; install numpy to open it")
    return _describe(np.lib.format.descr_to_dtype(descr))
