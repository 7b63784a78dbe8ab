"""Detaching an object while another thread of the process is inside one of its calls.

Every call into the C core releases the GIL, and a call that waits (for a lock
another process holds, a queue item, an event, a condition, a barrier, a
semaphore) waits in slices of 0.1 s.  A detach by
another thread meanwhile -- ``obj.detach()``, a Manager's shutdown, the
interpreter's exit -- used to free the handle and unmap the memory under the
call: the process crashed (SIGSEGV), or the waiter got a nonsense error.  Now
the detach waits for the calls inside to leave (at most one slice), and each
of them then fails as any call on a detached object does (ValueError).

Each scenario runs in a child process: a crash must fail the test, not the run.
"""

from __future__ import annotations

import gc
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import fork_child, run_python, wait_pid

import shmshare

_SCENARIO = textwrap.dedent("""
    import faulthandler, sys, threading, time, contextlib
    faulthandler.enable()
    import shmshare
    from helpers import lock_held_elsewhere
    kind = sys.argv[1]
    if kind == "dict":
        obj = shmshare.SharedDict(); op = lambda: obj.__setitem__("k", b"x" * 10)
    elif kind == "dict-big":
        obj = shmshare.SharedDict(); op = lambda: obj.__setitem__("k", b"x" * 5_000_000)
    elif kind == "dict-update":
        obj = shmshare.SharedDict(); op = lambda: obj.update({i: i for i in range(100)})
    elif kind == "list":
        obj = shmshare.SharedList([0, 1]); op = lambda: obj.__setitem__(0, b"x" * 10)
    elif kind == "list-append":
        obj = shmshare.SharedList(); op = lambda: obj.append(b"x" * 10)
    elif kind == "queue-get":
        obj = shmshare.SharedQueue(); op = lambda: obj.get(timeout=5)
    elif kind == "queue-put":
        obj = shmshare.SharedQueue(); op = lambda: obj.put(b"x")
    elif kind == "lock":
        obj = shmshare.SharedDict(); op = lambda: obj.lock.acquire(timeout=5)
    elif kind == "event-wait":
        obj = shmshare.SharedEvent(); op = lambda: obj.wait(5)
    elif kind == "shared-lock":
        obj = shmshare.SharedLock(); obj.acquire(); op = lambda: obj.acquire(timeout=5)
    elif kind == "semaphore":
        obj = shmshare.SharedSemaphore(0); op = lambda: obj.acquire(timeout=5)
    elif kind == "condition-wait":
        obj = shmshare.SharedCondition()
        def op():
            with obj:
                obj.wait(5)
    elif kind == "barrier-wait":
        obj = shmshare.SharedBarrier(2); op = lambda: obj.wait(5)
    elif kind == "queue-join":
        obj = shmshare.SharedQueue(); obj.put(1); op = lambda: obj.join()
    got = []
    def call():
        try:
            op()
            got.append("done")
        except BaseException as exc:
            got.append(f"{type(exc).__name__}: {exc}")
    # A get waits on an empty queue by itself, and the primitives on themselves
    # (the Lock on this thread's hold).
    blocked = kind not in ("queue-get", "event-wait", "shared-lock", "semaphore",
                           "condition-wait", "barrier-wait", "queue-join")
    with (lock_held_elsewhere(obj) if blocked else contextlib.nullcontext(None)) as release:
        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)       # inside the call, waiting
        shmshare.detach(obj)
        if release is not None:
            release()
    t.join(10)
    assert not t.is_alive(), "the call never returned"
    print(got[0])
""")


@pytest.mark.parametrize("kind", ["dict", "dict-big", "dict-update", "list", "list-append",
                                  "queue-get", "queue-put", "lock", "event-wait",
                                  "shared-lock", "semaphore", "condition-wait",
                                  "barrier-wait", "queue-join"])
def test_a_call_waiting_when_another_thread_detaches_fails_as_detached(kind: str) -> None:
    proc = run_python(_SCENARIO, kind, check=False, timeout=60)
    assert proc.returncode == 0, f"the child died ({proc.returncode}):\n{proc.stderr}"
    out = proc.stdout.strip()
    assert out.startswith("ValueError: ") and "detached" in out, out


@pytest.mark.parametrize("how", ["detach", "drop"])
def test_detaching_inside_its_own_lock_block_gives_the_lock_back(project_dir: Path,
                                                                how: str) -> None:
    """``with d.lock: d.detach()``: the lock this thread held is given back before
    the memory goes.  It was kept, and with its memory unmapped even the thread's
    exit could not mark it: every other process waited on it for good.  (The last
    handle dropped in the block instead: the block keeps lock and mapping to its
    end, then gives the lock back.)"""
    other = shmshare.SharedDict(name="held", project_dir=project_dir)

    def can_take() -> int:  # in a forked child
        if not other.lock.acquire(timeout=2):
            return 1
        other.lock.release()
        return 0

    holder = [shmshare.SharedDict(name="held", project_dir=project_dir)]
    with holder[0].lock:
        if how == "detach":
            holder[0].detach()
            assert wait_pid(fork_child(can_take)) == 0  # given back at the detach
        else:
            holder.clear()  # the block keeps the lock (and its mapping) to its end
            gc.collect()
            assert wait_pid(fork_child(can_take)) == 1
    assert wait_pid(fork_child(can_take)) == 0
    other.unlink()
    other.detach()


_FORK_SCENARIO = textwrap.dedent("""
    import os, sys, threading, time
    import shmshare
    from helpers import fork_child, lock_held_elsewhere, wait_pid
    d = shmshare.SharedDict()
    got = []
    def call():
        try:
            d["k"] = b"v"
            got.append("done")
        except BaseException as exc:
            got.append(type(exc).__name__)
    def child() -> int:
        d.detach()  # the thread inside the call in the parent is not in this child
        return 0
    with lock_held_elsewhere(d) as release:
        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)            # inside the call, waiting for the lock
        code = wait_pid(fork_child(child), timeout=20)
        release()
    t.join(10)
    print(code, got[0])
""")


def test_a_fork_child_detaches_what_a_parent_thread_was_inside() -> None:
    """A child forked while a thread of the parent was inside a call copies the
    parent's count of calls inside; that thread does not exist in the child, so
    the child's detach must not wait for it (it would wait for good)."""
    proc = run_python(_FORK_SCENARIO, check=False, timeout=60)
    assert proc.returncode == 0, f"the parent died ({proc.returncode}):\n{proc.stderr}"
    assert proc.stdout.split() == ["0", "done"], proc.stdout + proc.stderr


def test_a_fork_child_counts_none_of_its_parents_waits_on_a_primitive() -> None:
    """The same for a primitive's own count of waits (SyncRecord): the child of a
    parent whose thread sleeps in ``ev.wait()`` counts nobody inside, so its
    detach does not wait (it waited out a one-second deadline)."""
    ev = shmshare.SharedEvent()
    t = threading.Thread(target=ev.wait, args=(10,))
    t.start()
    try:
        rec = ev._rec
        assert rec is not None
        deadline = time.monotonic() + 10
        while rec._waiting(0) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the thread is inside its wait
        assert rec._waiting(0) == 1

        def child() -> int:
            return 0 if rec._waiting(0) == 0 else 1
        assert wait_pid(fork_child(child)) == 0
    finally:
        ev.set()
        t.join(10)
        ev.detach()
