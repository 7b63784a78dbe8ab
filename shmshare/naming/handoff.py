"""Handing a shared object to another process: its segment lives until the receiver attaches.

An anonymous segment is freed by the kernel when its last attachment goes,
and a named non-persistent one is removed by its last detach.  A pickled
reference is only a name or an id, so an object that a worker returns
(``def f(i): d = SharedDict(); return d``) would be gone as soon as the
worker drops it — before the parent unpickles it.

So pickling *pins*: the sending process keeps the segment attached until a
receiver has attached it.  Every attach by unpickling adds one to a *claims*
word in the segment's header; a pin is dropped once the claims have grown
by as many as the pickles made since it was taken (checked whenever this
process pins again).  A multiprocessing child, about to exit while pins are
still unclaimed, waits for their receivers, at most ``CLAIM_WAIT`` seconds
(a Pool or ProcessPoolExecutor parent unpickles every result as it comes,
so it claims at once; an object put on a queue nobody reads must not hold
its sender forever).  A receiver that comes later finds the object gone and
gets :class:`~shmshare.errors.ObjectGoneError` at once, never an OSError
(which multiprocessing's result threads take for a closed pipe, and hang).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from .._core import fork_hooks
from .._core.slices import Deadline, pauses

__all__ = ["CLAIM_WAIT", "add_claim", "drop_claimed", "expect_handoff", "pin", "read_claims"]

CLAIM_WAIT = 10.0  # seconds an exiting multiprocessing child waits for its receivers

_CLAIMS_AT = 2080  # a u64 in the header page, after the PID-namespace and inspection words


def add_claim(att: Any) -> None:
    """Count one attach by unpickling: atomically, since receivers claim at once
    (a lost increment would hold the sender's pin until it exits)."""
    att.atomic_add(_CLAIMS_AT, 1)


def read_claims(buf: memoryview) -> int:
    word = buf[_CLAIMS_AT:_CLAIMS_AT + 8].cast("Q")
    try:
        return int(word[0])
    finally:
        word.release()


class _Pin:
    __slots__ = ("baseline", "claims", "holder", "pickles", "pid")

    def __init__(self, holder: Any, claims: Callable[[], int | None]) -> None:
        self.holder = holder  # keeps the segment attached while the pin exists
        self.claims = claims  # the claims word now; None once the segment is gone
        self.baseline = claims()
        self.pickles = 0
        self.pid = os.getpid()  # a forked child inherits pins but does not wait for them

    def claimed(self) -> bool:
        now = self.claims()
        if now is None or self.baseline is None:
            return True  # detached or removed: nothing left to keep alive
        return (now - self.baseline) % (1 << 64) >= self.pickles


_lock = threading.Lock()
_pins: dict[int, _Pin] = {}
_exit_hook_pid = 0  # the process that installed the exit wait (forked children install again)


def drop_claimed() -> None:
    """Let go of the pins whose receivers have all attached (at every pin, and
    after every claim this process makes: a round trip inside one process)."""
    if not _pins:
        return
    with _lock:
        for k in [k for k, p in _pins.items() if p.claimed()]:
            del _pins[k]


def pin(key: int, holder: Any, claims: Callable[[], int | None]) -> None:
    """Keep ``holder`` (a Segment) alive until one more receiver has claimed it."""
    with _lock:
        for k in [k for k, p in _pins.items() if p.claimed()]:
            del _pins[k]
        p = _pins.get(key)
        if p is None:
            p = _pins[key] = _Pin(holder, claims)
        p.pickles += 1
    _install_exit_wait()


def _install_exit_wait() -> None:
    """Wait for receivers when this multiprocessing child exits.

    fork and forkserver children leave through ``os._exit``, after
    multiprocessing's exit finalizers: this one runs at exitpriority -7, after
    a Queue's feeder thread is joined (-5) -- which is when an object put just
    before exiting gets pickled, and pinned -- and before the segments are
    released (-10, see segment.py).  Those finalizers are collected once, so
    this one is installed early: at the child's start (an after-fork hook),
    when the child first holds a shared object (expect_handoff), or at the
    first pin.  spawn children run no after-fork hooks and leave
    through the interpreter's exit: there an atexit handler, registered after
    the segments' own release (naming.releases) and so run before it, waits.
    """
    global _exit_hook_pid
    import multiprocessing
    import multiprocessing.util as mpu

    if _exit_hook_pid == os.getpid() or multiprocessing.parent_process() is None:
        return
    _exit_hook_pid = os.getpid()
    mpu.Finalize(None, _await_claims, exitpriority=-7)
    # atexit runs last-registered first: make sure the segments' release is
    # registered before ours.  (Imported here: releases imports what imports us.)
    from .releases import hook_exit

    hook_exit()
    atexit.register(_await_claims)


def expect_handoff() -> None:
    """This process holds a shared object it may hand on (it made or received one).

    In a multiprocessing child, install the exit wait now rather than at the
    first pickle: an object put on a Queue just before the child returns may
    be pickled by the Queue's feeder thread only while the exit's finalizers
    run -- they were collected before, so a wait installed then never runs,
    and the receiver found the object gone (seen under load, forkserver).
    Cheap elsewhere: multiprocessing is only looked up, never imported.
    """
    if _exit_hook_pid == os.getpid():
        return
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        _install_exit_wait()


def _await_claims() -> None:
    # No event to wait on: the receivers are other processes.
    for _ in pauses(Deadline(CLAIM_WAIT), first=0.001):
        with _lock:
            for k in [k for k, p in _pins.items() if p.claimed()]:
                del _pins[k]
            if not any(p.pid == os.getpid() for p in _pins.values()):
                return


def _after_fork_in_child() -> None:
    # Another thread may have held the lock at fork.  The inherited pins stay
    # (dropping them here would release segments inside the fork hook); they
    # go when claimed, and this child never waits for them.
    global _lock
    _lock = threading.Lock()


fork_hooks.at_fork(after_in_child=_after_fork_in_child)
fork_hooks.multiprocessing_child(_install_exit_wait)
