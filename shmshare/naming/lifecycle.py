"""Find, verify, remove and sweep named segments — always under the key-file lock.

The rules every function here keeps:

* Attaching and "detach, check nattch, then remove" both run under ``flock``
  on the key file, so no process can attach between the check and the removal.
* A segment is removed (IPC_RMID) before its key file is unlinked; a process
  killed in between leaves a key file that names no segment, which the next
  opener or sweep recognises as stale.
* Nothing removes a segment it has not verified as the one the key file
  names (magic, name, key-file device/inode): ``ftok`` keys collide.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .. import _core
from .._log import logger
from ..errors import SegmentNotFoundError, ShmPermissionError, ShmshareError
from .header import HEADER_SIZE, Header
from .keys import IPC_NAMESPACE, KeyFile, KeyRecord, key_file_path, list_names

__all__ = [
    "Found",
    "SweepResult",
    "destroy",
    "find_existing",
    "foreign_owner",
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
    """``hook(attachment, header, nattch)`` runs when a heap segment is removed (right
    after its IPC_RMID); ``nattch`` counts the attachments then, the remover's own
    included."""
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


class Found(NamedTuple):
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
    reclaim: it is removed here.  A record of another IPC namespace raises
    ShmPermissionError: its segment is invisible here, so neither "absent"
    nor "stale" would be true.  Must be called with ``kf`` locked.
    """
    if record.other_namespace():
        raise ShmPermissionError(
            errno.EPERM, f"{kf.path.name} names a segment of another IPC namespace "
            f"(ipc:[{record.ipcns}], this process is in ipc:[{IPC_NAMESPACE}]) that shares "
            "this project directory; use it from that namespace, or give each IPC "
            "namespace its own project directory (see docs/concepts/security.md)",
            str(kf.path))
    key = kf.key(record.proj_id)
    try:
        shmid = _core.shmget(key, 0, 0)
    except SegmentNotFoundError:
        return None
    st = _core.stat(shmid)
    if st.size < HEADER_SIZE:
        return None  # not one of ours: too small to hold our header
    att = _core.shmat(shmid, st.size, readonly=readonly)
    found = None
    try:
        found = verified(att, st, key, name, kf, reclaim=True)
        return found
    finally:
        if found is None:
            att.detach()


def verified(att: _core.Attachment, st: _core.ShmStat, key: int, name: str, kf: KeyFile,
             *, reclaim: bool = False) -> Found | None:
    """``att`` as a Found if its identity header says it is ``name``'s segment of the
    locked key file ``kf``, else None (the caller detaches).  ``reclaim``: remove it
    if its creator died before writing the header."""
    view = att.memoryview()
    try:
        header = Header.read(view)
        if header is None:
            if reclaim and Header.magic_is_zero(view) and _crashed_creation(st):
                _core.rmid(st.shmid)
            return None
        if (header.name != name or (header.dev, header.ino) != (kf.dev, kf.ino)
                or header.anonymous or HEADER_SIZE + header.payload_size > st.size):
            return None
    finally:
        view.release()
    return Found(st.shmid, key, header, att, st)


def _crashed_creation(st: _core.ShmStat) -> bool:
    """A headerless segment we created that nobody is attached to, seen under its key
    file's lock: its creator, who held that lock until the header was written, died.

    No pid is asked (none answers across PID namespaces, or after reuse).  The one
    live creator it can be is that of another key file whose ftok key collides with
    ours, between its shmget and its header; that creator makes another segment
    (``attach._create_named``)."""
    return st.cuid == os.geteuid() and st.nattch == 0 and not st.dest


def foreign_owner(st: _core.ShmStat) -> str | None:
    """Who else owns a segment ("owned by uid N (created by uid M)"), or None if
    both its owner and its creator are this user."""
    me = os.geteuid()
    if st.uid == me and st.cuid == me:
        return None
    return f"owned by uid {st.uid} (created by uid {st.cuid})"


def destroy(found: Found, *, trust: bool = False, st: _core.ShmStat | None = None
            ) -> str | None:
    """Remove a verified segment: IPC_RMID, then the destroy hooks.  Key file lock held.

    IPC_RMID first: a remover killed after the hooks had removed a heap's
    extents but before its IPC_RMID left a segment anyone could still open,
    whose heap then failed for want of its extents (SegmentRemovedError).
    Killed in the same place now, it leaves extents whose segment is gone,
    which ``gc`` removes (and nobody can open).

    A segment that another user owns or created is not ours: its bytes are
    theirs to choose, so running heap logic on them (the hooks remove the
    segments its extent keys name) would let them pick which of *our*
    segments we remove.  Unless the caller trusts them, such a segment is
    refused with ShmPermissionError before anything runs; so is one the
    kernel will not let us remove (EPERM).

    The IPC_RMID never depends on the hooks: a hook that fails (a damaged
    payload) does not stop the removal; what it reported is returned.
    ``st``: the segment's stat, if the caller took it just now, under the lock.
    """
    if st is None:
        st = _core.stat(found.shmid)
    other = foreign_owner(st)
    if other is not None and not trust:
        raise ShmPermissionError(
            errno.EPERM, f"segment shmid={found.shmid} is {other}, not by you "
            f"(uid {os.geteuid()}): left alone; its owner can remove it")
    _core.rmid(found.shmid)
    problem = None
    if found.header.has_heap:
        for hook in _DESTROY_HOOKS:
            try:
                hook(found.attachment, found.header, st.nattch)
            except ShmshareError as exc:
                problem = problem or f"its payload could not be cleaned up: {exc}"
    return problem


def orphan_reason(st: _core.ShmStat, header: Header) -> str | None:
    """Why a segment is an orphan, or None if it is in use or meant to persist.

    ``st`` must be read before this process attached, with the key-file lock
    held.  Every legitimate moment at which a non-persistent named segment
    has nattch 0 (between shmget and shmat at creation, between the last
    user's shmdt and its IPC_RMID) happens under that lock, so
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


class SweepResult(NamedTuple):
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
    if record is not None and record.other_namespace():
        return SweepResult(name, "kept", f"a segment of another IPC namespace "
                           f"(ipc:[{record.ipcns}]): not visible from here, left alone")
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
        other = foreign_owner(found.stat_before)
        if other is not None:  # never inspected further, never removed (see destroy)
            return SweepResult(name, "kept", f"{other}, not by you: left alone")
        reason = orphan_reason(found.stat_before, found.header)
        if reason is None:
            return None
        if not dry_run:
            problem = destroy(found)
            if problem is not None:   # reported; the sweep goes on
                reason += f" ({problem})"
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
        st = _core.stat(_core.shmget(kf.key(record.proj_id), 0, 0))
    except SegmentNotFoundError:
        return SweepResult(name, "would-remove-stale-key", "the key file names no segment")
    if record.persist or st.dest or st.nattch > 0:
        return None
    return SweepResult(name, "would-remove", _orphan_text(st.lpid or st.cpid))


def sweep_extents(*, dry_run: bool = False, ids: list[int] | None = None
                  ) -> list[SweepResult]:
    """Remove heap extent segments (of this user) whose heap is gone.

    An extent outlives its heap only when every process using the heap died
    without detaching normally.  It is recognised even if its creator died
    before writing anything into it, because its key derives from its main
    segment (the argument is in ``_core/src/extent.c``).  ``ids``: look only
    at these shmids (default: every segment).
    """
    from .._core.extents import sweep_extent

    results: list[SweepResult] = []
    for shmid in _core.list_ids() if ids is None else ids:
        main = sweep_extent(shmid, dry_run=dry_run)
        if main is None:
            continue
        why = (f"a heap extent whose main segment (shmid {main}) is gone" if main >= 0 else
               "an unfinished heap extent whose main segment is gone")
        results.append(SweepResult(f"extent shmid={shmid}",
                                   "would-remove" if dry_run else "removed", why))
        if not dry_run:
            logger.info("removed heap extent shmid=%d: %s", shmid, why)
    return results
