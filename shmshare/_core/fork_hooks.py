"""The one fork-hook mechanism: what each layer does around ``os.fork()``.

A forked child is a copy of one thread of its parent: locks taken by other
threads, per-process tokens, "this thread holds it" records and pins all
describe the parent.  Every module that keeps such state registers here,
never with ``os.register_at_fork`` itself, so that the order is one rule:

* ``before`` hooks run in the reverse order of registration, ``after_in_child``
  and ``after_in_parent`` hooks in the order of registration (the order of
  ``os.register_at_fork``).  A module registers when it is imported, and it
  imports the layers below it first, so a child is put right bottom-up (the
  process table before the locks that name its tokens) and a parent is
  readied for the fork top-down.
* ``multiprocessing_child`` hooks run, in the order of registration, at the
  start of every child multiprocessing starts by fork or forkserver (its
  after-fork hooks), once ``multiprocessing`` is in use.

A hook that raises does not stop the others; the first exception is raised
after they have run (``os.fork`` reports it as unraisable).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["at_fork", "multiprocessing_child"]

Hook = Callable[[], None]

_before: list[Hook] = []
_after_in_child: list[Hook] = []
_after_in_parent: list[Hook] = []
_mp_child: list[Hook] = []


def at_fork(*, before: Hook | None = None, after_in_child: Hook | None = None,
            after_in_parent: Hook | None = None) -> Hook:
    """Register hooks around ``os.fork()``; returns a function that unregisters them."""
    added = [(hooks, fn) for hooks, fn in ((_before, before), (_after_in_child, after_in_child),
                                           (_after_in_parent, after_in_parent)) if fn is not None]
    for hooks, fn in added:
        hooks.append(fn)

    def remove() -> None:
        for hooks, fn in added:
            if fn in hooks:
                hooks.remove(fn)

    return remove


def multiprocessing_child(fn: Hook) -> None:
    """Run ``fn()`` at the start of each fork or forkserver child of multiprocessing."""
    _mp_child.append(fn)


def _run(hooks: list[Hook]) -> None:
    error: BaseException | None = None
    for fn in list(hooks):
        try:
            fn()
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error


class _Token:
    """What multiprocessing's after-fork registry keeps (by weak reference) for us."""


_TOKEN = _Token()
_mp_registered = False


def _run_before() -> None:
    # multiprocessing is hooked only once it is in use (it is imported before
    # any Process starts), just before a fork: importing it at import time
    # would cost every program's start-up (see tests/test_startup.py).
    global _mp_registered
    if not _mp_registered and "multiprocessing.util" in sys.modules:
        sys.modules["multiprocessing.util"].register_after_fork(
            _TOKEN, lambda _: _run(_mp_child))
        _mp_registered = True
    _run(_before[::-1])


os.register_at_fork(before=_run_before, after_in_child=lambda: _run(_after_in_child),
                    after_in_parent=lambda: _run(_after_in_parent))
