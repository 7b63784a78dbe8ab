"""SIGKILL torture of the Manager's primitives: holders killed at every recursion depth,
waiters killed inside wait.  0 double holders, 0 deadlocks; bounded to a few seconds."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
import warnings
from typing import Any

import pytest
from helpers import JOIN_TIMEOUT, fork_child, wait_child

import shmshare
from shmshare._core import proc

WORKERS = 3
SECONDS = 1.5


def _others_inside(slots: Any, me: int) -> int:
    """How many other live workers are inside at one instant, or 0 if no clean read.

    Each worker's pair of words is (token while inside, entries so far).  Two
    scans that read the same pairs prove every worker seen inside in both was
    inside over one common interval (between the first scan's last read and
    the second scan's first): a single scan could count a worker that had
    already left and then one that entered after it, and call that a double
    hold.  A worker counts only if it is still alive after the second scan.
    """
    others = [i for i in range(WORKERS) if i != me]
    for _ in range(3):
        first = [(slots[2 * i], slots[2 * i + 1]) for i in others]
        second = [(slots[2 * i], slots[2 * i + 1]) for i in others]
        if first == second:
            return sum(1 for t, _ in second if t and proc.alive(t))
    return 0


def _critical(prim: Any, slots: Any, me: int, limit: int, bad: Any, done: Any) -> None:
    """Inside the primitive: no more than ``limit`` live processes may be here."""
    slots[2 * me + 1] += 1
    slots[2 * me] = proc.token()
    if _others_inside(slots, me) >= limit:
        bad.value += 1
    for _ in range(50):
        pass
    slots[2 * me] = 0
    done.value += 1


def _lock_worker(kind: str, prim: Any, slots: Any, me: int, bad: Any, done: Any) -> int:
    warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)
    rnd = random.Random(os.getpid())
    while True:
        depth = rnd.randint(1, 4) if kind == "RLock" else 1
        if kind in ("Semaphore", "BoundedSemaphore"):
            with prim:
                _critical(prim, slots, me, 2, bad, done)
            continue
        for _ in range(depth):
            prim.acquire()
        _critical(prim, slots, me, 1, bad, done)
        for _ in range(depth):
            prim.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_holders_killed_at_random(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Workers hammer the primitive (RLock at depths 1-4, semaphores of 2 permits in
    `with`) while being SIGKILLed at random: never more holders than allowed, never stuck."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        prim = getattr(m, kind)(2) if "Semaphore" in kind else getattr(m, kind)()
        slots = mp.RawArray("Q", 2 * WORKERS)
        bad, done = mp.RawValue("Q", 0), mp.RawValue("Q", 0)
        pids = [fork_child(_lock_worker, kind, prim, slots, i, bad, done) for i in range(WORKERS)]
        rnd = random.Random(0)
        kills = 0
        end = time.monotonic() + SECONDS
        try:
            while time.monotonic() < end:
                time.sleep(rnd.uniform(0.002, 0.02))
                i = rnd.randrange(WORKERS)
                os.kill(pids[i], signal.SIGKILL)
                wait_child(pids[i])
                kills += 1
                pids[i] = fork_child(_lock_worker, kind, prim, slots, i, bad, done)
            before = done.value
            deadline = time.monotonic() + JOIN_TIMEOUT
            while done.value < before + 100 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert done.value >= before + 100, "no progress after the kills: deadlock"
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                wait_child(pid)
        assert bad.value == 0, f"{bad.value} double holds in {kills} kills"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)
            assert prim.acquire(timeout=JOIN_TIMEOUT)


def test_waiters_killed_inside_wait(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Event and Condition waiters SIGKILLed asleep in wait(): the live ones still wake."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        ev, cond = m.Event(), m.Condition()

        def ev_waiter() -> int:
            return 0 if ev.wait(JOIN_TIMEOUT) else 1

        def cond_waiter() -> int:
            with cond:
                return 0 if cond.wait(JOIN_TIMEOUT) else 1

        for make, rec, wake in [(ev_waiter, ev, ev.set), (cond_waiter, cond, None)]:
            pids = [fork_child(make) for _ in range(4)]
            while rec._r.sleepers() < 4 if rec is ev else cond._get_waiting() < 4:
                time.sleep(0.001)
            for pid in pids[:2]:
                os.kill(pid, signal.SIGKILL)
                assert wait_child(pid) == -signal.SIGKILL
            if wake is not None:
                wake()
            else:
                with cond:
                    cond.notify(2)  # the two live waiters, not the dead ones
            assert [wait_child(p) for p in pids[2:]] == [0, 0]
