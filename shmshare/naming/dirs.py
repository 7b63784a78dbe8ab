"""Project directories owned by one process: a pytest run, a Manager.

Such a directory holds persistent objects that live until their owner says
so (end of the run, ``Manager.shutdown()``), whichever process created them.
The owner's liveness token (``_core.proc``: the kernel says when its process
dies, whatever its PID namespace, and a reused pid cannot fake it) and its pid
(for people) are recorded inside; a directory whose owner died without
cleaning up is removed by :func:`sweep_dead_owners`, which the next owner of
the same kind runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .._core import proc
from .._log import logger
from ..errors import SegmentNotFoundError
from .inventory import remove
from .keys import IPC_NAMESPACE, list_names
from .project_dir import make_private_dir

__all__ = ["OWNED_SUBDIRS", "OWNER_FILE", "claim", "dead_owner_dirs", "owner_of", "remove_all",
           "sweep_dead_owners"]

OWNER_FILE = "owner.pid"
OWNED_SUBDIRS = ("managers", "pytest-runs")  # where owned directories live in a project dir


def claim(path: Path, owner_pid: int, owner_token: int) -> Path:
    """Create ``path`` (``<project dir>/<one of OWNED_SUBDIRS>/<name>``) as a project
    directory owned by the process ``owner_pid`` whose liveness token
    (``_core.proc.token()``) is ``owner_token``; each of the three is made or
    checked private."""
    for directory in (path.parent.parent, path.parent, path):
        make_private_dir(directory)
    # Written aside and renamed into place: a claimer killed halfway must not
    # leave an empty owner file, which reads as "owner unknown" for good (and
    # so a directory no sweep ever removes).  Workers of one run claim at once:
    # each writes its own temporary file.
    tmp = path / f".{OWNER_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        # The token means something only in this IPC namespace (the process
        # table is a segment): the namespace goes with it, see owner_of.
        os.write(fd, f"{owner_pid} {owner_token} {IPC_NAMESPACE}".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path / OWNER_FILE)
    return path


def remove_all(path: Path) -> list[str]:
    """Remove every object in ``path``, then the directory itself.

    An object that cannot be removed (another user's, its key file locked
    past the timeout...) keeps its key file, and so the directory stays:
    deleting the key file of a segment that still exists would leave the
    segment where no ``gc`` can find it by name.  Returns what was kept.
    """
    kept = []
    for name in list_names(path):
        try:
            remove(path, name)
        except SegmentNotFoundError:
            pass  # removed meanwhile by a racing cleaner
        except (OSError, RuntimeError) as exc:
            kept.append(f"{name}: {exc}")
            logger.warning("kept %s in %s: %s", name, path, exc)
    if not kept:
        shutil.rmtree(path, ignore_errors=True)
    return kept


def owner_of(path: Path) -> tuple[int, bool | None]:
    """The owner pid of an owned directory and whether it lives (``_core.proc``).

    None when that cannot be known here: the owner file carries no token
    (being claimed, or older), or the owner lives in another IPC namespace.
    A token is a slot of a process table, a segment of the owner's
    namespace; read from another one it names nothing and would look dead,
    and a run of pytest or a Manager there that shares this directory (the
    default /dev/shm/shmshare-<uid> is per mount namespace, not IPC namespace) would sweep a
    live owner's objects.
    """
    try:
        fields = (path / OWNER_FILE).read_text().split()
        pid, token = int(fields[0]), int(fields[1])
        ipcns = int(fields[2]) if len(fields) > 2 else IPC_NAMESPACE
    except (OSError, ValueError, IndexError):
        return 0, None
    if ipcns != IPC_NAMESPACE:
        return pid, None
    return pid, proc.alive(token)


def dead_owner_dirs(base: Path) -> list[Path]:
    """The owned directories under ``base`` whose owner process is gone."""
    if not base.is_dir():
        return []
    dead = []
    for path in sorted(base.iterdir()):
        if owner_of(path)[1] is False:  # no token: never taken for dead
            dead.append(path)
    return dead


def sweep_dead_owners(base: Path) -> list[Path]:
    """Remove the owned directories under ``base`` whose owner is gone."""
    dead = dead_owner_dirs(base)
    for path in dead:
        if not remove_all(path):
            logger.info("removed %s and its objects: its owner process is gone", path)
    return dead
