"""Key files: stable ``ftok`` keys for named objects (their directories: project_dir.py).

A named object ``NAME`` in project directory ``DIR`` owns the key file
``DIR/NAME.key``.  Its System V key is ``ftok(DIR/NAME.key, proj_id)``, where
``proj_id`` (1..255) is recorded in the key file: ``ftok`` keeps only 16 bits
of the inode, so two key files can map to one key, and a creator that finds
the key taken by another segment moves on to the next ``proj_id``.

The key file is also the lock that makes "attach" and "detach, check nattch,
then remove" atomic with respect to each other: both happen under ``flock`` on it.
A key file is only unlinked *after* its segment is removed, under that lock,
so it is never deleted and recreated while its segment lives (a new inode
would give a new key, and the segment would be lost).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import LockTimeoutError, ShmPermissionError, ShmValueError

if TYPE_CHECKING:
    from .._core.slices import Deadline

__all__ = [
    "IPC_NAMESPACE",
    "KEY_SUFFIX",
    "KeyFile",
    "KeyRecord",
    "key_file_path",
    "list_names",
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


def _own_ipc_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/ipc").st_ino
    except OSError:
        return 0  # unknown: records then carry no namespace, as before


#: This process's IPC namespace (inode of /proc/self/ns/ipc; 0 if unknown).
#: System V keys mean something only inside one IPC namespace.
IPC_NAMESPACE = _own_ipc_namespace()


RECORD_SIZE = 256  # bytes of a key file: one JSON record padded with spaces


class KeyRecord(NamedTuple):
    """What a key file says about its segment.

    ``ipcns`` is the IPC namespace the segment lives in (0: unknown, or a
    record older than this field).  Two containers sharing a project
    directory through a volume see each other's key files but not each
    other's segments: a key file of another namespace is never "stale" here.
    """

    proj_id: int
    kind: str
    persist: bool
    ipcns: int = IPC_NAMESPACE
    creator: int = 0  # the creator's liveness token (_core.proc); 0: unknown

    def dumps(self) -> bytes:
        data = _plain_dumps(self)
        if data is not None:
            return data
        import json  # here, not at the top: it costs a process 2 ms to load, and
        # the records shmshare writes (a plain kind) need it neither way (_plain_dumps)

        return json.dumps({"v": 1, "proj_id": self.proj_id, "kind": self.kind,
                           "persist": self.persist, "ipcns": self.ipcns,
                           "creator": self.creator}).encode() + b"\n"

    @classmethod
    def loads(cls, data: bytes) -> KeyRecord | None:
        """The record, or None if the file is empty or not a record we wrote."""
        rec = _PARSED.get(data)
        if rec is None:
            rec = cls._parse(data)
            if rec is not None:
                if len(_PARSED) >= 256:
                    _PARSED.clear()
                _PARSED[data] = rec
        return rec

    @classmethod
    def _parse(cls, data: bytes) -> KeyRecord | None:
        rec = _plain_record(data) or cls._parse_json(data)
        return rec if rec is not None and 1 <= rec.proj_id <= 255 else None

    @classmethod
    def _parse_json(cls, data: bytes) -> KeyRecord | None:
        import json  # only for a record _plain_record does not read (see _plain_dumps)

        try:
            obj: Any = json.loads(data)
            return cls(int(obj["proj_id"]), str(obj["kind"]), bool(obj["persist"]),
                       int(obj.get("ipcns", 0)), int(obj.get("creator", 0)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def other_namespace(self) -> bool:
        """True if the record names a segment of another IPC namespace than ours."""
        return bool(self.ipcns and IPC_NAMESPACE and self.ipcns != IPC_NAMESPACE)


# Records parsed lately (immutable: the same bytes always say the same): an open
# and the detach that follows read the same record.
_PARSED: dict[bytes, KeyRecord] = {}

# A record as json.dumps writes it, for a kind json writes as it is: ASCII, printable,
# no quote or backslash (every kind shmshare defines).  Both ways, this is exactly
# what json would write and read (tests/test_key_record.py); anything else is json's.
_HEAD, _SEP = b'{"v": 1, "proj_id": ', b", "
_FIELDS = (b'"kind": "', b'"persist": ', b'"ipcns": ', b'"creator": ')


def _plain_kind(kind: str) -> bool:
    return kind.isascii() and kind.isprintable() and '"' not in kind and "\\" not in kind


def _plain_dumps(rec: KeyRecord) -> bytes | None:
    if not _plain_kind(rec.kind):
        return None
    return (f'{{"v": 1, "proj_id": {rec.proj_id:d}, "kind": "{rec.kind}", "persist": '
            f'{"true" if rec.persist else "false"}, "ipcns": {rec.ipcns:d}, '
            f'"creator": {rec.creator:d}}}\n').encode()


def _number(field: bytes) -> int | None:
    digits = field[1:] if field[:1] == b"-" else field
    if not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
        return None  # not the way json writes an int: json decides
    return int(field)


def _plain_record(data: bytes) -> KeyRecord | None:
    """The record ``data`` holds if it is one :func:`_plain_dumps` could have written
    (then padded with spaces, as KeyFile.write does); else None, and json decides."""
    body = data.rstrip(b" \n")
    if not body.startswith(_HEAD) or body[-1:] != b"}":
        return None
    parts = body[len(_HEAD):-1].split(_SEP)
    if len(parts) != 5 or any(not f.startswith(t)
                              for f, t in zip(parts[1:], _FIELDS, strict=True)):
        return None
    proj_id, kind, persist, ipcns, creator = (
        parts[0], parts[1][9:], parts[2][11:], parts[3][9:], parts[4][11:])
    if kind[-1:] != b'"' or persist not in (b"true", b"false"):
        return None
    name = kind[:-1].decode("ascii", "replace")
    numbers = [_number(proj_id), _number(ipcns), _number(creator)]
    if not _plain_kind(name) or None in numbers:
        return None
    p, ns, c = numbers
    assert p is not None and ns is not None and c is not None
    return KeyRecord(p, name, persist == b"true", ns, c)


class KeyFile:
    """An open, ``flock``-ed key file; use through :meth:`locked`."""

    def __init__(self, path: Path | str, fd: int, st: os.stat_result) -> None:
        self._path = path  # a Path made on first use: a detach's removal needs none
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.size = st.st_size

    @property
    def path(self) -> Path:
        if isinstance(self._path, str):
            self._path = Path(self._path)
        return self._path

    @classmethod
    @contextmanager
    def locked(cls, path: Path | str, *, create: bool, mode: int = 0o600,
               blocking: bool = True, timeout: float = LOCK_TIMEOUT) -> Iterator[KeyFile | None]:
        """Yield the key file at ``path`` locked exclusively.

        Yields None if it does not exist (and ``create`` is false) or if
        ``blocking`` is false and another process holds the lock.  Retries
        when the file was unlinked or replaced between open and lock, so the
        lock held is always on the file the path names now.
        """
        from .. import _core  # not at import: the pytest plugin reads paths from here
        from .._core.slices import Deadline

        deadline = Deadline(timeout)
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        while True:
            try:
                fd, owner = _core.open_fd(str(path), flags, mode & 0o666)
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
                    _core.release_fd(owner)
                    yield None
                    return
                st = os.fstat(fd)
                try:
                    now = os.lstat(path)
                except FileNotFoundError:
                    now = None
                if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    _core.release_fd(owner)  # unlinked or replaced meanwhile: start over
                    continue
            except BaseException:
                _core.release_fd(owner)
                raise
            try:
                yield cls(path, fd, st)
            finally:
                # One C call: LOCK_UN, then close (see release_fd).  LOCK_UN, not
                # only close: the lock belongs to the open file description, which
                # a child forked meanwhile (a Pool re-forking workers from another
                # thread) shares, and would hold for as long as it lives.
                _core.release_fd(owner)
            return

    def key(self, proj_id: int) -> int:
        """``ftok(path, proj_id)``, from the inode locked (the one the path names)
        rather than another stat: glibc and musl alike take proj_id's byte, the
        device's low byte and the inode's low 16 bits (signed, as _core.ftok)."""
        if not 1 <= proj_id <= 255:
            raise ShmValueError(f"ftok proj_id must be 1..255, not {proj_id}")
        k = (proj_id & 0xFF) << 24 | (self.dev & 0xFF) << 16 | (self.ino & 0xFFFF)
        return k - (1 << 32) if k & 0x8000_0000 else k

    def read(self) -> KeyRecord | None:
        if not self.size:  # (fstat'ed under the lock: a file just created is empty)
            return None
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
        assert len(data) <= RECORD_SIZE, data
        os.pwrite(self.fd, data[:-1].ljust(RECORD_SIZE - 1) + b"\n", 0)
        if self.size > RECORD_SIZE:  # written by something else: drop the rest
            os.ftruncate(self.fd, RECORD_SIZE)
        self.size = RECORD_SIZE

    def unlink(self) -> None:
        """Remove the key file; only once its segment is gone (we hold the lock)."""
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass


def _flock(fd: int, blocking: bool, deadline: Deadline, path: Path | str) -> bool:
    """Take LOCK_EX on ``fd``, polling so a stopped holder cannot hang us forever."""
    from .._core.slices import pauses

    for _ in pauses(deadline):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not blocking:
                return False
    raise LockTimeoutError(
        f"key file {str(path)!r} stayed locked by another process; if that process "
        "is stopped or hung, resume or kill it", errno.ETIMEDOUT)
