"""Every bound segment's release (:func:`.binding.release`), run exactly once: when
its owner asks (``Segment.detach``), when the owner is garbage collected, or at
exit -- atexit, and a multiprocessing child's exit (segment.py) -- whichever
comes first.

A weak reference with a callback and one dict, rather than ``weakref.finalize``:
this is on the path of every attach, where finalize's constructor (Python) cost
several microseconds.  ``dict.pop`` is what makes it once: whoever pops the
binding releases it, and nobody else finds it.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from typing import Any

from .binding import Binding, release

__all__ = ["hook_exit", "release_all", "release_now", "track"]

# The bindings not released yet, by a weak reference to their owner.
_PENDING: dict[weakref.ref[Any], Binding] = {}
_exit_hooked = False


def track(owner: object, binding: Binding) -> weakref.ref[Any]:
    """Release ``binding`` once ``owner`` is collected, or at exit; the key for
    :func:`release_now`."""
    ref = weakref.ref(owner, release_now)
    _PENDING[ref] = binding
    if not _exit_hooked:
        hook_exit()
    return ref


def release_now(ref: weakref.ref[Any], _pop: Any = _PENDING.pop) -> None:
    """Release the binding tracked as ``ref`` now, unless that was done already."""
    # (_pop bound once: a segment collected while the interpreter tears modules
    # down finds this module's globals gone; the exit release emptied it before.)
    b = _pop(ref, None)
    if b is not None:
        release(b)


def release_all() -> None:
    """Release every binding still pending, the latest first; an error in one is
    reported (as an exit hook's would be) and the others are still released."""
    while True:
        try:
            _, b = _PENDING.popitem()
        except KeyError:
            return
        try:
            release(b)
        except Exception:
            sys.excepthook(*sys.exc_info())


def hook_exit() -> None:
    """Register the release at interpreter exit, once: by the first tracked binding,
    or earlier by a hook that must run before it (atexit runs the latest first)."""
    global _exit_hooked
    if not _exit_hooked:
        _exit_hooked = True
        atexit.register(release_all)
