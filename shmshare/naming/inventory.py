"""What is in a project directory: listing, inspecting and removing objects by name.

Listing and ``info`` never attach: they read the key file and the kernel's
view (IPC_STAT), because an attach would change ``shm_lpid`` and the attach
times, and could race with a last detach.  Only ``rm`` attaches, under the
key-file lock, to verify what it removes.
"""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import _core
from .._core import proc
from .._core.extents import extent_candidates
from ..errors import SegmentNotFoundError
from .header import HEADER_SIZE
from .keys import KeyFile, KeyRecord, key_file_path, list_names
from .lifecycle import destroy, find_existing

__all__ = ["EXTENT_KEYS", "Entry", "ExtentSummary", "extent_summary", "hex_key", "info",
           "iso_time", "list_entries", "remove"]

# Heap extents (the further segments a grown object adds) take random keys
# below 2**24; ftok keys carry proj_id (>= 1) in their top byte.
EXTENT_KEYS = range(1, 1 << 24)


def hex_key(key: int | None) -> str | None:
    """A System V key as ``ipcs`` prints it: 0x and eight hex digits."""
    return None if key is None else f"{key & 0xFFFFFFFF:#010x}"


def iso_time(t: float | None) -> str | None:
    """A kernel time (seconds since the epoch; 0 = never) in ISO 8601, local time zone."""
    if not t:
        return None
    return datetime.fromtimestamp(t, timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class Entry:
    """One row of ``shmshare ls``: the key file's record and the kernel's view."""

    name: str
    kind: str
    key: int | None
    shmid: int | None
    owner: str
    perms: str
    bytes: int
    nattch: int
    status: str
    creator_pid: int | None
    creator_alive: bool | None
    last_pid: int | None = None
    changed: int = 0  # shm_ctime: creation, or the last chmod/chown
    attached: int = 0
    detached: int = 0
    extents: int = 0  # further segments a grown heap added (see extents_of)
    total_bytes: int = 0  # the segment and its extents, as the kernel counts them

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = hex_key(self.key)
        d["age_seconds"] = int(time.time() - self.changed) if self.changed else None
        for field in ("changed", "attached", "detached"):
            d[field] = iso_time(d[field])
        return d


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _entry(project_dir: Path, name: str) -> Entry:
    path = key_file_path(project_dir, name)
    record = _read_record(path)
    if record is None:
        return Entry(name, "?", None, None, "-", "-", 0, 0, "stale key file", None, None)
    if record.other_namespace():
        return Entry(name, record.kind, None, None, "-", "-", 0, 0,
                     f"in another IPC namespace (ipc:[{record.ipcns}])", None, None)
    key = _core.ftok(str(path), record.proj_id)
    try:
        shmid = _core.shmget(key, 0, 0)
        st = _core.stat(shmid)
    except SegmentNotFoundError:
        return Entry(name, record.kind, key, None, "-", "-", 0, 0, "stale key file", None, None)
    n, extra = extents_of(shmid, st) if record.kind in _HEAP_KINDS else (0, 0)
    return Entry(name=name, kind=record.kind, key=key, shmid=shmid, owner=_owner(st.uid),
                 perms=f"{st.mode:o}", bytes=max(0, st.size - HEADER_SIZE), nattch=st.nattch,
                 status=_status(st, record.persist), creator_pid=st.cpid,
                 creator_alive=_creator_alive(record), last_pid=st.lpid, changed=st.ctime,
                 attached=st.atime, detached=st.dtime, extents=n,
                 total_bytes=st.size + extra)


def extents_of(shmid: int, st: _core.ShmStat) -> tuple[int, int]:
    """How many extent segments the heap in segment ``shmid`` has, and their bytes,
    from the kernel's view alone (nothing attached).

    Extents sit at keys derived from the main segment's shmid (_core/src/extent.c).
    A segment found at one of them counts if the main segment's owner owns it and
    it was made no earlier than the main segment: a stale extent of an earlier
    segment that had the same kernel index is older.  ``shmshare check`` reads the
    extents' headers and verifies them.
    """
    count = size = 0
    for sid in extent_candidates(shmid):
        try:
            x = _core.stat(sid)
        except (SegmentNotFoundError, OSError):
            continue  # removed meanwhile
        if x.uid == st.uid and x.ctime >= st.ctime:
            count += 1
            size += x.size
    return count, size


def _status(st: _core.ShmStat, persist: bool) -> str:
    if st.dest:
        return "removed, still attached"
    if st.nattch:
        return "in use"
    if persist:
        return "persistent"
    return "orphan"  # the rule of lifecycle.orphan_reason: gc removes it


def _creator_alive(record: KeyRecord | None) -> bool | None:
    """Whether the creating process lives, as the kernel says (``_core.proc``); None
    for a key file written without the creator's token."""
    return proc.alive(record.creator) if record is not None and record.creator else None


def _read_record(path: Path) -> KeyRecord | None:
    # No lock: listing must not wait for, or delay, creators and removers.
    try:
        return KeyRecord.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def list_entries(project_dir: Path) -> list[Entry]:
    """Every object named in ``project_dir``, as ``shmshare ls`` shows them."""
    return [_entry(project_dir, name) for name in list_names(project_dir)]


@dataclass(frozen=True)
class ExtentSummary:
    """Heap extents of this user: how many, how many bytes, how many nobody attached."""

    count: int
    bytes: int
    unattached: int


def extent_summary() -> ExtentSummary:
    """This user's heap extent segments, from the kernel's view.

    Which object an extent belongs to is written only inside the object's
    main segment, so telling it needs an attach (``shmshare check NAME``).
    """
    count = size = idle = 0
    for shmid in _core.list_ids():
        try:
            st = _core.stat(shmid)
        except OSError:
            continue  # removed meanwhile
        if st.key in EXTENT_KEYS and st.uid == os.geteuid():
            count += 1
            size += st.size
            idle += st.nattch == 0
    return ExtentSummary(count, size, idle)


def info(project_dir: Path, name: str) -> dict[str, Any]:
    """Kind, sizes and kernel state of one object, without attaching it.

    What it shows comes from the key file and IPC_STAT.  The identity header
    inside the segment is not read (that needs an attach): ``shmshare check``
    verifies it.
    """
    path = key_file_path(project_dir, name)
    record = _read_record(path)
    missing = SegmentNotFoundError(
        2, f"no object named {name!r} in {str(project_dir)!r}", str(path))
    if record is None:
        raise missing
    key = _core.ftok(str(path), record.proj_id)
    try:
        shmid = _core.shmget(key, 0, 0)
        st = _core.stat(shmid)
    except SegmentNotFoundError:
        raise SegmentNotFoundError(
            2, f"{name!r} in {str(project_dir)!r} has a key file but no segment (a stale key "
            "file: shmshare gc removes it)", str(path)) from None
    return {
        "name": name, "kind": record.kind, "project_dir": str(project_dir),
        "key_file": str(path), "key": hex_key(key), "shmid": shmid,
        "proj_id": record.proj_id, "persist": record.persist,
        "status": _status(st, record.persist),
        "payload_bytes": max(0, st.size - HEADER_SIZE), "segment_bytes": st.size,
        "owner": _owner(st.uid), "group": st.gid, "perms": f"{st.mode:o}",
        "nattch": st.nattch, "creator_pid": st.cpid, "creator_alive": _creator_alive(record),
        "last_pid": st.lpid, "changed": iso_time(st.ctime),
        "age_seconds": int(time.time() - st.ctime) if st.ctime else None,
        "attached": iso_time(st.atime), "detached": iso_time(st.dtime),
        "locked_in_ram": st.locked,
        **_extent_fields(shmid, st, record.kind),
    }


def _extent_fields(shmid: int, st: _core.ShmStat, kind: str) -> dict[str, Any]:
    if kind not in _HEAP_KINDS:
        return {"extents": 0, "extent_bytes": 0, "total_bytes": st.size}
    n, extra = extents_of(shmid, st)
    return {"extents": n, "extent_bytes": extra, "total_bytes": st.size + extra}


# Kinds whose payload is a heap that may grow into extents.
_HEAP_KINDS = frozenset({"dict", "list", "set", "namespace", "value", "queue"})


def remove(project_dir: Path, name: str) -> int:
    """Remove an object now; returns how many processes were still attached."""
    path = key_file_path(project_dir, name)
    with KeyFile.locked(path, create=False) as kf:
        record = kf.read() if kf is not None else None
        found = find_existing(kf, record, name) if kf and record else None
        if kf is not None and found is None:
            kf.unlink()  # a stale key file: removing it is all there is to do
            return 0
        if found is None:
            raise SegmentNotFoundError(
                2, f"no object named {name!r} in {str(project_dir)!r}", str(path))
        try:
            destroy(found)
            assert kf is not None
            kf.unlink()
        finally:
            found.attachment.detach()
    return found.stat_before.nattch
