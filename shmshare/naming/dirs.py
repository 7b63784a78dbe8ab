"""Project directories owned by one process: a pytest run, a Manager.

Such a directory holds persistent objects that live until their owner says
so (end of the run, ``Manager.shutdown()``), whichever process created them.
The owner's pid is recorded inside; a directory whose owner died without
cleaning up is removed by :func:`sweep_dead_owners`, which the next owner of
the same kind runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .._log import logger
from .inventory import remove
from .keys import list_names, resolve_project_dir
from .lifecycle import pid_alive

__all__ = ["OWNED_SUBDIRS", "OWNER_FILE", "claim", "dead_owner_dirs", "remove_all",
           "sweep_dead_owners"]

OWNER_FILE = "owner.pid"
OWNED_SUBDIRS = ("managers", "pytest-runs")  # where owned directories live in a project dir


def claim(path: Path, owner_pid: int) -> Path:
    """Create ``path`` (and its parent) as a project directory owned by ``owner_pid``."""
    resolve_project_dir(path.parent)
    resolve_project_dir(path)
    (path / OWNER_FILE).write_text(str(owner_pid))
    return path


def remove_all(path: Path) -> None:
    """Remove every object in ``path``, then the directory itself."""
    for name in list_names(path):
        try:
            remove(path, name)
        except (OSError, RuntimeError):
            pass  # already gone, or removed by a racing cleaner
    shutil.rmtree(path, ignore_errors=True)


def dead_owner_dirs(base: Path) -> list[Path]:
    """The owned directories under ``base`` whose owner process is gone."""
    if not base.is_dir():
        return []
    dead = []
    for path in sorted(base.iterdir()):
        try:
            pid = int((path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(pid):
            dead.append(path)
    return dead


def sweep_dead_owners(base: Path) -> list[Path]:
    """Remove the owned directories under ``base`` whose owner is gone."""
    dead = dead_owner_dirs(base)
    for path in dead:
        remove_all(path)
        logger.info("removed %s and its objects: its owner process is gone", path)
    return dead
