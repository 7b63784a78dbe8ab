"""Waiting in slices: the one way shmshare waits for a lock or a change.

A C call that may block gets at most ``SLICE_NS`` to wait and then returns
(ETIMEDOUT/EBUSY), so Python gets control back at least every 0.1 s: Ctrl-C
is honoured, deadlines are kept, and a long wait can check whether the
lock's owner still exists (:class:`~shmshare._core.owner_watch.OwnerWatch`).
Waits with no C call to block in poll instead, paced by :func:`pauses`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Protocol

from .results import BUSY

__all__ = ["SLICE_NS", "Deadline", "pauses", "wait_in_slices"]

SLICE_NS = 100_000_000  # nanoseconds one C call may wait


class _Watch(Protocol):
    def poll(self) -> None: ...


class Deadline:
    """The end of a wait of ``timeout`` seconds (None: no end; 0: try once)."""

    __slots__ = ("end",)

    def __init__(self, timeout: float | None) -> None:
        self.end = None if timeout is None else time.monotonic() + max(0.0, timeout)

    def slice_ns(self) -> int:
        """How long the next C call may wait: a slice, or what is left (0 once over)."""
        end = self.end
        if end is None:
            return SLICE_NS
        return min(SLICE_NS, max(0, int((end - time.monotonic()) * 1e9)))

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def remaining(self) -> float | None:
        """Seconds left (never below 0); None for a wait without end."""
        return None if self.end is None else max(0.0, self.end - time.monotonic())


def wait_in_slices(call: Callable[[int], int], timeout: float | None,
                   watch: Callable[[], _Watch] | None = None) -> int:
    """``call(ns)`` until it returns a code other than busy or ``timeout`` runs out;
    that last code.  ``watch()`` makes the watch polled between slices (made on
    the first busy slice: an uncontended call costs nothing more)."""
    deadline = Deadline(timeout)
    rc = call(deadline.slice_ns())
    watcher = None
    while rc in BUSY and not deadline.passed():
        if watch is not None:
            if watcher is None:
                watcher = watch()
            watcher.poll()
        rc = call(max(1, deadline.slice_ns()))
    return rc


def pauses(deadline: Deadline, first: float = 0.0005, most: float = 0.05) -> Iterator[None]:
    """Pacing for a wait with nothing to sleep on (a file lock, another process's
    progress): one step at once, then one after each pause, doubling from
    ``first`` to ``most`` seconds, until ``deadline`` has passed after a step."""
    delay = first
    while True:
        yield
        if deadline.passed():
            return
        time.sleep(delay)
        delay = min(delay * 2, most)
