"""What is in a project directory: listing, inspecting and removing objects by name.

Listing never attaches (attaching would change ``shm_lpid`` and could race
with a last detach); ``info`` and ``rm`` attach under the key-file lock.
"""

from __future__ import annotations

import pwd
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import _core
from .._core import proc
from ..errors import SegmentNotFoundError
from .header import HEADER_SIZE
from .keys import KeyFile, KeyRecord, key_file_path, list_names
from .lifecycle import destroy, find_existing, orphan_reason

__all__ = ["Entry", "info", "list_entries", "remove"]


@dataclass(frozen=True)
class Entry:
    """One row of ``shmshare ls``."""

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    if st.dest:
        status = "removed, still attached"
    elif st.nattch:
        status = "in use"
    elif record.persist:
        status = "persistent"
    else:
        status = "orphan"  # the rule of lifecycle.orphan_reason: gc removes it
    return Entry(name=name, kind=record.kind, key=key, shmid=shmid, owner=_owner(st.uid),
                 perms=f"{st.mode:o}", bytes=max(0, st.size - HEADER_SIZE), nattch=st.nattch,
                 status=status, creator_pid=st.cpid, creator_alive=_creator_alive(record))


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


def info(project_dir: Path, name: str) -> dict[str, Any]:
    """Header, kind, sizes and kernel state of one object."""
    path = key_file_path(project_dir, name)
    with KeyFile.locked(path, create=False) as kf:
        record = kf.read() if kf is not None else None
        found = find_existing(kf, record, name, readonly=True) if kf and record else None
        if found is None:
            raise SegmentNotFoundError(
                2, f"no object named {name!r} in {str(project_dir)!r}", str(path))
        try:
            st = found.stat_before
            h = found.header
            result: dict[str, Any] = {
                "name": name, "kind": h.kind, "project_dir": str(project_dir),
                "key_file": str(path), "key": found.key, "shmid": found.shmid,
                "proj_id": h.proj_id, "layout_version": h.version,
                "persist": h.persist, "payload_bytes": h.payload_size,
                "segment_bytes": st.size, "owner": _owner(st.uid), "group": st.gid,
                "perms": f"{st.mode:o}", "nattch": st.nattch, "creator_pid": h.creator_pid,
                "creator_alive": _creator_alive(record), "last_pid": st.lpid,
                "created": h.created, "attach_time": st.atime, "detach_time": st.dtime,
                "change_time": st.ctime, "locked_in_ram": st.locked,
                "orphan": orphan_reason(st, h) is not None,
            }
        finally:
            found.attachment.detach()
    return result


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
