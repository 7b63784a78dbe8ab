"""python -m shmshare / shmshare: see and clean what is in shared memory.

Verbs: ls, info NAME, rm NAME..., check [NAME...], gc [--dry-run]; every verb takes
--project-dir and --json.  ls, info and gc --dry-run only read (the key files
and the kernel's view): they attach nothing and change nothing.  check must
attach to walk a heap, and records itself so gc does not take it for a user.
Errors print one line to stderr (a JSON object on stdout with --json) and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import SegmentNotFoundError, ShmshareError
from ..naming.dirs import OWNED_SUBDIRS, dead_owner_dirs, owner_of, remove_all
from ..naming.inventory import (
    extent_summary,
    info,
    list_entries,
    remove,
)
from ..naming.lifecycle import SweepResult, sweep, sweep_extents
from ..naming.project_dir import default_project_dir, resolve_project_dir
from ..naming.unreachable import sweep_unreachable

__all__ = ["main"]

_DIR_HELP = ("project directory holding the key files (default: $SHMSHARE_DIR, "
             "$XDG_RUNTIME_DIR/shmshare or /dev/shm/shmshare-<uid>); it must exist")

_VERBS = {
    "ls": ("list the objects of a project directory",
           "List every object of the project directory, with its key (hex), shmid, owner, "
           "permissions, payload bytes, heap extents (the further segments a grown object "
           "added) and total bytes with them, attach count, status, creator pid, whether "
           "the creator is alive, and age. Objects of Managers and pytest runs (in managers/ and "
           "pytest-runs/) are listed too, as DIR/NAME, marked as orphans when their owner "
           "process is gone. Heap extents (the extra segments grown objects add, which ipcs "
           "shows with small keys) are counted at the end. Reads only the key files and the "
           "kernel's view: attaches nothing."),
    "info": ("show one object's kernel state",
             "Show one object's key file record (kind, proj_id, persist) and the kernel's view "
             "of its segment (shmid_ds: sizes, owner, mode, attach count, creator and last "
             "pid, times in ISO 8601). Attaches nothing, so a later gc still sees the real "
             "last user; 'check' verifies the identity header."),
    "rm": ("remove objects now",
           "Remove each object now: its segment and heap extents (IPC_RMID), then its key "
           "file. Processes still attached keep access until they detach; the output says "
           "how many. A name that cannot be removed is an error line, and the others are "
           "still removed; the exit status is then 1."),
    "check": ("verify objects' heap and index invariants (every object without a name)",
              "Open each object with its own type and verify its heap and index (dicts, "
              "lists, sets, namespaces, values, queues, sync objects), with its extents and "
              "total bytes; for other kinds, verify the identity header. With no name, check "
              "every object ls lists, those of Managers and pytest runs too, skipping stale "
              "key files. An object that fails is an error line, and the others are still "
              "checked; the exit status is then 1. The one verb that must attach: it records "
              "itself in each header so that gc does not report it as the last user, and it "
              "removes nothing."),
    "gc": ("remove what crashed processes left (orphans, stale key files)",
           "Remove non-persistent objects nobody is attached to, key files that name no "
           "segment, the directories of Managers and pytest runs whose owner is gone, and "
           "heap extents whose object is gone, and, machine-wide, this user's objects whose "
           "key file is gone (their project directory was deleted): non-persistent ones, and "
           "persistent ones whose directory still exists; with --unreachable also persistent "
           "ones whose directory is gone (deleted or moved: moved objects still open through "
           "the new path, so this is yours to say). Ends with a summary line. With --dry-run, "
           "only say what would be removed: a dry run attaches nothing, so it does not look "
           "for objects whose key file is gone (finding them means reading their headers)."),
}


def _common(default: object) -> argparse.ArgumentParser:
    # The options are accepted before and after the verb; the verb's copy uses
    # SUPPRESS so that it does not overwrite a value given before the verb.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-dir", metavar="DIR", default=default, help=_DIR_HELP)
    common.add_argument("--json", action="store_true", default=default,
                        help="print JSON for scripts (errors too)")
    return common


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shmshare", parents=[_common(None)],
        description="See and clean what shmshare keeps in System V shared memory.",
        epilog="ls, info and gc --dry-run only read: they attach nothing and change nothing. "
               "Run 'shmshare VERB --help' for what each verb does.")
    common = _common(argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"shmshare {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs = {verb: sub.add_parser(verb, parents=[common], help=short, description=long)
             for verb, (short, long) in _VERBS.items()}
    verbs["info"].add_argument("name", help="the object's name")
    verbs["rm"].add_argument("name", nargs="+", help="the objects' names (one or more)")
    verbs["check"].add_argument("name", nargs="*",
                                help="the objects' names (none: every object ls lists)")
    verbs["check"].add_argument("--trust", action="store_true",
                                help="open it even if another user owns it or may write to it")
    verbs["gc"].add_argument("--dry-run", action="store_true",
                             help="only say what would be removed (attaches nothing)")
    verbs["gc"].add_argument("--unreachable", action="store_true",
                             help="also remove persistent objects whose project directory is "
                                  "gone (deleted, or moved: then they are lost to it)")
    return p


_LS_COLUMNS = ["name", "kind", "key", "shmid", "owner", "perms", "bytes", "extents",
               "total_bytes", "nattch", "status", "creator_pid", "creator_alive", "age"]


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(column: str, row: dict[str, Any]) -> str:
    if column == "age":
        return _age(row.get("age_seconds"))
    value = row[column]
    if value is None:
        return "-"
    if column == "creator_alive":
        return "yes" if value else "no"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(c, r) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _project_dir(arg: str | None) -> Path:
    """The project directory, which must exist: a mistyped --project-dir is an
    error, never a new directory."""
    path = Path(os.path.abspath(arg if arg is not None else default_project_dir()))
    if not path.is_dir():
        raise SegmentNotFoundError(
            2, f"no project directory {str(path)!r} (nothing has been created there; check "
            "--project-dir or $SHMSHARE_DIR)", str(path))
    return resolve_project_dir(path)  # exists: only checks owner and symlinks


def _owned_rows(pdir: Path) -> list[dict[str, Any]]:
    """The objects in the directories of Managers and pytest runs, as DIR/NAME rows."""
    rows = []
    for sub in OWNED_SUBDIRS:
        base = pdir / sub
        for owned in sorted(base.iterdir()) if base.is_dir() else []:
            owner, alive = owner_of(owned)
            gone = alive is False
            for entry in list_entries(owned):
                row = entry.as_dict()
                row["name"] = f"{sub}/{owned.name}/{entry.name}"
                if gone:
                    row["status"] = f"orphan (owner pid {owner} gone)"
                rows.append(row)
    return rows


def _ls(pdir: Path) -> tuple[Any, str]:
    rows = [e.as_dict() for e in list_entries(pdir)] + _owned_rows(pdir)
    ext = extent_summary()
    data = {"project_dir": str(pdir), "objects": rows,
            "extents": {"segments": ext.count, "bytes": ext.bytes,
                        "unattached": ext.unattached}}
    text = _table(rows, _LS_COLUMNS) if rows else f"no objects in {pdir}"
    if ext.count:
        text += "\n\n" + textwrap.fill(
            f"+ {ext.count} heap extent segment(s) of yours, {ext.bytes} bytes "
            f"({ext.unattached} with nobody attached), on the whole machine: the extra "
            "segments grown objects add, which ipcs lists with keys below 0x01000000. "
            "The extents column counts each object's own; gc removes those whose "
            "object is gone.", width=88)
    return data, text


def _gc(pdir: Path, dry_run: bool, unreachable: bool = False) -> tuple[Any, str]:
    results = sweep(pdir, dry_run=dry_run)
    results += sweep_extents(dry_run=dry_run)
    if not dry_run:  # it must attach to read headers (see its module)
        results += sweep_unreachable(unreachable=unreachable)
    # Directories owned by a Manager or a pytest run whose process is gone.
    for sub in OWNED_SUBDIRS:
        for owned in dead_owner_dirs(pdir / sub):
            kept = [] if dry_run else remove_all(owned)
            if kept:
                results.append(SweepResult(f"{sub}/{owned.name}", "kept",
                                           "its owner process is gone, but "
                                           + "; ".join(kept)))
                continue
            results.append(SweepResult(f"{sub}/{owned.name}",
                                       "would-remove" if dry_run else "removed",
                                       "its owner process is gone"))
    acted = [r for r in results if r.action != "kept"]
    lines = [f"{r.action.replace('-', ' ')} {r.name}: {r.reason}" for r in acted]
    lines += [f"kept {r.name}: {r.reason}" for r in results if r.action == "kept"]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.action] = counts.get(r.action, 0) + 1
    summary = ", ".join(f"{n} {a.replace('-', ' ')}" for a, n in sorted(counts.items()))
    lines.append(f"gc{' --dry-run' if dry_run else ''} in {pdir}: "
                 + (summary if summary else "nothing to collect"))
    data = {"project_dir": str(pdir), "dry_run": dry_run,
            "results": [{"name": r.name, "action": r.action, "reason": r.reason}
                        for r in results],
            "summary": counts}
    return data, "\n".join(lines)


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    """Do the verb; return (JSON-able result, human-readable text)."""
    pdir = _project_dir(args.project_dir)
    if args.verb == "ls":
        return _ls(pdir)
    if args.verb == "info":
        data = info(pdir, args.name)
        width = max(len(k) for k in data)
        return data, "\n".join(f"{k.ljust(width)}  {_info_cell(k, v)}"
                               for k, v in data.items())
    if args.verb == "rm":
        return _rm(pdir, args.name)
    if args.verb == "check":
        from .check import check_objects  # it imports the object types

        return check_objects(pdir, args.name, args.trust)
    assert args.verb == "gc"
    return _gc(pdir, args.dry_run, args.unreachable)


class SomeFailed(Exception):
    """A verb on several names that failed for some: what it did, and why not the rest."""

    def __init__(self, data: Any, text: str, errors: list[str]) -> None:
        super().__init__(errors)
        self.data, self.text, self.errors = data, text, errors


def _rm(pdir: Path, names: list[str]) -> tuple[Any, str]:
    """Remove each name in turn; one that cannot be removed does not stop the others."""
    if len(names) == 1:  # the one-name output, JSON included, as it always was
        attached = remove(pdir, names[0])
        return ({"removed": names[0], "still_attached": attached},
                f"removed {names[0]}{_still(attached)}")
    removed: list[str] = []
    still: dict[str, int] = {}
    errors: dict[str, str] = {}
    for name in dict.fromkeys(names):  # a name given twice is removed once
        try:
            still[name] = remove(pdir, name)
        except (ShmshareError, OSError) as exc:
            errors[name] = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            continue
        removed.append(name)
    data = {"removed": removed, "still_attached": still, "errors": errors}
    text = "\n".join(f"removed {name}{_still(still[name])}" for name in removed)
    if errors:
        raise SomeFailed(data, text, list(errors.values()))
    return data, text


def _still(attached: int) -> str:
    return (f" ({attached} attached process(es) keep access until they detach)"
            if attached else "")


def _info_cell(key: str, value: Any) -> str:
    if key == "age_seconds" and value is not None:
        return f"{value} ({_age(value)})"
    return "-" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        data, text = _run(args)
    except SomeFailed as part:
        if args.json:
            print(json.dumps(part.data, indent=2, default=str))
        else:
            if part.text:
                print(part.text)
            for message in part.errors:
                print(f"shmshare {args.verb}: error: {message}", file=sys.stderr)
        return 1
    except (ShmshareError, OSError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if args.json:
            print(json.dumps({"error": message, "verb": args.verb, "type": type(exc).__name__,
                              "errno": getattr(exc, "errno", None)}, indent=2))
        else:
            print(f"shmshare {args.verb}: error: {message}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    return 0
