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
from .manager import Manager
from .segment import Segment
from .shared_array import SharedArray
from .shared_dict import SharedDict
from .shared_list import SharedList
from .shared_queue import SharedQueue
from .small_objects import SharedNamespace, SharedSet, SharedValue

__all__ = [
    "CorruptSegmentError",
    "LockTimeoutError",
    "Manager",
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
