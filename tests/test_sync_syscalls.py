"""The uncontended operations of the primitives make no system call, and the
queue's one-at-a-time wake-ups reach every sleeping getter.

The syscall count is strace's (a process traced from outside, so the count is
the kernel's, not a hook of ours); the loop under test is bracketed by two
getppid calls, which nothing in shmshare makes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers import JOIN_TIMEOUT, fork_child, wait_child

import shmshare

_LOOP = """
import os, sys, shmshare
with shmshare.Manager(project_dir=sys.argv[1]) as m:
    lock, rlock, q, mq = m.Lock(), m.RLock(), shmshare.SharedQueue(), m.Queue()
    sem = m.Semaphore(2)
    for p in (lock, rlock, sem):  # first use registers the process (not measured)
        p.acquire(); p.release()
    q.put(0); q.get(); mq.put(0); mq.get()
    os.getppid()
    for i in range(2000):
        lock.acquire(); lock.release()
        with lock:
            pass
        with rlock:
            with rlock:
                pass
        q.put(i); q.get()
        mq.put(i); mq.get()
        sem.acquire(); sem.release()
    os.getppid()
    q.detach()
"""


def _strace_usable() -> str | None:
    """Why strace cannot trace here, or None."""
    if shutil.which("strace") is None:
        return "strace is not installed"
    probe = subprocess.run(["strace", "-f", "-o", os.devnull, "true"], capture_output=True,
                           text=True, timeout=JOIN_TIMEOUT)
    if probe.returncode != 0:
        return f"strace cannot trace here (ptrace refused?): {probe.stderr.strip()[:200]}"
    return None


def test_uncontended_lock_and_queue_make_no_futex_or_getpid_call(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """2000 rounds of Lock acquire/release and with, a nested RLock with, a put and get
    on an anonymous and a Manager queue, and a Semaphore's acquire and release: not
    one futex or getpid call."""
    why = _strace_usable()
    if why:
        pytest.skip(why)
    out = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-e", "trace=futex,getpid,getppid", "-o", str(out),
                    sys.executable, "-c", _LOOP, str(tmp_path / "project")], check=True,
                   timeout=JOIN_TIMEOUT)
    lines = out.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if "getppid(" in line]
    assert len(marks) == 2, lines[-20:]
    inside = [line for line in lines[marks[0] + 1:marks[1]]
              if "futex(" in line or "getpid(" in line]
    assert inside == []


def test_every_sleeping_getter_is_woken() -> None:
    """Four getters asleep on an empty queue, four items put at once: each getter
    gets one (a put wakes one sleeper unless a wake-up is already on its way;
    the woken getter passes it on while items remain)."""
    q, got = shmshare.SharedQueue(), shmshare.SharedQueue()
    try:
        def getter() -> int:
            got.put(q.get(timeout=JOIN_TIMEOUT))
            return 0

        pids = [fork_child(getter) for _ in range(4)]
        for _ in range(6000):  # all four asleep (bounded: 60 s)
            if q._r.sleepers() >= 4:
                break
            time.sleep(0.01)
        for i in range(4):
            q.put(i)
        assert sorted(got.get(timeout=JOIN_TIMEOUT) for _ in range(4)) == [0, 1, 2, 3]
        assert [wait_child(pid) for pid in pids] == [0, 0, 0, 0]
    finally:
        q.detach()
        got.detach()
