"""shmshare: share Python objects between processes through System V shared memory."""

from ._version import __version__
from .errors import (
    CorruptSegmentError,
    LockTimeoutError,
    ObjectGoneError,
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
from .manager import Manager
from .objects.array import SharedArray
from .objects.dict import SharedDict
from .objects.list import SharedList
from .objects.lock import ObjectLock, OwnerDiedWarning
from .objects.queue import SharedQueue
from .objects.small import SharedNamespace, SharedSet, SharedValue
from .segment import Segment

__all__ = [
    "CorruptSegmentError",
    "LockTimeoutError",
    "Manager",
    "ObjectGoneError",
    "ObjectLock",
    "OwnerDiedWarning",
    "Segment",
    "SegmentExistsError",
    "SegmentNotFoundError",
    "SegmentRemovedError",
    "SharedArray",
    "SharedDict",
    "SharedList",
    "SharedNamespace",
    "SharedQueue",
    "SharedSet",
    "SharedValue",
    "ShmLimitError",
    "ShmOSError",
    "ShmPermissionError",
    "ShmValueError",
    "ShmshareError",
    "WrongTypeError",
    "__version__",
]
