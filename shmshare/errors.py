"""Exceptions of shmshare, and the one table that turns an errno into one.

Every exception derives from :class:`ShmshareError` *and* from the builtin a
caller would naturally catch (``FileNotFoundError``, ``PermissionError``,
``MemoryError``, ``ValueError``...), keeps ``.errno`` where the failure came
from the kernel, and pickles, because exceptions cross process boundaries
(Pool results, ProcessPoolExecutor futures).
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any

__all__ = [
    "CorruptSegmentError",
    "LockTimeoutError",
    "ObjectGoneError",
    "SegmentExistsError",
    "SegmentNotFoundError",
    "SegmentRemovedError",
    "ShmLimitError",
    "ShmOSError",
    "ShmPermissionError",
    "ShmTypeError",
    "ShmValueError",
    "ShmshareError",
    "WrongTypeError",
    "from_errno",
]


class ShmshareError(Exception):
    """Base class of every shmshare exception; never raised directly."""

    errno: int | None  # set by every concrete subclass


class _OSErrorMixin(ShmshareError):
    """OSError-derived errors: ``OSError(errno, message[, filename])`` semantics."""

    def __init__(self, *args: Any) -> None:
        # OSError.__init__ sets .errno/.strerror/.filename from the args.
        super().__init__(*args)


class ShmOSError(_OSErrorMixin, OSError):
    """An operating-system failure with no more specific class."""


class SegmentExistsError(_OSErrorMixin, FileExistsError):
    """The object was asked to be created but already exists."""


class SegmentNotFoundError(_OSErrorMixin, FileNotFoundError):
    """No object of that name (or key, or id) exists."""


class SegmentRemovedError(SegmentNotFoundError):
    """The segment was removed (EIDRM) while this process was using it."""


class ShmPermissionError(_OSErrorMixin, PermissionError):
    """The kernel or the file system refused access."""


class _MessageError(ShmshareError):
    """Errors built from a message, with an optional errno kept as an attribute."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.errno))


class ShmLimitError(_MessageError, MemoryError):
    """A system limit (shmmax, shmall, shmmni, memory) stopped an allocation."""


class ShmValueError(_MessageError, ValueError):
    """An argument was invalid (bad name, size over a limit, wrong shape...)."""


class ShmTypeError(_MessageError, TypeError):
    """An argument has the wrong type (``SharedQueue("tasks")``: maxsize is an int)."""


class WrongTypeError(_MessageError, TypeError):
    """The named object exists but holds a different type (a list opened as a dict)."""


class CorruptSegmentError(_MessageError, RuntimeError):
    """A segment's header or heap fails its consistency checks."""


class LockTimeoutError(_MessageError, TimeoutError):
    """A lock could not be taken within the given timeout."""


class ObjectGoneError(_MessageError, ReferenceError):
    """A pickled shared object was unpickled after it had gone: every process that
    used it (its sender too) had detached.  Deliberately no OSError, which
    multiprocessing's result threads take for a closed pipe."""


# errno -> (class, hint).  The hint says what to do; the caller adds what was
# being done.  ENOSPC/ENOMEM/EINVAL get their precise reason from the caller
# (see shmshare._core.explain_shmget_error), since one errno means several things.
_TABLE: dict[int, tuple[type[ShmshareError], str]] = {
    _errno.EEXIST: (SegmentExistsError, "open it with create=None or create=False instead"),
    _errno.ENOENT: (SegmentNotFoundError, "create it first, or pass create=None"),
    _errno.EIDRM: (SegmentRemovedError, "segment was removed; create it again"),
    _errno.EACCES: (ShmPermissionError, "check the segment's owner and mode (ipcs -m)"),
    _errno.EPERM: (ShmPermissionError, "only the owner, the creator or root may do this"),
    _errno.ENOMEM: (ShmLimitError, "not enough memory; free segments or raise the limit"),
    _errno.ENOSPC: (ShmLimitError, "a System V limit is exhausted (kernel.shmmni or shmall)"),
    _errno.EINVAL: (ShmValueError, "invalid argument"),
    _errno.EFBIG: (ShmLimitError, "size exceeds a system limit"),
    _errno.ENFILE: (ShmLimitError, "the system file table is full"),
    _errno.EMFILE: (ShmLimitError, "this process has too many open files"),
}


def from_errno(
    err: int, what: str, hint: str | None = None, filename: str | None = None
) -> ShmshareError:
    """Build the exception for ``err`` raised while doing ``what``.

    The message reads "<what>: <strerror> (<hint>)"; ``hint`` overrides the
    table's generic advice when the caller knows the precise reason.
    """
    cls, default_hint = _TABLE.get(err, (ShmOSError, ""))
    hint = hint if hint is not None else default_hint
    message = f"{what}: {os.strerror(err)}" + (f" ({hint})" if hint else "")
    if issubclass(cls, _OSErrorMixin):
        if filename is not None:
            return cls(err, message, filename)
        return cls(err, message)
    assert issubclass(cls, _MessageError)
    return cls(message, err)
