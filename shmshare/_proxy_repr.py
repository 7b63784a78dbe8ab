"""How a Manager's synchronisation objects look like multiprocessing's proxies.

``repr()`` of what ``multiprocessing.Manager().Lock()`` hands out is
``<AcquirerProxy object, typeid 'Lock' at 0x...>``; code (and CPython's manager
tests) may read it, so both of shmshare's Managers -- on shared memory
(manager.py) and on a store (stores/redis/typeids.py) -- hand out subclasses
of their objects with that repr, made here: :func:`proxy_classes`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PROXY_NAMES", "proxy_classes"]

# typeid -> the name of multiprocessing's proxy class for it.
PROXY_NAMES = {
    "Lock": "AcquirerProxy", "RLock": "AcquirerProxy", "Semaphore": "AcquirerProxy",
    "BoundedSemaphore": "AcquirerProxy", "Event": "EventProxy",
    "Condition": "ConditionProxy", "Barrier": "BarrierProxy",
}


def _proxy_repr(self: Any) -> str:
    proxy, typeid = self._PROXY
    return f"<{proxy} object, typeid {typeid!r} at {id(self):#x}>"


def proxy_classes(bases: dict[str, type], module: str, prefix: str,
                  str_: Callable[[Any, type], str]) -> dict[str, Any]:
    """For each ``typeid: base`` a subclass of ``base`` with the proxy's repr and
    ``str_(obj, base)`` as its ``str()``, named ``{prefix}{typeid}Proxy`` in ``module``
    (where the caller binds it under that name: pickling finds classes by name)."""
    made: dict[str, Any] = {}
    for typeid, base in bases.items():
        name = f"{prefix}{typeid}Proxy"

        def __str__(self: Any, base: type = base) -> str:
            return str_(self, base)

        made[typeid] = type(name, (base,), {
            "__module__": module, "__qualname__": name, "__repr__": _proxy_repr,
            "__str__": __str__, "_PROXY": (PROXY_NAMES[typeid], typeid),
            "__doc__": f"{base.__name__}, with the repr of multiprocessing's "
                       f"{PROXY_NAMES[typeid]} (typeid {typeid!r})."})
    return made
