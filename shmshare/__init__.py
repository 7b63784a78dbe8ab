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
    ShmTypeError,
    ShmValueError,
    WrongTypeError,
)
from .manager import Manager, SharedDictProxy
from .objects.array import SharedArray
from .objects.dict import SharedDict
from .objects.list import SharedList
from .objects.lock import ObjectLock, OwnerDiedWarning
from .objects.namespace import SharedNamespace
from .objects.queue import SharedQueue
from .objects.set import SharedSet
from .objects.shared_object import (
    SharedObject,
    check,
    detach,
    kind_class,
    lock_of,
    name_of,
    segment_of,
    stats,
    unlink,
)
from .objects.sync import (
    SharedBoundedSemaphore,
    SharedEvent,
    SharedLock,
    SharedRLock,
    SharedSemaphore,
)
from .objects.typed_array import SharedTypedArray
from .objects.value import SharedValue
from .objects.waits import SharedBarrier, SharedCondition
from .segment import Segment

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
    "SharedBarrier",
    "SharedBoundedSemaphore",
    "SharedCondition",
    "SharedDict",
    "SharedDictProxy",
    "SharedEvent",
    "SharedList",
    "SharedLock",
    "SharedNamespace",
    "SharedObject",
    "SharedQueue",
    "SharedRLock",
    "SharedSemaphore",
    "SharedSet",
    "SharedTypedArray",
    "SharedValue",
    "ShmLimitError",
    "ShmOSError",
    "ShmPermissionError",
    "ShmTypeError",
    "ShmValueError",
    "ShmshareError",
    "WrongTypeError",
    "__version__",
    "check",
    "detach",
    "kind_class",
    "lock_of",
    "name_of",
    "segment_of",
    "stats",
    "unlink",
]
