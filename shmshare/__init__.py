"""shmshare: share Python objects between processes through System V shared memory."""

from ._version import __version__
from .errors import (
    CorruptSegmentError,
    LockTimeoutError,
    SegmentExistsError,
    SegmentNotFoundError,
    SegmentRemovedError,
    ShmLimitError,
    ShmOSError,
    ShmPermissionError,
    ShmshareError,
    ShmValueError,
    WrongTypeError,
)
from .segment import Segment

__all__ = [
    "CorruptSegmentError",
    "LockTimeoutError",
    "Segment",
    "SegmentExistsError",
    "SegmentNotFoundError",
    "SegmentRemovedError",
    "ShmLimitError",
    "ShmOSError",
    "ShmPermissionError",
    "ShmValueError",
    "ShmshareError",
    "WrongTypeError",
    "__version__",
]
