"""``SharedArray``: a numpy array (or typed memoryview) in shared memory, zero-copy.

Layout of the segment's payload: one page of array header — magic, the
dtype's description, the shape, and a robust mutex for ``sa.lock`` — then the
data, C-contiguous and page-aligned.  ``np.asarray(sa)`` / ``sa.numpy()`` are
views on that memory: writes are seen by every process at once.

Views keep the mapping alive.  ``sa.detach()`` while views exist raises
BufferError; if the SharedArray object is garbage-collected instead, the
detach is deferred until the last view dies — never a dangling view.

Lock-free use is the common case: give each worker a disjoint slice
(``a[i::n]`` or row blocks) and no lock is needed.  Hold ``sa.lock`` for
read-modify-write of shared regions (``with sa.lock: a += 1``).

numpy is optional: without it, ``sa.memoryview()`` gives a typed memoryview
for dtypes that are plain struct formats.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from .. import _core
from ..errors import CorruptSegmentError, ShmValueError
from ..naming.header import HEADER_SIZE
from ..segment import Segment
from .lock import ObjectLock

__all__ = ["SharedArray"]

_MAGIC = b"SHMSARR1"
_META = 4096  # array header size: the data after it stays page-aligned
_MUTEX_AT = 64
_DESCR_AT = _MUTEX_AT + 64  # after the mutex: length-prefixed JSON (dtype descr, shape)


def _np() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - exercised with numpy hidden
        return None
    return numpy


def _describe(dtype: Any) -> tuple[Any, int, str | None]:
    """(JSON-able description, itemsize, struct format or None) for ``dtype``."""
    np = _np()
    if np is not None:
        dt = np.dtype(dtype)
        fmt = dt.char if dt.kind in "biufc?" and dt.byteorder in "=|" else None
        return np.lib.format.dtype_to_descr(dt), dt.itemsize, fmt
    fmt = str(dtype)
    try:
        size = struct.calcsize(fmt)
    except struct.error:
        raise ShmValueError(f"without numpy, dtype must be a struct format code, not "
                            f"{dtype!r}") from None
    return {"struct": fmt}, size, fmt


def _same_dtype(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class SharedArray:
    """``SharedArray(shape, dtype="float64", *, name=None, create=None, ...)``.

    With a ``name``, unrelated processes open the same array; opening an
    existing one needs no shape or dtype (they come from its header), and a
    shape or dtype that differs from the header is a ShmValueError.
    """

    KIND = "array"

    def __init__(self, shape: Any = None, dtype: Any = None, *, name: str | None = None,
                 create: bool | None = None, project_dir: Any = None, persist: bool = False,
                 mode: int = 0o600) -> None:
        want_shape = None if shape is None else tuple(
            int(n) for n in ((shape,) if isinstance(shape, int) else shape))
        if want_shape is not None and any(n < 0 for n in want_shape):
            raise ShmValueError(f"negative dimensions are not allowed: {want_shape}")
        descr, itemsize, _ = _describe("float64" if dtype is None else dtype)
        nbytes = itemsize * math.prod(want_shape or ())
        can_create = create is not False and want_shape is not None

        def init(att: _core.Attachment, offset: int, size: int) -> None:
            view = att.memoryview()
            try:
                meta = json.dumps({"descr": descr, "shape": list(want_shape or ())}).encode()
                if _DESCR_AT + 4 + len(meta) > _META:
                    raise ShmValueError("dtype description too large for the array header")
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

        if not can_create and name is None:
            raise ShmValueError("an anonymous SharedArray needs a shape")
        seg = None
        if name is not None and create is not True:
            # Open first, whatever its size, so that a different shape or dtype
            # is reported as such rather than as a segment size.
            try:
                seg = Segment._open("array", name, 0, create=False, project_dir=project_dir,
                                    persist=persist, mode=mode)
            except FileNotFoundError:
                if not can_create:
                    raise
        if seg is None:
            seg = Segment._open("array", name, _META + max(nbytes, 1), create=create,
                                project_dir=project_dir, persist=persist, mode=mode, init=init)
        try:
            self._bind(seg)
            if want_shape is not None and tuple(self.shape) != want_shape:
                raise ShmValueError(f"{name!r} has shape {self.shape}, not {want_shape}")
            if dtype is not None and not _same_dtype(self._descr, descr):
                raise ShmValueError(f"{name!r} has dtype {self._descr!r}, not {descr!r}")
        except BaseException:
            seg.detach()
            raise

    def _bind(self, seg: Segment) -> None:
        att = seg._attachment()
        view = att.memoryview()
        try:
            base = HEADER_SIZE
            if bytes(view[base:base + 8]) != _MAGIC:
                raise ShmValueError("not a SharedArray header (damaged or half-made)")
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
        self.shape: tuple[int, ...] = shape
        self.itemsize, self._format = itemsize, fmt
        self.lock = ObjectLock(mutex, self)  # a dead owner: plain data, nothing to repair
        # After detach the mutex's memory is unmapped: the lock must refuse, not touch it.
        seg._on_release(mutex.guard.close)

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

    def numpy(self) -> Any:
        """A zero-copy numpy view of the array."""
        np = _np()
        if np is None:
            raise ImportError("SharedArray.numpy() needs numpy; use memoryview() without it")
        return np.frombuffer(self._raw(), dtype=self.dtype).reshape(self.shape)

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

    def __getitem__(self, index: Any) -> Any:
        return self.numpy()[index] if _np() is not None else self.memoryview()[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        if _np() is not None:
            self.numpy()[index] = value
        else:
            self.memoryview()[index] = value

    # -- what multiprocessing.Array users expect -------------------------------------

    def get_lock(self) -> ObjectLock:
        return self.lock

    def get_obj(self) -> Any:
        """The raw storage: a zero-copy numpy view (a typed memoryview without numpy)."""
        return self.numpy() if _np() is not None else self.memoryview()

    # -- identity and lifecycle -----------------------------------------------------------

    @property
    def name(self) -> str | None:
        return self._seg.name

    @property
    def segment(self) -> Segment:
        return self._seg

    def detach(self) -> None:
        self._seg.detach()

    close = detach

    def unlink(self) -> None:
        self._seg.remove()

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self._seg.__reduce__(),))

    def __repr__(self) -> str:
        where = f", name={self.name!r}" if self.name is not None else ""
        state = "" if self._seg.attached else " (detached)"
        return f"<SharedArray shape={self.shape} dtype={self._descr!r}{where}{state}>"


def _describe_stored(descr: Any) -> tuple[Any, int, str | None]:
    if isinstance(descr, dict) and "struct" in descr:
        return descr, struct.calcsize(descr["struct"]), descr["struct"]
    np = _np()
    if np is None:
        raise ImportError("this SharedArray has a numpy dtype; install numpy to open it")
    return _describe(np.lib.format.descr_to_dtype(descr))


def _reopen(segment_ref: tuple[Any, tuple[Any, ...]]) -> SharedArray:
    opener, args = segment_ref
    seg = opener(*args)
    self = SharedArray.__new__(SharedArray)
    try:
        self._bind(seg)
    except BaseException:
        seg.detach()
        raise
    return self

