"""What the C core's result codes mean: the one table from a code to an exception.

Every C call of the core returns 0 or a code: an errno from the kernel or
pthreads, or one of shms.h's own ``SHMS_E*`` codes (1000 and up).  This
table says, for each code that means the same whatever the call, which
exception it becomes and what the user should do; any other errno is a
kernel call's failure and goes to :func:`shmshare.errors.from_errno`, whose
hints are about segments and limits.  Nothing else in ``_core`` builds an
exception from a code.
"""

from __future__ import annotations

import errno

from ..errors import (
    CorruptSegmentError,
    LockTimeoutError,
    SegmentRemovedError,
    ShmLimitError,
    ShmshareError,
    WrongTypeError,
    _OSErrorMixin,
    from_errno,
)
from ._lib import lib

__all__ = ["BUSY", "DETACHED", "ECLOSED", "ECORRUPT", "EGROW", "ENOSPLIT", "ENOTFOUND",
           "ETOOSMALL", "EUNKNOWN", "OK", "RECOVERED", "failure"]

OK = 0
RECOVERED = int(lib.SHMS_RECOVERED)      # a lock taken after repairing a dead owner's state
ECORRUPT = int(lib.SHMS_ECORRUPT)
ETOOSMALL = int(lib.SHMS_ETOOSMALL)      # the caller's buffer is too small: grow, call again
ENOTFOUND = int(lib.SHMS_ENOTFOUND)
EUNKNOWN = int(lib.SHMS_EUNKNOWN)        # sync.c: learn the holder's process table, call again
ECLOSED = int(lib.SHMS_ECLOSED)
EGROW = int(lib.SHMS_EGROW)              # the hot store needs a new extent: take the general path
ENOSPLIT = int(lib.SHMS_ENOSPLIT)        # the value is not stored split: read it whole
#: The lock was busy for the whole slice: wait on (or give up at the deadline).
BUSY = frozenset((errno.ETIMEDOUT, errno.EBUSY))

DETACHED = ("this shared object is detached from this process (detach() was called, or "
            "its Manager was shut down); open it again to use it")

_KEYS_TAKEN = ("growing the heap failed: every key this heap may give a new segment is "
               "taken by another segment (see 'ipcs -m'; on a kernel booted with "
               "ipcmni_extend, heaps whose shmids agree in the low 15 bits share keys)")

# code -> (exception class, what went wrong and what to do, the errno it keeps).
# "{lock}" names the lock the call was about ("the heap lock", "the lock").
_TABLE: dict[int, tuple[type[Exception], str, int | None]] = {
    ECORRUPT: (CorruptSegmentError, "the heap is marked corrupt (run check() for the reason); "
               "remove the object and create it again", ECORRUPT),
    int(lib.SHMS_EBADHEAP): (CorruptSegmentError, "not a shmshare heap of this version/ABI "
                             "(bad magic, layout version or pthread_mutex_t size)",
                             int(lib.SHMS_EBADHEAP)),
    int(lib.SHMS_ETOOMANY): (ShmLimitError, f"the heap already spans {lib.SHMS_MAX_EXT} "
                             f"segments, its maximum", errno.ENOSPC),
    int(lib.SHMS_EWRONGKIND): (WrongTypeError, "the heap holds another kind of structure",
                               int(lib.SHMS_EWRONGKIND)),
    int(lib.SHMS_EEXTGONE): (SegmentRemovedError, "one of the heap's extent segments was "
                             "removed or replaced", errno.EIDRM),
    int(lib.SHMS_ENOKEY): (ShmLimitError, _KEYS_TAKEN, errno.ENOSPC),
    ECLOSED: (ValueError, DETACHED, None),
    errno.ETIMEDOUT: (LockTimeoutError, "{lock} was not acquired in time", errno.ETIMEDOUT),
    errno.EBUSY: (LockTimeoutError, "{lock} was not acquired in time", errno.EBUSY),
    errno.EDEADLK: (RuntimeError, "this thread already holds {lock} (pass held=True where "
                    "the call takes it)", None),
    errno.ENOTRECOVERABLE: (CorruptSegmentError, "{lock} is unrecoverable: a previous holder "
                            "died and the state it protected was never repaired; remove the "
                            "object and create it again", errno.ENOTRECOVERABLE),
}
_GROWTH = (errno.ENOSPC, errno.ENOMEM, errno.EINVAL)


def failure(rc: int, what: str, *, lock: str = "the heap lock",
            asked: int | None = None) -> Exception:
    """The exception for result code ``rc`` of a C call made while doing ``what``.

    ``asked`` is given by heap operations, the only ones that create segments
    (extents): the bytes the last extent's shmget asked for, so that
    ENOSPC/ENOMEM/EINVAL name the limit that refused it.
    """
    entry = _TABLE.get(rc)
    if entry is not None:
        cls, text, err = entry
        message = f"{what}: {text.format(lock=lock)}"
        if issubclass(cls, _OSErrorMixin):  # OSError(errno, message) semantics
            return cls(err, message)
        if issubclass(cls, ShmshareError):  # (message, errno), LockTimeoutError too
            return cls(message, err)
        return cls(message)
    if asked is not None and rc in _GROWTH:
        return _growth_failure(rc, what, asked)
    return from_errno(rc, what)


def _growth_failure(rc: int, what: str, asked: int) -> Exception:
    from . import IPC_CREAT, IPC_EXCL, explain_shmget_error  # this package imports us

    if rc == errno.EINVAL:
        hint: str | None = ("the allocation does not fit in one segment of kernel.shmmax "
                            "bytes; raise it with 'sysctl -w kernel.shmmax=...'")
    else:
        hint = explain_shmget_error(rc, 1, asked, IPC_CREAT | IPC_EXCL)
    return ShmLimitError(f"{what}: growing the heap by a segment of {asked} bytes failed: "
                         f"{errno.errorcode[rc]}" + (f" ({hint})" if hint else ""), rc)
