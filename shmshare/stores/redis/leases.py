"""Leases held by this process, renewed by one thread while the process lives.

A lease is a server-side claim with a deadline (a lock hold, a semaphore
permit, a queue consumer).  The renewer thread extends each lease a third of
its length before it would end; a process that is killed stops renewing, so
its claims end by themselves one lease later.  A process that is *paused*
past its lease (SIGSTOP, a long GC pause, a network partition) finds on
renewal that the server no longer knows it: the lease is marked lost, and
the object that holds it raises LockLostError at its next use.  That next use
does not wait for the renewer thread to have run: a lease whose last renewal
(or taking) is older than 90 % of its length is confirmed with the server
first (:meth:`Lease.confirm`), so a holder continued after a pause learns at
once that it lost the lease.

The thread is not inherited: a forked child holds none of its parent's
leases (they are the parent's), so the registry is emptied in the child.
At interpreter exit the thread is stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections.abc import Callable

from shmshare._core import fork_hooks

__all__ = ["Lease", "held", "hold", "release"]


class Lease:
    """One held lease: ``renew()`` returns False once the server has dropped it."""

    def __init__(self, renew: Callable[[], bool], length: float,
                 taken: float | None = None) -> None:
        self.renew = renew
        self.length = length
        self.lost = False
        now = time.monotonic()
        self.next_renewal = now + length / 3
        self.last_ok = now if taken is None else taken  # when the last renewal was sent
        self.valid_until = self.last_ok + length * 0.9
        self.renewer: _Renewer | None = None  # set by hold()

    def renewed(self, started: float) -> None:
        """A renewal sent at ``started`` (monotonic) succeeded."""
        self.last_ok = max(self.last_ok, started)
        self.valid_until = max(self.valid_until, started + self.length * 0.9)

    def confirm(self) -> bool:
        """False once the lease is known lost; asks the server if it may have ended.

        Within 90 % of a lease after the last renewal was sent the server cannot have
        dropped it; past that (this process was paused, or cut off), one renewal says.
        """
        if self.lost:
            return False
        started = time.monotonic()
        if started < self.valid_until:
            return True
        if self.renew():
            self.renewed(started)
            return True
        self.lost = True
        return False


class _Renewer:
    def __init__(self) -> None:
        self.leases: set[Lease] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self.lock:
            self.leases.add(lease)
            if self.thread is None and not self.stopping:
                self.thread = threading.Thread(target=self._run, name="shmshare-lease-renewer",
                                               daemon=True)
                self.thread.start()
        self.wake.set()

    def remove(self, lease: Lease) -> None:
        with self.lock:
            self.leases.discard(lease)

    def _run(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            with self.lock:
                due = [lease for lease in self.leases if lease.next_renewal <= now]
            for lease in due:
                started = time.monotonic()
                try:
                    alive = lease.renew()
                except Exception:
                    # The server is unavailable (or answered with an error): try again
                    # soon.  Never let one lease end the thread that renews every lease
                    # of this process; and once a whole lease has passed since the last
                    # renewal that worked, give up on it (lost: its holder is told at its
                    # next use), so that a store that stays unreachable does not take
                    # this thread's time from the others for good.
                    if time.monotonic() >= lease.last_ok + lease.length:
                        lease.lost = True
                        self.remove(lease)
                    else:
                        lease.next_renewal = time.monotonic() + min(0.2, lease.length / 10)
                    continue
                if alive:
                    lease.renewed(started)
                    lease.next_renewal = time.monotonic() + lease.length / 3
                else:
                    lease.lost = True
                    self.remove(lease)
            with self.lock:
                pending = [lease.next_renewal for lease in self.leases]
            wait = max(0.0, min(pending) - time.monotonic()) if pending else 60.0
            self.wake.wait(wait)
            self.wake.clear()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


# One renewer (one thread) per group -- per store url for the store's own objects -- so
# that a store that stops answering (each renewal then waits a socket timeout) does not
# hold up the renewal of leases on other stores.
_renewers: dict[object, _Renewer] = {}
_renewers_lock = threading.Lock()


def _renewer_for(group: object) -> _Renewer:
    with _renewers_lock:
        renewer = _renewers.get(group)
        if renewer is None:
            renewer = _renewers[group] = _Renewer()
        return renewer


def _reset_after_fork() -> None:
    global _renewers_lock
    _renewers.clear()
    _renewers_lock = threading.Lock()


def _stop_all() -> None:
    renewers = list(_renewers.values())
    for r in renewers:  # all told first, so that the joins below overlap
        r.stopping = True
        r.wake.set()
    for r in renewers:
        r.stop()


fork_hooks.at_fork(after_in_child=_reset_after_fork)
atexit.register(_stop_all)


def hold(renew: Callable[[], bool], length: float, taken: float | None = None,
         group: object = None) -> Lease:
    """Start renewing a lease of ``length`` seconds that the caller has just taken
    (by a request sent at monotonic time ``taken``; now if not given).  Leases of one
    ``group`` (pass the store's url) are renewed by one thread, apart from the others."""
    lease = Lease(renew, length, taken)
    renewer = lease.renewer = _renewer_for(group)
    renewer.add(lease)
    return lease


def release(lease: Lease) -> None:
    """Stop renewing ``lease`` (the caller gives it back to the server itself)."""
    renewer = lease.renewer
    if renewer is not None:
        with contextlib.suppress(Exception):
            renewer.remove(lease)


def held() -> set[Lease]:
    """Every lease this process is renewing now (for checks and tests)."""
    out: set[Lease] = set()
    for r in list(_renewers.values()):
        with r.lock:
            out |= r.leases
    return out
