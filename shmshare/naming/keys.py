"""Project directories and key files: stable ``ftok`` keys for named objects.

A named object ``NAME`` in project directory ``DIR`` owns the key file
``DIR/NAME.key``.  Its System V key is ``ftok(DIR/NAME.key, proj_id)``, where
``proj_id`` (1..255) is recorded in the key file: ``ftok`` keeps only 16 bits
of the inode, so two key files can map to one key, and a creator that finds
the key taken by another segment moves on to the next ``proj_id``.

The key file is also the lock that makes "attach" and "check nattch, then
remove" atomic with respect to each other: both happen under ``flock`` on it.
A key file is only unlinked *after* its segment is removed, under that lock,
so it is never deleted and recreated while its segment lives (a new inode
would give a new key, and the segment would be lost).
"""

from __future__ import annotations

import errno
import fcntl
import json  # every open reads a key file: not worth a lazy import
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import LockTimeoutError, ShmPermissionError, ShmValueError

__all__ = [
    "KEY_SUFFIX",
    "KeyFile",
    "KeyRecord",
    "default_project_dir",
    "key_file_path",
    "list_names",
    "resolve_project_dir",
    "validate_name",
]

KEY_SUFFIX = ".key"
MAX_NAME_BYTES = 200
LOCK_TIMEOUT = 30.0  # seconds; key-file locks are only held for a few syscalls


def validate_name(name: object) -> str:
    """Return ``name`` if it can name an object, else raise ShmValueError.

    A name becomes a file name: no path separators, no NUL, not empty, not
    starting with a dot (hides ``.``/``..`` and dot files), at most 200 UTF-8
    bytes.
    """
    if not isinstance(name, str):
        raise ShmValueError(f"an object name must be a str, not {type(name).__name__}")
    problem = None
    if not name:
        problem = "it is empty"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif "\0" in name:
        problem = "it contains a NUL character"
    elif name.startswith("."):
        problem = "it starts with '.'"
    elif not name.isprintable():
        problem = "it contains unprintable characters"
    else:
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            problem = "it is not valid UTF-8"
        else:
            if size > MAX_NAME_BYTES:
                problem = f"it is {size} bytes long (at most {MAX_NAME_BYTES})"
    if problem:
        raise ShmValueError(
            f"invalid object name {name!r}: {problem}; use letters, digits, '-', '_' or '.'")
    return name


def default_project_dir() -> Path:
    """``$SHMSHARE_DIR``, else ``$XDG_RUNTIME_DIR/shmshare``, else ``/tmp/shmshare-<uid>``."""
    env = os.environ.get("SHMSHARE_DIR")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "shmshare"
    return Path(f"/tmp/shmshare-{os.geteuid()}")


def resolve_project_dir(project_dir: str | os.PathLike[str] | None = None) -> Path:
    """The absolute project directory, created 0700 if missing and checked.

    Refused (ShmPermissionError) if it is a symlink or owned by another user:
    whoever controls the directory controls which segment a name maps to.
    """
    path = Path(project_dir) if project_dir is not None else default_project_dir()
    path = Path(os.path.abspath(path))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(path.parent, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ShmPermissionError(
            errno.ELOOP, f"project directory {str(path)!r} is a symlink; refusing to use it "
            "(pass the real directory as project_dir)", str(path))
    if not stat.S_ISDIR(st.st_mode):
        raise ShmPermissionError(
            errno.ENOTDIR, f"project directory {str(path)!r} is not a directory", str(path))
    if st.st_uid != os.geteuid():
        raise ShmPermissionError(
            errno.EPERM, f"project directory {str(path)!r} is owned by uid {st.st_uid}, not "
            f"by you (uid {os.geteuid()}); refusing to use it — choose another project_dir "
            "or set $SHMSHARE_DIR", str(path))
    return path


def key_file_path(project_dir: Path, name: str) -> Path:
    return project_dir / (validate_name(name) + KEY_SUFFIX)


def list_names(project_dir: Path) -> list[str]:
    """Names of the key files in ``project_dir``, sorted."""
    try:
        entries = os.listdir(project_dir)
    except FileNotFoundError:
        return []
    return sorted(e[: -len(KEY_SUFFIX)] for e in entries
                  if e.endswith(KEY_SUFFIX) and not e.startswith("."))


RECORD_SIZE = 128  # bytes of a key file: one JSON record padded with spaces


class KeyRecord(NamedTuple):
    """What a key file says about its segment."""

    proj_id: int
    kind: str
    persist: bool

    def dumps(self) -> bytes:
        return json.dumps({"v": 1, "proj_id": self.proj_id, "kind": self.kind,
                           "persist": self.persist}).encode() + b"\n"

    @classmethod
    def loads(cls, data: bytes) -> KeyRecord | None:
        """The record, or None if the file is empty or not a record we wrote."""
        try:
            obj: Any = json.loads(data)
            rec = cls(int(obj["proj_id"]), str(obj["kind"]), bool(obj["persist"]))
        except (ValueError, KeyError, TypeError):
            return None
        return rec if 1 <= rec.proj_id <= 255 else None


class KeyFile:
    """An open, ``flock``-ed key file; use through :meth:`locked`."""

    def __init__(self, path: Path, fd: int, st: os.stat_result) -> None:
        self.path = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.size = st.st_size

    @classmethod
    @contextmanager
    def locked(cls, path: Path, *, create: bool, mode: int = 0o600,
               blocking: bool = True, timeout: float = LOCK_TIMEOUT) -> Iterator[KeyFile | None]:
        """Yield the key file at ``path`` locked exclusively.

        Yields None if it does not exist (and ``create`` is false) or if
        ``blocking`` is false and another process holds the lock.  Retries
        when the file was unlinked or replaced between open and lock, so the
        lock held is always on the file the path names now.
        """
        deadline = time.monotonic() + timeout
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        while True:
            try:
                fd = os.open(path, flags, mode & 0o666)
            except FileNotFoundError:
                yield None
                return
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ShmPermissionError(
                        errno.ELOOP, f"key file {str(path)!r} is a symlink; refusing it",
                        str(path)) from None
                raise
            try:
                if not _flock(fd, blocking, deadline, path):
                    os.close(fd)
                    yield None
                    return
                st = os.fstat(fd)
                try:
                    now = os.lstat(path)
                except FileNotFoundError:
                    now = None
                if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    os.close(fd)  # unlinked or replaced while we waited: start over
                    continue
            except BaseException:
                os.close(fd)
                raise
            try:
                yield cls(path, fd, st)
            finally:
                os.close(fd)  # closing the last fd releases the flock
            return

    def read(self) -> KeyRecord | None:
        data = os.pread(self.fd, 4096, 0)
        return KeyRecord.loads(data) if data else None

    def write(self, record: KeyRecord) -> None:
        """Write ``record`` in place, padded to RECORD_SIZE bytes.

        Never truncated to 0 first: ext4 flushes a file truncated to 0 when it
        is closed (auto_da_alloc), about a millisecond per named create.  A
        fixed size covers any record written before, so nothing of an older
        one is left after it; a write cut short by a kill leaves a record that
        does not parse, i.e. a stale key file (opening re-creates, gc removes).
        """
        data = record.dumps()
        os.pwrite(self.fd, data[:-1].ljust(RECORD_SIZE - 1) + b"\n", 0)
        if self.size > RECORD_SIZE:  # written by something else: drop the rest
            os.ftruncate(self.fd, RECORD_SIZE)
        self.size = RECORD_SIZE

    def unlink(self) -> None:
        """Remove the key file; only once its segment is gone (we hold the lock)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _flock(fd: int, blocking: bool, deadline: float, path: Path) -> bool:
    """Take LOCK_EX on ``fd``, polling so a stopped holder cannot hang us forever."""
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not blocking:
                return False
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"key file {str(path)!r} stayed locked by another process; if that process "
                "is stopped or hung, resume or kill it", errno.ETIMEDOUT)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
