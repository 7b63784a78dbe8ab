"""Project directories: where key files live, and who may plant them there.

The default is ``$SHMSHARE_DIR``, else ``$XDG_RUNTIME_DIR/shmshare``, else
``/dev/shm/shmshare-<uid>`` (``/tmp/shmshare-<uid>`` without ``/dev/shm``).
Every directory shmshare creates is 0700 whatever the umask, and an existing
one is used only if it is a real directory of this user that nobody else can
write: whoever can write to it can plant key files, and so choose which
segment a name maps to.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .._env import getenv
from ..errors import ShmPermissionError

__all__ = [
    "FALLBACK_ROOTS",
    "checkable_project_dir",
    "default_project_dir",
    "make_private_dir",
    "resolve_project_dir",
]

# The fallback project directory's parent, the first that exists: a per-boot tmpfs
# (key files name segments that die at boot: no journal per create, no tmp cleaner).
FALLBACK_ROOTS = ("/dev/shm", "/tmp")


def default_project_dir() -> Path:
    """``$SHMSHARE_DIR``, else ``$XDG_RUNTIME_DIR/shmshare``, else ``/dev/shm/shmshare-<uid>``."""
    return Path(_default_project_dir())


def _default_project_dir() -> str:
    env = getenv("SHMSHARE_DIR")
    if env:
        return env
    runtime = getenv("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "shmshare")
    euid = os.geteuid()
    return _FALLBACK.get(euid) or _fallback(euid)


def _fallback(euid: int) -> str:
    root = next((r for r in FALLBACK_ROOTS if os.path.isdir(r)), FALLBACK_ROOTS[-1])
    path = _FALLBACK[euid] = os.path.join(root, f"shmshare-{euid}")
    return path


# The fallback project directory per effective uid: its root (the first of
# FALLBACK_ROOTS that exists) is chosen once per process, at import, not at the
# first open (a mount point such as /dev/shm does not come and go).
_FALLBACK: dict[int, str] = {}
_fallback(os.geteuid())


def checkable_project_dir(project_dir: str | os.PathLike[str] | None) -> str | None:
    """The project directory as a string the C fast path can check as it is
    (_core.named_open checks what :func:`_check_private_dir` checks): absolute and
    normalized, as :func:`make_private_dir` would make it.  None: another form,
    which :func:`resolve_project_dir` resolves."""
    raw = os.fspath(project_dir) if project_dir is not None else _default_project_dir()
    if not isinstance(raw, str) or raw[:1] != "/" or os.path.normpath(raw) != raw:
        return None
    return raw


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and any missing parents) 0700 whatever the umask; check it.

    Every directory shmshare creates goes through here.  A directory that
    already exists is accepted only if it is a real directory (not a
    symlink), owned by this user, and not writable by group or others:
    whoever can write to it can plant key files, and so choose which
    segment a name maps to.  Raises ShmPermissionError otherwise.
    """
    path = Path(os.path.abspath(path))
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # a racing creator: checked below like any existing directory
        # mkdir applies the umask (which may even remove our own bits): set 0700 exactly.
        os.chmod(directory, 0o700, follow_symlinks=False)
    _check_private_dir(path)
    return path


def _check_private_dir(path: Path) -> None:
    st = os.lstat(path)
    problem = None
    err = errno.EPERM
    if stat.S_ISLNK(st.st_mode):
        err, problem = errno.ELOOP, "is a symlink (pass the real directory as project_dir)"
    elif not stat.S_ISDIR(st.st_mode):
        err, problem = errno.ENOTDIR, "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = (f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); choose "
                   "another project_dir or set $SHMSHARE_DIR")
    elif st.st_mode & 0o022:
        problem = (f"has mode {stat.S_IMODE(st.st_mode):o}: other users can create key files "
                   f"in it; run 'chmod go-w {path}' or choose another project_dir")
    if problem:
        raise ShmPermissionError(
            err, f"project directory {str(path)!r} {problem}; refusing to use it", str(path))


def resolve_project_dir(project_dir: str | os.PathLike[str] | None = None) -> Path:
    """The absolute project directory, created 0700 if missing and checked.

    Refused (ShmPermissionError) if it is a symlink, owned by another user or
    writable by group/others: whoever controls the directory controls which
    segment a name maps to (see :func:`make_private_dir`).
    """
    raw = os.fspath(project_dir) if project_dir is not None else _default_project_dir()
    hit = _CHECKED.get(raw)
    if hit is not None:
        # Checked before: it passes again if it is still that very directory,
        # unchanged (one lstat instead of the walk and the checks).
        try:
            st = os.lstat(hit[0])
            if (st.st_dev, st.st_ino, st.st_mode, st.st_uid, os.geteuid()) == hit[1]:
                return hit[0]
        except OSError:
            pass
    path = make_private_dir(Path(raw))
    if os.path.isabs(raw):  # a relative one depends on the working directory
        st = os.lstat(path)
        _CHECKED[raw] = (path, (st.st_dev, st.st_ino, st.st_mode, st.st_uid, os.geteuid()))
    return path


# Project directories that passed make_private_dir, with what identified them then.
_CHECKED: dict[str, tuple[Path, tuple[int, int, int, int, int]]] = {}
