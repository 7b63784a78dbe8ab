"""The identity header at the start of every segment shmshare creates.

``ftok`` keys collide and shmids are reused, so a key or an id alone never
proves that a segment is the object we mean.  The first page of each segment
says who it is: a magic, the layout version, the object's kind and name, the
device/inode of its key file (named objects) or a random token (anonymous
ones).  Attach verifies all of it.  The creator writes the magic *last*, so a
creator killed half-way leaves a segment whose magic is still zero.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, NamedTuple

from ..errors import CorruptSegmentError

__all__ = [
    "ANON_KEY_BASE",
    "FLAG_ANONYMOUS",
    "FLAG_HEAP",
    "FLAG_PERSIST",
    "HEADER_SIZE",
    "LAYOUT_VERSION",
    "MAGIC",
    "OWN_PIDNS",
    "Header",
    "note_inspection",
    "note_pid_namespace",
    "pid_namespace_shared",
]

MAGIC = b"SHMSHARE"
LAYOUT_VERSION = 1
HEADER_SIZE = 4096  # one page: the payload after it stays page-aligned

# Anonymous segments are created at a random key of this range, not at
# IPC_PRIVATE, and marked for removal at once (IPC_RMID turns the key into
# IPC_PRIVATE).  A creator SIGKILLed between its shmget and that IPC_RMID
# leaves a segment without header that nobody is attached to: only the key
# tells gc that it is an unfinished creation of ours (naming/unreachable.py).
ANON_KEY_BASE = 0x7D000000

FLAG_PERSIST = 1  # survives its last detach; removed only explicitly
FLAG_ANONYMOUS = 2  # IPC_PRIVATE, marked for removal at creation
FLAG_HEAP = 4  # the payload starts with a shmshare heap (it may own extents)

# magic, version, header size, flags, proj_id, key-file dev, key-file ino,
# token, payload size, creator pid, creation time, kind, name length; name follows.
_FIXED = struct.Struct("<8sIIIIQQQQqd16sH")
_MAX_NAME = 255
# Two u64 words: the creator's PID namespace (inode of /proc/self/ns/pid, 0 if
# unknown), and a flag set by any process that attached from another namespace.
# Lock words hold thread ids, which mean something only within one namespace.
_PIDNS_AT = 2048
_PIDNS_UNKNOWN = 0
# Two i64 words: the pid of the last inspector that had to attach
# (``shmshare check``) and the segment's ``shm_lpid`` from before it attached.
# The kernel makes every detach the "last pid"; with these, gc can tell an
# inspection from a use and report the last real user instead.
_INSPECT_AT = _PIDNS_AT + 16
_INSPECT = struct.Struct("<qq")
# Named segments: the creator's mount namespace (inode of /proc/self/ns/mnt, 0 if
# unknown) and the absolute path of the key file (length 0: not recorded, e.g. by
# an older version).  With them gc can tell that a segment's key file is gone, so
# that no name reaches the segment any more (see naming/unreachable.py).
_KEYPATH_AT = 2560
_KEYPATH = struct.Struct("<QH")
_MAX_KEYPATH = HEADER_SIZE - _KEYPATH_AT - _KEYPATH.size




def _own_mount_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return 0


OWN_MNTNS = _own_mount_namespace()


def _own_pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return _PIDNS_UNKNOWN


OWN_PIDNS = _own_pid_namespace()


def note_pid_namespace(buf: memoryview) -> None:
    """Record, on attach, that a process of another PID namespace uses the segment."""
    words = buf[_PIDNS_AT:_PIDNS_AT + 16].cast("Q")
    try:
        if OWN_PIDNS == _PIDNS_UNKNOWN or words[0] != OWN_PIDNS:
            words[1] = 1
    finally:
        words.release()


def pid_namespace_shared(buf: memoryview) -> bool:
    """True while every process that attached shares this process's PID namespace."""
    words = buf[_PIDNS_AT:_PIDNS_AT + 16].cast("Q")
    try:
        return OWN_PIDNS != _PIDNS_UNKNOWN and words[0] == OWN_PIDNS and words[1] == 0
    finally:
        words.release()


def note_inspection(buf: memoryview, inspector_pid: int, lpid_before: int) -> None:
    """Record, just before an inspector detaches, who it was and the last pid before it."""
    buf[_INSPECT_AT:_INSPECT_AT + _INSPECT.size] = _INSPECT.pack(inspector_pid, lpid_before)


class _HeaderFields(NamedTuple):
    # A NamedTuple, not a dataclass: dataclasses imports inspect (start-up time).
    kind: str
    name: str
    payload_size: int
    flags: int
    proj_id: int
    dev: int
    ino: int
    token: int
    creator_pid: int
    created: float
    version: int
    inspector_pid: int  # see note_inspection
    lpid_before_inspection: int
    key_path: str  # named segments: the key file's absolute path ("" if not recorded)
    mntns: int  # the mount namespace key_path is meant in (0 if unknown)


class Header(_HeaderFields):
    """A segment's header; ``token``, ``creator_pid`` and ``created`` default to
    a fresh random token, this process and now."""

    __slots__ = ()

    def __new__(cls, kind: str, name: str, payload_size: int, flags: int = 0,
                proj_id: int = 0, dev: int = 0, ino: int = 0, token: int | None = None,
                creator_pid: int | None = None, created: float | None = None,
                version: int = LAYOUT_VERSION, inspector_pid: int = 0,
                lpid_before_inspection: int = 0, key_path: str = "",
                mntns: int | None = None) -> Header:
        return super().__new__(
            cls, kind, name, payload_size, flags, proj_id, dev, ino,
            int.from_bytes(os.urandom(8), "little") >> 1 if token is None else token,
            os.getpid() if creator_pid is None else creator_pid,
            time.time() if created is None else created, version, inspector_pid,
            lpid_before_inspection, key_path,
            (OWN_MNTNS if key_path else 0) if mntns is None else mntns)

    @classmethod
    def verified(cls, kind: str, name: str, key_path: str, proj_id: int, dev: int, ino: int,
                 fields: tuple[Any, ...]) -> Header:
        """The header that _core.named_open found to be ``name``'s, of ``kind``, for
        the key file ``key_path`` (``dev``, ``ino``) and its record's ``proj_id``;
        ``fields`` are the rest, as that call reads them."""
        flags, token, payload, pid, created, inspector, lpid_before, mntns = fields
        return tuple.__new__(cls, (kind, name, payload, flags, proj_id, dev, ino, token, pid,
                                   created, LAYOUT_VERSION, inspector, lpid_before, key_path,
                                   mntns))

    @property
    def persist(self) -> bool:
        return bool(self.flags & FLAG_PERSIST)

    @property
    def anonymous(self) -> bool:
        return bool(self.flags & FLAG_ANONYMOUS)

    @property
    def has_heap(self) -> bool:
        return bool(self.flags & FLAG_HEAP)

    def write(self, buf: memoryview) -> None:
        """Write the header into ``buf`` (the segment's first page), magic last."""
        name = self.name.encode("utf-8")
        kind = self.kind.encode("ascii")
        if len(name) > _MAX_NAME or len(kind) > 16:
            raise ValueError("name or kind too long for the header")
        fixed = _FIXED.pack(b"\0" * 8, self.version, HEADER_SIZE, self.flags, self.proj_id,
                            self.dev, self.ino, self.token, self.payload_size,
                            self.creator_pid, self.created, kind, len(name))
        end = _FIXED.size + len(name)
        buf[8:_FIXED.size] = fixed[8:]
        buf[_FIXED.size:end] = name
        buf[_PIDNS_AT:_PIDNS_AT + 16] = struct.pack("<QQ", OWN_PIDNS, 0)
        path = self.key_path.encode("utf-8", "surrogateescape")
        if len(path) > _MAX_KEYPATH:
            path = b""  # not recorded: gc then never judges the segment unreachable
        buf[_KEYPATH_AT:_KEYPATH_AT + _KEYPATH.size] = _KEYPATH.pack(self.mntns, len(path))
        buf[_KEYPATH_AT + _KEYPATH.size:_KEYPATH_AT + _KEYPATH.size + len(path)] = path
        buf[0:8] = MAGIC

    @classmethod
    def read(cls, buf: memoryview) -> Header | None:
        """The header in ``buf``, None if it carries no shmshare magic.

        Raises CorruptSegmentError when the magic is ours but the rest is not
        something this version can use.
        """
        if len(buf) < HEADER_SIZE or bytes(buf[0:8]) != MAGIC:
            return None
        (_, version, hsize, flags, proj_id, dev, ino, token, payload, pid, created, kind,
         nlen) = _FIXED.unpack_from(buf, 0)
        if version != LAYOUT_VERSION:
            raise CorruptSegmentError(
                f"segment has layout version {version}; this shmshare reads version "
                f"{LAYOUT_VERSION}: use the shmshare version that created it, or remove it")
        if hsize != HEADER_SIZE or nlen > _MAX_NAME:
            raise CorruptSegmentError("segment header is damaged (impossible sizes)")
        try:
            name = bytes(buf[_FIXED.size:_FIXED.size + nlen]).decode("utf-8")
            kind_s = kind.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise CorruptSegmentError("segment header is damaged (bad name)") from None
        inspector, lpid_before = _INSPECT.unpack_from(buf, _INSPECT_AT)
        mntns, plen = _KEYPATH.unpack_from(buf, _KEYPATH_AT)
        start = _KEYPATH_AT + _KEYPATH.size
        key_path = (bytes(buf[start:start + plen]).decode("utf-8", "surrogateescape")
                    if plen <= _MAX_KEYPATH else "")
        return cls(kind=kind_s, name=name, payload_size=payload, flags=flags, proj_id=proj_id,
                   dev=dev, ino=ino, token=token, creator_pid=pid, created=created,
                   version=version, inspector_pid=inspector, lpid_before_inspection=lpid_before,
                   key_path=key_path, mntns=mntns)

    def last_user(self, lpid: int) -> int:
        """The last pid that *used* the segment, given the kernel's ``shm_lpid``:
        an inspection by ``shmshare check`` is not a use."""
        if self.inspector_pid and lpid == self.inspector_pid:
            return self.lpid_before_inspection
        return lpid

    @staticmethod
    def magic_is_zero(buf: memoryview) -> bool:
        """True if the creator never finished writing (magic not yet written)."""
        return bytes(buf[0:8]) == b"\0" * 8
