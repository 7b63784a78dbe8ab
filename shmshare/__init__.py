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

_ERRORS = ("CorruptSegmentError", "LockTimeoutError", "SegmentExistsError",
           "SegmentNotFoundError", "SegmentRemovedError", "ShmLimitError", "ShmOSError",
           "ShmPermissionError", "ShmshareError", "ShmValueError", "WrongTypeError")
_WHERE = {
    **dict.fromkeys(_ERRORS, ".errors"),
    "Manager": ".manager",
    "ObjectLock": ".objects.lock",
    "OwnerDiedWarning": ".objects.lock",
    "Segment": ".segment",
    "SharedArray": ".objects.array",
    "SharedDict": ".objects.dict",
    "SharedList": ".objects.list",
    "SharedNamespace": ".objects.small",
    "SharedQueue": ".objects.queue",
    "SharedSet": ".objects.small",
    "SharedValue": ".objects.small",
}


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'shmshare' has no attribute {name!r}") from None
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups do not come here again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
