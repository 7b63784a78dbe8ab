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
from .locks import ObjectLock, OwnerDiedWarning
from .segment import Segment
from .shared_dict import SharedDict

__all__ = [
    "CorruptSegmentError",
    "LockTimeoutError",
    "ObjectLock",
    "OwnerDiedWarning",
    "Segment",
    "SegmentExistsError",
    "SegmentNotFoundError",
    "SegmentRemovedError",
    "SharedDict",
    "ShmLimitError",
    "ShmOSError",
    "ShmPermissionError",
    "ShmValueError",
    "ShmshareError",
    "WrongTypeError",
    "__version__",
]
