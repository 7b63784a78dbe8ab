"""Named segments that no name reaches any more: gc's machine-wide sweep.

A named segment is found through its key file: ``ftok`` of the file's inode
gives the key.  When the key file is deleted while its segment still exists
-- the project directory removed with ``rm -rf`` while a persistent object
lived in it, or a crashed program's directory deleted before ``gc`` ran --
no name leads to the segment any more, and the per-directory sweep
(:func:`.lifecycle.sweep`), which starts from key files, cannot see it.

So the header of every named segment records the absolute path of its key
file and the mount namespace that path means something in.  This sweep reads
the header of every segment of this user that no process is attached to, and
removes the segment when its key file is gone (no file at that path, or
another file than the one whose inode made the key) and:

* it is not persistent: with nobody attached it is an orphan anyway (see
  :func:`.lifecycle.orphan_reason`), and with its key file gone no process
  can be in the middle of opening it by name; or
* it is persistent and the project directory still exists: a key file is
  never moved on its own, so the object is lost for good; or
* it is persistent, the project directory is gone too, and the caller asked
  (``gc --unreachable``): the directory may have been deleted, or moved --
  a moved directory's objects still open through its new path, since
  ``ftok`` follows the inode -- and only the user knows which.

An anonymous segment is created at a key of ``ANON_KEY_BASE``'s range and
marked for removal as soon as its creator has attached it; one left
unmarked, with no header and nobody attached, is removed too.  No liveness
is asked: a creator killed between its shmget and its shmat leaves exactly
that, and a live creator that loses such a segment to gc before attaching
it makes another (``attach._anonymous_segment``) -- whereas "is pid N
alive?" has no answer across PID namespaces, where the creator's pid reads
0, and a wrong one after pid reuse.  No named key falls in that range.

Never touched: segments of another user (owner or creator), segments a
process is attached to, segments without a shmshare header, anonymous ones
(the kernel frees those), headers that recorded no path (older versions) or
were written in another mount namespace (the path names another file there),
and headers that do not match the segment's own key.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import _core
from .._log import logger
from ..errors import CorruptSegmentError, ShmshareError
from .header import ANON_KEY_BASE, HEADER_SIZE, OWN_MNTNS, Header, note_inspection
from .lifecycle import Found, SweepResult, destroy

__all__ = ["sweep_unreachable"]


def _ftok_key(header: Header) -> int:
    """The key ``ftok`` gives for the key file the header names (glibc's formula)."""
    return ((header.proj_id & 0xFF) << 24 | (header.dev & 0xFF) << 16
            | (header.ino & 0xFFFF))


def _key_file_gone(header: Header) -> bool:
    try:
        st = os.stat(header.key_path)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # cannot tell (a directory we may not search): keep it
    return (st.st_dev, st.st_ino) != (header.dev, header.ino)


def sweep_unreachable(*, dry_run: bool = False, unreachable: bool = False,
                      ids: list[int] | None = None) -> list[SweepResult]:
    """Remove this user's named segments whose key file is gone (see the module).

    ``unreachable``: also persistent ones whose project directory is gone.
    ``ids``: look only at these shmids (default: every segment).
    """
    me = os.geteuid()
    results: list[SweepResult] = []
    for shmid in _core.list_ids() if ids is None else ids:
        try:
            st = _core.stat(shmid)
        except ShmshareError:
            continue  # gone meanwhile, or not ours to read
        if (st.key == 0 or st.uid != me or st.cuid != me or st.dest or st.nattch
                or st.size < HEADER_SIZE):
            continue
        result = (_judge_anonymous(shmid, st, dry_run) if st.key >> 24 == ANON_KEY_BASE >> 24
                  else None) or _judge(shmid, st, dry_run, unreachable)
        if result is not None:
            results.append(result)
            if result.action == "removed":
                logger.info("removed %s: %s", result.name, result.reason)
    return results


def _judge_anonymous(shmid: int, st: _core.ShmStat, dry_run: bool) -> SweepResult | None:
    """An anonymous creation never attached (its creator died, or will make another)."""
    try:
        att = _core.shmat(shmid, HEADER_SIZE, readonly=True)
    except ShmshareError:
        return None
    try:
        view = att.memoryview()
        try:
            if not Header.magic_is_zero(view):
                return None  # a header came after all (a named segment's, say): not this
        finally:
            view.release()
    finally:
        att.detach()
    label = f"anonymous segment (shmid {shmid})"
    why = (f"created (by pid {st.cpid}) but never attached nor marked for removal: its "
           f"creator died between the two, or makes another")
    if dry_run:
        return SweepResult(label, "would-remove", why)
    _core.rmid(shmid)
    return SweepResult(label, "removed", why)


def _judge(shmid: int, st: _core.ShmStat, dry_run: bool,
           unreachable: bool) -> SweepResult | None:
    try:
        att = _core.shmat(shmid, st.size)
    except ShmshareError:
        return None  # removed meanwhile
    header: Header | None = None
    removed = False
    try:
        view = att.memoryview()
        try:
            header = Header.read(view)
        except CorruptSegmentError:
            header = None  # a damaged header is not evidence of anything: leave it
        finally:
            view.release()
        if (header is None or header.anonymous or not header.key_path
                or header.mntns != OWN_MNTNS or OWN_MNTNS == 0
                or _ftok_key(header) != st.key or not _key_file_gone(header)):
            return None
        label = f"{header.name} (shmid {shmid})"
        where = Path(header.key_path).parent
        why = f"its key file {header.key_path} is gone, so no name reaches it"
        if header.persist:
            if not where.is_dir() and not unreachable:
                return SweepResult(label, "kept", f"persistent, and its project directory "
                                   f"{where} is gone (deleted or moved): if it was deleted, "
                                   f"`shmshare gc --unreachable` removes it")
            why = "persistent, " + why
        if dry_run:
            return SweepResult(label, "would-remove", why)
        if _core.stat(shmid).nattch != 1:
            return None  # someone else attached meanwhile: not unreachable after all
        problem = destroy(Found(shmid, st.key, header, att, st))
        removed = True
        return SweepResult(label, "removed", why + (f" ({problem})" if problem else ""))
    finally:
        if header is not None and not removed:  # never write into bytes not ours
            view = att.memoryview()
            try:  # so that gc reports the last real user, not this inspection
                note_inspection(view, os.getpid(), st.lpid)
            finally:
                view.release()
        att.detach()
