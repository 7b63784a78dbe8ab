"""The ``shmshare`` logger: silent unless the application configures logging.

Levels, so a user can filter: WARNING for a process that died holding a lock
or permits (the next user recovered them); INFO for what a sweep or ``gc``
removed (orphans, stale key files, heap extents, dead owners' directories);
DEBUG for sweeps that found nothing.  Every module logs through this one
logger, so ``logging.getLogger("shmshare").setLevel(...)`` configures them all.
"""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("shmshare")
logger.addHandler(logging.NullHandler())  # a library never prints unless asked
