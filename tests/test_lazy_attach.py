"""What attaching leaves for first use must behave as if it had been made at once.

Attaching an object by name makes the least it can (docs/concepts/lifecycle.md, "What
an attach makes"): the object's lock is made by its first use.  These check that a
lock made late is still the one lock of that handle -- whichever threads ask for it
first and at once -- that it still refuses after a detach, and that the fork hooks
still find what a child must forget.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from helpers import fork_child, wait_child

import shmshare
import shmshare._core.heap as heap_module
from shmshare import SharedDict, SharedList, SharedNamespace, SharedSet


# (A SharedQueue's attach reads its record under the lock: it makes one at once.)
@pytest.mark.parametrize("cls", [SharedDict, SharedList, SharedSet, SharedNamespace])
def test_an_attach_makes_no_lock_until_one_is_used(cls: type, project_dir: Path) -> None:
    with cls(name="lazy", create=True, project_dir=project_dir) as made:
        other = cls(name="lazy", create=False, project_dir=project_dir)
        try:
            assert "_lock" not in vars(other)
            with other._lock:
                assert other._lock.held()
            assert "_lock" in vars(other) and not other._lock.held()
        finally:
            shmshare.detach(other)  # (a Namespace's attributes are user data)
        shmshare.unlink(made)


def test_threads_asking_first_at_once_share_one_lock(project_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Making the guard sleeps (lets the GIL go) inside the window where a second
    # thread could make another: a lock made twice shows every time.
    class SlowGuard(heap_module.LockGuard):
        def __init__(self, *args: object, **kwargs: object) -> None:
            time.sleep(0.005)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(heap_module, "LockGuard", SlowGuard)
    _race(project_dir)


def _first_use(d: SharedDict, start: threading.Barrier, seen: list[object]) -> None:
    start.wait()
    seen.append(d._lock._guard)


def _race(project_dir: Path) -> None:
    made = SharedDict(name="race", create=True, project_dir=project_dir)
    try:
        for _ in range(5):
            with SharedDict(name="race", create=False, project_dir=project_dir) as d:
                start = threading.Barrier(8)
                seen: list[object] = []

                threads = [threading.Thread(target=_first_use, args=(d, start, seen))
                           for _ in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                # One guard, the heap's, which detach closes: another would outlive it.
                assert len({id(g) for g in seen}) == 1, "two guards: two ideas of who holds it"
                assert seen[0] is d._heap.guard, "the lock's guard is not the one detach closes"
                with d.lock, d.lock:  # and it is a working, re-entrant lock
                    d["k"] = 1
    finally:
        made.unlink()
        made.detach()


def test_a_lock_first_used_after_detach_refuses(project_dir: Path) -> None:
    with SharedDict(name="gone", create=True, project_dir=project_dir) as made:
        d = SharedDict(name="gone", create=False, project_dir=project_dir)
        d.detach()
        with pytest.raises(ValueError, match="detached"):
            d.lock.acquire()
        made.unlink()


def test_a_forked_child_holds_nothing_of_a_lock_made_late(project_dir: Path) -> None:
    """The parent holds a lock it made by its first use when it forks: the child holds
    none of it (fork hooks), and takes it once the parent lets go."""
    with SharedDict(name="forked", create=True, project_dir=project_dir) as made:
        d = SharedDict(name="forked", create=False, project_dir=project_dir)
        r, w = os.pipe()

        def child() -> int:
            os.close(w)
            if d.lock.held():
                return 1
            os.read(r, 1)          # the parent has let go
            with d.lock:
                d["child"] = os.getpid()
            return 0

        with d.lock:
            pid = fork_child(child)
        os.close(r)
        os.write(w, b"x")
        os.close(w)
        assert wait_child(pid) == 0
        assert "child" in d
        d.detach()
        made.unlink()
