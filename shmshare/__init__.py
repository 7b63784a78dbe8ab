"""shmshare: share Python objects between processes through System V shared memory.

The public names are imported on first use (PEP 562), so that ``import
shmshare`` -- and pytest, which loads the plugin of an installed shmshare in
every project -- pays only for what is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
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
    "ObjectGoneError",
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

_WHERE = {
    "CorruptSegmentError": ".errors",
    "LockTimeoutError": ".errors",
    "ObjectGoneError": ".errors",
    "Manager": ".manager",
    "ObjectLock": ".objects.lock",
    "OwnerDiedWarning": ".objects.lock",
    "Segment": ".segment",
    "SegmentExistsError": ".errors",
    "SegmentNotFoundError": ".errors",
    "SegmentRemovedError": ".errors",
    "SharedArray": ".objects.array",
    "SharedBarrier": ".objects.waits",
    "SharedBoundedSemaphore": ".objects.sync",
    "SharedCondition": ".objects.waits",
    "SharedDict": ".objects.dict",
    "SharedDictProxy": ".manager",
    "SharedEvent": ".objects.sync",
    "SharedList": ".objects.list",
    "SharedLock": ".objects.sync",
    "SharedNamespace": ".objects.namespace",
    "SharedObject": ".objects.shared_object",
    "SharedQueue": ".objects.queue",
    "SharedRLock": ".objects.sync",
    "SharedSemaphore": ".objects.sync",
    "SharedSet": ".objects.set",
    "SharedTypedArray": ".objects.typed_array",
    "SharedValue": ".objects.value",
    "ShmLimitError": ".errors",
    "ShmOSError": ".errors",
    "ShmPermissionError": ".errors",
    "ShmTypeError": ".errors",
    "ShmValueError": ".errors",
    "ShmshareError": ".errors",
    "WrongTypeError": ".errors",
    "check": ".objects.shared_object",
    "detach": ".objects.shared_object",
    "kind_class": ".objects.shared_object",
    "lock_of": ".objects.shared_object",
    "name_of": ".objects.shared_object",
    "segment_of": ".objects.shared_object",
    "stats": ".objects.shared_object",
    "unlink": ".objects.shared_object",
}


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        if name.startswith("__"):
            raise AttributeError(f"module 'shmshare' has no attribute {name!r}") from None
        try:  # a subpackage or module not imported yet (shmshare.objects, ...)
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'shmshare' has no attribute {name!r}") from None
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups do not come here again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
