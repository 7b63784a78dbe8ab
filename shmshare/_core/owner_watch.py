"""``OwnerWatch``: telling a damaged lock word from a slow holder during a long wait.

Polled between the slices of every lock wait of the core (:mod:`.slices`).
It reads ``/proc``, the only way to ask whether a thread id names a thread
that could hold a lock inside a given segment.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import CorruptSegmentError

__all__ = ["OwnerWatch"]


def _could_hold(tid: int, shmid: int) -> bool:
    """False if thread ``tid`` cannot hold a lock inside segment ``shmid``: it
    does not exist, or its process does not have the segment attached."""
    if tid < 0:
        return False             # a lock word with flag bits but no thread id
    try:
        with open(f"/proc/{tid}/maps", encoding="ascii", errors="replace") as maps:
            for line in maps:    # "... 00:01 <shmid>   /SYSV<key> (deleted)"
                fields = line.split(maxsplit=5)
                if len(fields) > 5 and fields[4] == str(shmid) and fields[5].startswith("/SYSV"):
                    return True
    except FileNotFoundError:
        return False
    except OSError:              # not ours to read: only a kernel thread cannot
        return not _kernel_thread(tid)
    return False


_PF_KTHREAD = 0x00200000


def _kernel_thread(tid: int) -> bool:
    try:
        with open(f"/proc/{tid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        flags = int(stat.rsplit(")", 1)[1].split()[6])   # field 9, after "(comm)"
    except (OSError, IndexError, ValueError):
        return False
    return bool(flags & _PF_KTHREAD)


class OwnerWatch:
    """Tells a damaged lock word from a slow holder during a long lock wait.

    A robust mutex whose owner dies is marked by the kernel, and the next
    locker is told at once (EOWNERDEAD).  A lock word naming a thread that
    does not exist, or whose process does not even have the segment
    attached, is therefore damage (a stray write, a bad copy), and every
    locker would wait forever.  Call :meth:`poll` on each wait slice: from
    ``after`` seconds on, if the owner named by ``owner()`` has stayed such
    a thread for ``confirm`` seconds -- and ``same_namespace()`` says every
    user of the segment shares our PID namespace, so that thread ids mean
    the same to all; None: unknown, never raise) -- it raises
    CorruptSegmentError.
    """

    __slots__ = ("_owner", "_same_ns", "_shmid", "_start", "_suspect", "_what", "after",
                 "confirm")

    def __init__(self, owner: Callable[[], int], shmid: int,
                 same_namespace: Callable[[], bool] | None, what: str, *,
                 after: float = 2.0, confirm: float = 1.0) -> None:
        self._owner = owner
        self._shmid = shmid
        self._same_ns = same_namespace
        self._what = what
        self._start: float | None = None
        self._suspect: tuple[int, float] | None = None
        self.after = after
        self.confirm = confirm

    def poll(self) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        if now - self._start < self.after:
            return
        tid = self._owner()
        if (not tid or _could_hold(tid, self._shmid) or self._same_ns is None
                or not self._same_ns()):
            self._suspect = None
            return
        if self._suspect is None or self._suspect[0] != tid:
            self._suspect = (tid, now)
            return
        if now - self._suspect[1] >= self.confirm:
            raise CorruptSegmentError(
                f"{self._what}: the lock names thread {tid} as its holder, which does not "
                f"exist or does not have the segment attached: the lock word is damaged, "
                f"and every locker would wait forever. Remove the object and create it "
                f"again")
