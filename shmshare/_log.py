"""The ``shmshare`` logger: silent unless the application configures logging.

Levels, so a user can filter: WARNING for a process that died holding a lock
or permits (the next user recovered them); INFO for what a sweep or ``gc``
removed (orphans, stale key files, heap extents, dead owners' directories);
DEBUG for sweeps that found nothing; INFO for each heap growth, which the C
core reports through a hook set here (``_core`` never imports this module).
Every module logs through this one logger, so
``logging.getLogger("shmshare").setLevel(...)`` configures them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core.heap_base import set_growth_hook

__all__ = ["logger"]

_made: Any = None


def _logger() -> Any:
    # No lock: a lock held by another thread at a fork would hang the child's first
    # record.  Two threads racing here both get the one logger (getLogger's
    # own lock) and may give it two NullHandlers, which changes nothing.
    global _made
    if _made is None:
        import logging

        made = logging.getLogger("shmshare")
        made.addHandler(logging.NullHandler())  # a library never prints unless asked
        _made = made
    return _made


class _FirstUse:
    """``logging.getLogger("shmshare")``, made (and given its NullHandler) when first
    used: ``import logging`` costs a process more than a tenth of what a dict's
    first import does, and most processes never log."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(_logger(), name)


if TYPE_CHECKING:
    from logging import Logger

    logger: Logger
else:
    logger = _FirstUse()


def _log_growth(shmid: int, before: int, after: int, most: int) -> None:
    logger.info("heap of segment shmid %d grew from %d to %d extent(s) (at most %d)",
                shmid, before, after, most)


set_growth_hook(_log_growth)
