"""The check verb: open objects with their own type and verify them, as an inspector.

``check NAME`` verifies one object; ``check NAME NAME...`` each named one;
``check`` alone everything ``ls`` lists (the project directory's objects and
those of its Managers and pytest runs).  A failure is an error line that does
not stop the others.  Checking attaches, so it records itself in each header
(gc then reports the last real user) and removes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import SegmentNotFoundError, ShmshareError
from ..naming.dirs import OWNED_SUBDIRS
from ..naming.header import note_inspection
from ..naming.inventory import info, list_entries
from ..naming.keys import KeyFile, key_file_path
from ..naming.lifecycle import find_existing
from . import SomeFailed

__all__ = ["check_objects"]

# What ls shows of a key file that names no object this check could open.
_UNCHECKABLE = ("stale key file", "in another IPC namespace")


class _Target(NamedTuple):
    label: str       # the name as ls shows it: NAME, or DIR/NAME for a Manager's
    pdir: Path       # the directory its key file is in
    name: str
    skip: str = ""   # why it is not checked ("": it is)


def check_objects(pdir: Path, names: list[str], trust: bool) -> tuple[Any, str]:
    """Check each name in turn, or everything in ``pdir`` when no name is given."""
    if len(names) == 1:  # the one-name output, JSON included, as it always was
        return _check(pdir, names[0], trust)
    every = not names
    targets = _everything(pdir) if every else [
        _Target(name, pdir, name) for name in dict.fromkeys(names)]  # twice: checked once
    checked: list[dict[str, Any]] = []
    lines: list[str] = []
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    for t in targets:
        if t.skip:
            skipped[t.label] = t.skip
            continue
        try:
            data, text = _check(t.pdir, t.name, trust)
        except SegmentNotFoundError as exc:
            if every:  # listed, then removed before its turn: nothing left to check
                skipped[t.label] = "removed before it was checked"
            else:
                errors[t.label] = _message(exc, t)
            continue
        except (ShmshareError, OSError) as exc:
            errors[t.label] = _message(exc, t)
            continue
        data["name"] = t.label
        checked.append(data)
        lines.append(t.label + text[len(t.name):])  # the text starts with the name
    lines += [f"skipped {label}: {why}" for label, why in skipped.items()]
    counts = [f"{n} {what}" for n, what in ((len(checked), "OK"), (len(errors), "failed"),
                                             (len(skipped), "skipped")) if n]
    lines.append(f"check in {pdir}: " + (", ".join(counts) if counts else "nothing to check"))
    data = {"project_dir": str(pdir), "checked": checked, "skipped": skipped, "errors": errors}
    text = "\n".join(lines)
    if errors:
        raise SomeFailed(data, text, list(errors.values()))
    return data, text


def _everything(pdir: Path) -> list[_Target]:
    """Every object ls lists, in its order; stale key files marked to skip."""
    dirs = [("", pdir)]
    for sub in OWNED_SUBDIRS:
        base = pdir / sub
        dirs += [(f"{sub}/{owned.name}/", owned)
                 for owned in (sorted(base.iterdir()) if base.is_dir() else [])]
    targets = []
    for prefix, where in dirs:
        for entry in list_entries(where):
            skip = entry.status if entry.status.startswith(_UNCHECKABLE) else ""
            if entry.status == "stale key file":
                skip += " (gc removes it)"
            targets.append(_Target(prefix + entry.name, where, entry.name, skip))
    return targets


def _message(exc: BaseException, t: _Target) -> str:
    message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    # A Manager's object is named by its directory too: its bare name is not unique.
    return message if t.label == t.name else f"{t.label}: {message}"


def _check(pdir: Path, name: str, trust: bool) -> tuple[Any, str]:
    """Open the object with its own type and run its structural check."""
    from ..objects.heap_object import HeapObject
    from ..objects.shared_object import check, kind_class, stats

    before = info(pdir, name)
    kind, lpid_before = before["kind"], before["last_pid"]
    _mark_swept(pdir)
    cls = kind_class(kind)
    if cls is None or not issubclass(cls, HeapObject):
        _verify_header(pdir, name, lpid_before)
        data = {"name": name, "kind": kind, "ok": True, "checked": "header"}
        return data, f"{name}: {kind}, header verified (it has no heap to check)"
    obj = cls._reopen(("named", kind, name, str(pdir)), trust)
    try:
        check(obj)
        stats_ = stats(obj)
    finally:
        _detach_as_inspector(obj, lpid_before)
    data = {"name": name, "kind": kind, "ok": True, "checked": "heap and index",
            "key": before["key"], **stats_}
    segments = stats_["extents"]  # the heap's regions: the main segment is the first
    return data, (f"{name}: {kind} OK — {stats_['entries']} entries in {segments} "
                  f"segment(s) ({segments - 1} extent(s)), {stats_['bytes_used']} of "
                  f"{stats_['bytes_total']} bytes used")


def _verify_header(pdir: Path, name: str, lpid_before: int) -> None:
    """Attach, verify the identity header (find_existing does), and detach as an inspector."""
    path = key_file_path(pdir, name)
    with KeyFile.locked(path, create=False) as kf:
        record = kf.read() if kf is not None else None
        found = find_existing(kf, record, name) if kf is not None and record else None
        if found is None:
            raise SegmentNotFoundError(
                2, f"no object named {name!r} in {str(pdir)!r} (or its header is not one "
                "of shmshare's)", str(path))
        try:
            view = found.attachment.memoryview()
            try:
                note_inspection(view, os.getpid(), lpid_before)
            finally:
                view.release()
        finally:
            found.attachment.detach()


def _mark_swept(pdir: Path) -> None:
    # The first open in a process sweeps its project directory; check is an
    # inspection and must remove nothing, so it counts as swept already.
    from ..naming import attach

    attach._SWEPT.add(pdir)


def _detach_as_inspector(obj: Any, lpid_before: int) -> None:
    """Detach leaving the object as it was: record in the header that this detach is
    an inspection, not a use (gc then reports the last real user), and never remove
    it as its last user would (an orphan stays for gc to judge)."""
    seg = obj._seg
    att = seg._attachment()
    if not att.readonly:
        view = att.memoryview()
        try:
            note_inspection(view, os.getpid(), lpid_before)
        finally:
            view.release()
    from ..objects.shared_object import detach

    seg._b.persist = True  # this process's detach only: the header is unchanged
    detach(obj)
