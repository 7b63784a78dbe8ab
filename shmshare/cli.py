"""``python -m shmshare`` / ``shmshare``: see and clean what is in shared memory.

Verbs: ``ls``, ``info NAME``, ``rm NAME``, ``check NAME``, ``gc [--dry-run]``; every verb takes
``--project-dir`` and ``--json``.  Errors print one line to stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import ShmshareError
from .naming.dirs import OWNED_SUBDIRS, dead_owner_dirs, remove_all
from .naming.inventory import info, list_entries, remove
from .naming.keys import resolve_project_dir
from .naming.lifecycle import SweepResult, sweep, sweep_extents

__all__ = ["main"]


def _common(default: object) -> argparse.ArgumentParser:
    # The options are accepted before and after the verb; the verb's copy uses
    # SUPPRESS so that it does not overwrite a value given before the verb.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-dir", metavar="DIR", default=default,
                        help="project directory holding the key files "
                             "(default: $SHMSHARE_DIR, $XDG_RUNTIME_DIR/shmshare or "
                             "/tmp/shmshare-<uid>)")
    common.add_argument("--json", action="store_true", default=default,
                        help="print JSON for scripts")
    return common


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shmshare", description=__doc__.splitlines()[0],
                                parents=[_common(None)])
    common = _common(argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"shmshare {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    sub.add_parser("ls", parents=[common], help="list the objects of a project directory")
    pi = sub.add_parser("info", parents=[common], help="show one object's header and state")
    pi.add_argument("name")
    pr = sub.add_parser("rm", parents=[common], help="remove an object now")
    pr.add_argument("name")
    pc = sub.add_parser("check", parents=[common],
                        help="verify an object's heap and index invariants")
    pc.add_argument("name")
    pc.add_argument("--trust", action="store_true",
                    help="open it even if another user owns it or may write to it")
    pg = sub.add_parser("gc", parents=[common],
                        help="remove what crashed processes left (orphans, stale key files)")
    pg.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    return p


_LS_COLUMNS = ["name", "kind", "key", "shmid", "owner", "perms", "bytes", "nattch", "status",
               "creator_alive"]


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "key":
        return f"{value & 0xFFFFFFFF:#010x}"
    if column == "creator_alive":
        return "yes" if value else "no"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(c, r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    """Do the verb; return (JSON-able result, human-readable text)."""
    pdir: Path = resolve_project_dir(args.project_dir)
    if args.verb == "ls":
        rows = [e.as_dict() for e in list_entries(pdir)]
        text = _table(rows, _LS_COLUMNS) if rows else f"no objects in {pdir}"
        return {"project_dir": str(pdir), "objects": rows}, text
    if args.verb == "info":
        data = info(pdir, args.name)
        width = max(len(k) for k in data)
        return data, "\n".join(f"{k.ljust(width)}  {v}" for k, v in data.items())
    if args.verb == "rm":
        attached = remove(pdir, args.name)
        note = (f" ({attached} attached process(es) keep access until they detach)"
                if attached else "")
        return {"removed": args.name, "still_attached": attached}, f"removed {args.name}{note}"
    if args.verb == "check":
        return _check(pdir, args.name, args.trust)
    assert args.verb == "gc"
    results = sweep(pdir, dry_run=args.dry_run)
    results += sweep_extents(dry_run=args.dry_run)
    # Directories owned by a Manager or a pytest run whose process is gone.
    for sub in OWNED_SUBDIRS:
        for owned in dead_owner_dirs(pdir / sub):
            if not args.dry_run:
                remove_all(owned)
            results.append(SweepResult(f"{sub}/{owned.name}", "removed",
                                       "its owner process is gone"))
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{verb} {r.name}: {r.reason}" for r in results if r.action != "kept"]
    lines += [f"kept {r.name}: {r.reason}" for r in results if r.action == "kept"]
    data = {"project_dir": str(pdir), "dry_run": args.dry_run,
            "results": [{"name": r.name, "action": r.action, "reason": r.reason}
                        for r in results]}
    return data, "\n".join(lines) if lines else f"nothing to collect in {pdir}"


def _check(pdir: Path, name: str, trust: bool) -> tuple[Any, str]:
    """Open the object with its own type and run its structural check."""
    from .objects.heap_object import HeapObject
    from .objects.shared_object import check, detach, kind_class, stats

    kind = info(pdir, name)["kind"]
    cls = kind_class(kind)
    if cls is None or not issubclass(cls, HeapObject):
        data = {"name": name, "kind": kind, "ok": True, "checked": "header"}
        return data, f"{name}: {kind}, header verified (it has no heap to check)"
    obj = cls._reopen(("named", kind, name, str(pdir)), trust)
    try:
        check(obj)
        stats_ = stats(obj)
    finally:
        detach(obj)
    data = {"name": name, "kind": kind, "ok": True, "checked": "heap and index", **stats_}
    return data, (f"{name}: {kind} OK — {stats_['entries']} entries, {stats_['extents']} "
                  f"extent(s), {stats_['bytes_used']} of {stats_['bytes_total']} bytes used")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        data, text = _run(args)
    except (ShmshareError, OSError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"shmshare {args.verb}: error: {message}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    return 0
