"""Find, verify, remove and sweep named segments — always under the key-file lock.

The rules every function here keeps:

* Attaching and "check nattch, then remove" both run under ``flock`` on the
  key file, so no process can attach between the check and the removal.
* A segment is removed (IPC_RMID) before its key file is unlinked; a process
  killed in between leaves a key file that names no segment, which the next
  opener or sweep recognises as stale.
* Nothing removes a segment it has not verified as the one the key file
  names (magic, name, key-file device/inode): ``ftok`` keys collide.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import _core
from .._log import logger
from ..errors import SegmentNotFoundError, ShmshareError
from .header import HEADER_SIZE, Header
from .keys import KeyFile, KeyRecord, key_file_path, list_names

__all__ = [
    "Found",
    "SweepResult",
    "destroy",
    "find_existing",
    "orphan_reason",
    "pid_alive",
    "register_destroy_hook",
    "sweep",
    "sweep_extents",
]

# Kinds whose payload owns more than the main segment (heap extents) register
# a hook here; it runs, with the segment still attached, just before IPC_RMID.
_DESTROY_HOOKS: list[Callable[[_core.Attachment, Header, int], None]] = []


def register_destroy_hook(hook: Callable[[_core.Attachment, Header, int], None]) -> None:
    """``hook(attachment, header, nattch)`` runs before a heap segment is removed;
    ``nattch`` counts the attachments then, the remover's own included."""
    if hook not in _DESTROY_HOOKS:
        _DESTROY_HOOKS.append(hook)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` names a live (non-zombie) process; pid <= 0 is never alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


@dataclass
class Found:
    """A verified segment of ours, attached in this process."""

    shmid: int
    key: int
    header: Header
    attachment: _core.Attachment
    stat_before: _core.ShmStat  # taken before our own attach changed nattch/lpid


def find_existing(kf: KeyFile, record: KeyRecord, name: str, *,
                  readonly: bool = False) -> Found | None:
    """The segment ``record`` points at, verified and attached; None if there is none.

    A segment at that key which is not ours is left alone (an ``ftok``
    collision).  One whose creator died before writing the magic is ours to
    reclaim: it is removed here.  Must be called with ``kf`` locked.
    """
    key = _core.ftok(str(kf.path), record.proj_id)
    try:
        shmid = _core.shmget(key, 0, 0)
    except SegmentNotFoundError:
        return None
    st = _core.stat(shmid)
    if st.size < HEADER_SIZE:
        return None  # not one of ours: too small to hold our header
    att = _core.shmat(shmid, st.size, readonly=readonly)
    keep = False
    try:
        view = att.memoryview()
        try:
            header = Header.read(view)
            if header is None:
                if Header.magic_is_zero(view) and _crashed_creation(st):
                    _core.rmid(shmid)
                return None
            if (header.name != name or (header.dev, header.ino) != (kf.dev, kf.ino)
                    or header.anonymous or HEADER_SIZE + header.payload_size > st.size):
                return None
        finally:
            view.release()
        keep = True
        return Found(shmid, key, header, att, st)
    finally:
        if not keep:
            att.detach()


def _crashed_creation(st: _core.ShmStat) -> bool:
    """A segment we created, nobody attached, whose creator is gone."""
    return (st.cuid == os.geteuid() and st.nattch == 0 and not st.dest
            and not pid_alive(st.cpid))


def destroy(found: Found) -> None:
    """Remove a verified segment: destroy hooks, then IPC_RMID.  Key file lock held."""
    if found.header.has_heap:
        for hook in _DESTROY_HOOKS:
            hook(found.attachment, found.header, _core.stat(found.shmid).nattch)
    _core.rmid(found.shmid)


def orphan_reason(st: _core.ShmStat, header: Header) -> str | None:
    """Why a segment is an orphan, or None if it is in use or meant to persist.

    ``st`` must be read before this process attached, with the key-file lock
    held.  Every legitimate moment at which a non-persistent named segment
    has nattch 0 (between shmget and shmat at creation, between the nattch
    check and IPC_RMID at the last detach) happens under that lock, so
    nattch 0 seen under it means every user died without detaching cleanly.
    The last pid is only reported; ``shmshare check``, the one inspection
    that attaches, records itself in the header so it is not reported as the
    last user (:meth:`Header.last_user`).
    """
    if header.persist or st.dest or st.nattch > 0:
        return None
    return _orphan_text(header.last_user(st.lpid) or st.cpid)


def _orphan_text(last: int) -> str:
    state = "alive" if pid_alive(last) else "gone"
    return f"nattch 0 and not persistent (last user pid {last}: {state})"


@dataclass(frozen=True)
class SweepResult:
    name: str
    action: str  # "removed", "removed-stale-key", "kept"; dry runs: "would-remove..."
    reason: str


def sweep(project_dir: Path, *, dry_run: bool = False,
          names: list[str] | None = None) -> list[SweepResult]:
    """Remove what crashed processes left in ``project_dir``.

    An orphan is a non-persistent segment nobody is attached to (see
    :func:`orphan_reason`); a stale key file names no segment at all.  Key
    files another process has locked right now are skipped: they are being
    created, opened or removed.
    """
    results: list[SweepResult] = []
    for name in names if names is not None else list_names(project_dir):
        path = key_file_path(project_dir, name)
        with KeyFile.locked(path, create=False, blocking=False) as kf:
            if kf is None:
                continue
            result = _sweep_one(kf, name, dry_run)
            if result is not None:
                results.append(result)
                if not dry_run and result.action != "kept":
                    what = (f"stale key file {name}.key" if result.action == "removed-stale-key"
                            else name)
                    logger.info("removed %s in %s: %s", what, project_dir, result.reason)
    if not dry_run and not results:
        logger.debug("swept %s: nothing to remove", project_dir)
    return results


def _sweep_one(kf: KeyFile, name: str, dry_run: bool) -> SweepResult | None:
    record = kf.read()
    if dry_run:
        return _predict_one(kf, record, name)
    try:
        found = find_existing(kf, record, name) if record is not None else None
    except ShmshareError as exc:
        return SweepResult(name, "kept", f"cannot inspect: {exc}")
    if found is None:
        if not dry_run:
            kf.unlink()
        return SweepResult(name, "removed-stale-key", "the key file names no segment")
    try:
        reason = orphan_reason(found.stat_before, found.header)
        if reason is None:
            return None
        if not dry_run:
            destroy(found)
            kf.unlink()
        return SweepResult(name, "removed", reason)
    finally:
        found.attachment.detach()


def _predict_one(kf: KeyFile, record: KeyRecord | None, name: str) -> SweepResult | None:
    """What :func:`_sweep_one` would do, from the kernel's view only (IPC_STAT).

    A dry run attaches nothing: an attach would make the inspector the
    segment's last pid.  So the identity header is not verified here; the
    real sweep verifies it before removing anything.
    """
    if record is None:
        return SweepResult(name, "would-remove-stale-key", "the key file names no segment")
    try:
        st = _core.stat(_core.shmget(_core.ftok(str(kf.path), record.proj_id), 0, 0))
    except SegmentNotFoundError:
        return SweepResult(name, "would-remove-stale-key", "the key file names no segment")
    if record.persist or st.dest or st.nattch > 0:
        return None
    return SweepResult(name, "would-remove", _orphan_text(st.lpid or st.cpid))


_EXT_KEYS = range(1, 1 << 24)  # heap extents use random keys below proj_id's byte


def sweep_extents(*, dry_run: bool = False) -> list[SweepResult]:
    """Remove heap extent segments (of this user) whose heap is gone.

    An extent outlives its heap only when every process of an anonymous (or
    unlinked) heap died without detaching normally.  Such an extent has
    nattch 0, is not marked for removal, and names a main segment that no
    longer exists.  Extents whose main segment exists, or is not recorded,
    are kept.
    """
    from .._core.heap import probe_extent

    results: list[SweepResult] = []
    unchecked = 0
    for shmid in _core.list_ids():
        try:
            st = _core.stat(shmid)
            if (st.key not in _EXT_KEYS or st.nattch or st.dest or st.uid != os.geteuid()
                    or st.size < 64):
                continue
            if dry_run:  # finding its heap means attaching it: a dry run only counts it
                unchecked += 1
                continue
            att = _core.shmat(shmid, st.size, readonly=True)
        except ShmshareError:
            continue  # gone meanwhile, or not ours to read
        try:
            main = probe_extent(att)
        finally:
            att.detach()
        if main is None or main < 0 or _exists(main):
            continue
        if not dry_run:
            try:
                _core.rmid(shmid)
            except ShmshareError:
                continue
        results.append(SweepResult(f"extent shmid={shmid}", "removed",
                                   f"a heap extent whose main segment (shmid {main}) is gone"))
        logger.info("removed heap extent shmid=%d: its main segment (shmid %d) is gone",
                    shmid, main)
    if unchecked:
        results.append(SweepResult(
            f"{unchecked} heap extent(s)", "would-check",
            "nobody has them attached; gc removes those whose object is gone (a dry run "
            "attaches nothing, so it cannot tell)"))
    return results


def _exists(shmid: int) -> bool:
    try:
        _core.stat(shmid)
    except ShmshareError:
        return False
    return True
