"""Manager().Lock/RLock/Semaphore/BoundedSemaphore/Event: as the proxies, across processes,
and robust to holders killed with SIGKILL."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import JOIN_TIMEOUT, START_METHODS, fork_call, fork_child, wait_child

import shmshare


@pytest.fixture
def both(tmp_path):  # type: ignore[no-untyped-def]
    with shmshare.Manager(project_dir=tmp_path) as ours, mp.Manager() as theirs:
        yield ours, theirs


def outcome(f, *args):  # type: ignore[no-untyped-def]
    try:
        return "ok", f(*args)
    except Exception as exc:
        return "error", type(exc)


def test_lock_and_semaphores_match(both) -> None:  # type: ignore[no-untyped-def]
    """acquire/release results and errors agree with multiprocessing's proxies."""
    ours, theirs = both
    for make in [lambda m: m.Lock(), lambda m: m.RLock(), lambda m: m.Semaphore(2),
                 lambda m: m.BoundedSemaphore(1)]:
        a, b = make(ours), make(theirs)
        for step in [lambda x: x.acquire(), lambda x: x.acquire(False),
                     lambda x: x.acquire(timeout=0.01), lambda x: x.release(),
                     lambda x: x.release(), lambda x: x.release()]:
            assert outcome(step, a) == outcome(step, b)
    ev_a, ev_b = ours.Event(), theirs.Event()
    for step in [lambda e: e.is_set(), lambda e: e.wait(0.01), lambda e: e.set(),
                 lambda e: e.is_set(), lambda e: e.wait(), lambda e: e.clear(),
                 lambda e: e.wait(0.01)]:
        assert outcome(step, ev_a) == outcome(step, ev_b)


def test_rlock_owner_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An RLock nests for its owner and refuses release by another thread."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        r = m.RLock()
        assert r.acquire() and r.acquire()
        errors: list[type] = []
        t = threading.Thread(target=lambda: errors.append(outcome(r.release)[1]))
        t.start()
        t.join(JOIN_TIMEOUT)
        assert errors == [RuntimeError]
        r.release()
        r.release()
        with pytest.raises(RuntimeError):
            r.release()


def _count(lock: object, sem: object, ns: object, n: int) -> None:
    for _ in range(n):
        with lock:  # type: ignore[attr-defined]
            ns.n += 1  # type: ignore[attr-defined]
    sem.release()  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", START_METHODS)
def test_mutual_exclusion_across_processes(method: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two processes of each start method increment under a Manager Lock: no lost update."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        lock, done, ns = m.Lock(), m.Semaphore(0), m.Namespace(n=0)
        ctx = mp.get_context(method)
        procs = [ctx.Process(target=_count, args=(lock, done, ns, 100)) for _ in range(2)]
        for p in procs:
            p.start()
        assert done.acquire(timeout=JOIN_TIMEOUT) and done.acquire(timeout=JOIN_TIMEOUT)
        for p in procs:
            p.join(JOIN_TIMEOUT)
        assert ns.n == 200


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_holder_killed_is_recovered(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A process SIGKILLed holding the lock (or, inside `with`, a permit): the next
    acquirer gets it and is told."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        prim = getattr(m, kind)()
        r, w = os.pipe()
        hang_r, hang_w = os.pipe()

        def hold() -> int:
            prim.__enter__()
            os.write(w, b"1")
            os.read(hang_r, 1)  # never answered: wait to be killed
            return 0

        pid = fork_child(hold)
        assert os.read(r, 1) == b"1"
        os.kill(pid, signal.SIGKILL)
        assert wait_child(pid) == -signal.SIGKILL
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert prim.acquire(timeout=10)
        assert any(issubclass(w_.category, shmshare.OwnerDiedWarning) for w_ in caught)
        assert prim.recoveries == 1
        prim.release()
        for fd in (r, w, hang_r, hang_w):
            os.close(fd)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
@pytest.mark.parametrize("take", ["with", "acquire"])
def test_holder_forked_after_parent_took_it_is_recovered(kind: str, take: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The uncontended acquire names the holder by a token cached in C: a child forked
    after the parent took and gave back the lock holds it under its own token, so
    the parent recovers it when the child is SIGKILLed (a stale token would name
    the live parent, and the parent would wait for itself forever)."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        prim = getattr(m, kind)()
        for _ in range(3):  # the parent's token is cached by now
            with prim:
                pass
            assert prim.acquire()
            prim.release()
        r, w = os.pipe()
        hang_r, hang_w = os.pipe()

        def hold() -> int:
            if take == "with":
                prim.__enter__()
            else:
                assert prim.acquire()
            os.write(w, b"1")
            os.read(hang_r, 1)  # never answered: wait to be killed
            return 0

        pid = fork_child(hold)
        assert os.read(r, 1) == b"1"
        os.kill(pid, signal.SIGKILL)
        assert wait_child(pid) == -signal.SIGKILL
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert prim.acquire(timeout=10)
        assert any(issubclass(w_.category, shmshare.OwnerDiedWarning) for w_ in caught)
        assert prim.recoveries == 1
        prim.release()
        for fd in (r, w, hang_r, hang_w):
            os.close(fd)


def test_event_wakes_other_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Event.set() in one process ends wait() in another."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        ev = m.Event()
        pid = fork_child(lambda: 0 if ev.wait(JOIN_TIMEOUT) else 1)
        ev.set()
        assert wait_child(pid) == 0


def _use_each(prims: tuple[object, ...]) -> None:
    lock, rlock, sem, bsem, ev = prims
    for p in (lock, rlock, sem, bsem):
        assert p.acquire(timeout=JOIN_TIMEOUT)  # type: ignore[attr-defined]
        p.release()  # type: ignore[attr-defined]
    with rlock, rlock:  # type: ignore[attr-defined]
        pass
    ev.set()  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", START_METHODS)
def test_every_primitive_in_children(method: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Lock, RLock, Semaphore, BoundedSemaphore and Event work in children of each start method."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        prims = (m.Lock(), m.RLock(), m.Semaphore(2), m.BoundedSemaphore(1), m.Event())
        p = mp.get_context(method).Process(target=_use_each, args=(prims,))
        p.start()
        p.join(JOIN_TIMEOUT)
        assert p.exitcode == 0 and prims[4].is_set() and prims[3].get_value() == 1


def test_owner_died_warning_as_error_leaves_lock_free() -> None:
    """With OwnerDiedWarning turned into an error, `with d.lock:` raises it without
    running the body and without keeping the lock (pytest's filterwarnings=error)."""
    d = shmshare.SharedDict()
    r, w = os.pipe()
    hang_r, hang_w = os.pipe()

    def hold() -> int:
        d.lock.acquire()
        os.write(w, b"1")
        os.read(hang_r, 1)  # never answered: wait to be killed
        return 0

    pid = fork_child(hold)
    try:
        assert os.read(r, 1) == b"1"
        os.kill(pid, signal.SIGKILL)
        assert wait_child(pid) == -signal.SIGKILL
        ran = False
        with warnings.catch_warnings():
            warnings.simplefilter("error", shmshare.OwnerDiedWarning)
            with pytest.raises(shmshare.OwnerDiedWarning), d.lock:
                ran = True
        assert not ran
        got: list[bool] = []

        def other_thread() -> None:           # free again, for everyone
            got.append(d.lock.acquire(timeout=5))
            d.lock.release()

        t = threading.Thread(target=other_thread)
        t.start()
        t.join(JOIN_TIMEOUT)
        assert got == [True]
    finally:
        for fd in (r, w, hang_r, hang_w):
            os.close(fd)
        d.detach()


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_rlock_holder_killed_at_depth_is_recovered_once(depth: int, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An RLock holder killed at recursion depth n gives the lock back once, not n times:
    after the recovery a second process cannot take it while we hold it."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        rl = m.RLock()
        r, w = os.pipe()
        hang_r, hang_w = os.pipe()

        def hold() -> int:
            for _ in range(depth):
                rl.acquire()
            os.write(w, b"1")
            os.read(hang_r, 1)  # never answered: wait to be killed
            return 0

        pid = fork_child(hold)
        assert os.read(r, 1) == b"1"
        os.kill(pid, signal.SIGKILL)
        assert wait_child(pid) == -signal.SIGKILL
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert rl.acquire(timeout=10)
        assert sum(issubclass(c.category, shmshare.OwnerDiedWarning) for c in caught) == 1
        assert rl.recoveries == 1
        # Held by us: another process must not get it.
        assert wait_child(fork_child(lambda: 1 if rl.acquire(timeout=0.2) else 0)) == 0
        rl.release()
        assert wait_child(fork_child(lambda: 0 if rl.acquire(timeout=10) else 1)) == 0
        for fd in (r, w, hang_r, hang_w):
            os.close(fd)


def _consume(sem: object, got: object) -> None:
    if sem.acquire(timeout=JOIN_TIMEOUT):  # type: ignore[attr-defined]
        got.release()  # type: ignore[attr-defined]


@pytest.mark.parametrize("exit_how", ["return", "os._exit", "SIGKILL"])
def test_semaphore_as_item_counter_has_no_phantom_items(exit_how: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Semaphore(0) counting items: a permit a consumer took stays consumed however the
    consumer ends, as in multiprocessing (no phantom item for the next consumer)."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        items = m.Semaphore(0)
        r, w = os.pipe()
        hang_r, hang_w = os.pipe()
        items.release()  # one item produced

        def consumer() -> int:
            assert items.acquire(timeout=JOIN_TIMEOUT)
            os.write(w, b"1")
            if exit_how == "SIGKILL":
                os.read(hang_r, 1)
            if exit_how == "os._exit":
                os._exit(0)
            return 0

        pid = fork_child(consumer)
        assert os.read(r, 1) == b"1"
        if exit_how == "SIGKILL":
            os.kill(pid, signal.SIGKILL)
        wait_child(pid)
        assert items.get_value() == 0
        assert not items.acquire(timeout=0.05)  # no phantom item
        for fd in (r, w, hang_r, hang_w):
            os.close(fd)


def test_event_pulse_wakes_every_waiter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """set() at once followed by clear(): every waiter that was waiting returns True,
    as with threading/multiprocessing."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        ev, ready = m.Event(), m.Semaphore(0)

        def waiter() -> int:
            ready.release()
            return 0 if ev.wait(JOIN_TIMEOUT) else 1

        pids = [fork_child(waiter) for _ in range(3)]
        for _ in pids:
            assert ready.acquire(timeout=JOIN_TIMEOUT)
        while ev._r.sleepers() < len(pids):  # all three asleep inside wait()
            threading.Event().wait(0.001)
        ev.set()
        ev.clear()
        assert [wait_child(p) for p in pids] == [0, 0, 0]


def test_lock_released_by_another_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Manager Lock taken in one process may be released in another."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        lock = m.Lock()
        assert lock.acquire()
        assert wait_child(fork_child(lambda: lock.release() or 0)) == 0
        assert not lock.locked()
        assert lock.acquire(timeout=0)
        lock.release()


def test_semaphore_with_permit_of_killed_holder_comes_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Permits held inside `with sem:` by a SIGKILLed process come back once; a permit it
    took with acquire() does not."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        sem = m.BoundedSemaphore(3)
        r, w = os.pipe()
        hang_r, hang_w = os.pipe()

        def hold() -> int:
            sem.acquire()  # consumed
            with sem, sem:  # two held permits
                os.write(w, b"1")
                os.read(hang_r, 1)
            return 0

        pid = fork_child(hold)
        assert os.read(r, 1) == b"1"
        os.kill(pid, signal.SIGKILL)
        wait_child(pid)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert sem.acquire(timeout=10)
        assert sum(issubclass(c.category, shmshare.OwnerDiedWarning) for c in caught) == 1
        assert sem.get_value() == 1  # 2 given back, 1 taken by us; 1 stays consumed
        sem.release()
        sem.release()
        with pytest.raises(ValueError):
            sem.release()  # the consumed one
        for fd in (r, w, hang_r, hang_w):
            os.close(fd)


@pytest.mark.parametrize("kind", [shmshare.SharedLock, shmshare.SharedRLock,
                                  shmshare.SharedSemaphore, shmshare.SharedBoundedSemaphore])
def test_fast_methods_make_no_cycle(kind: type) -> None:
    """acquire and release (and a Lock's ``with``) are C callables on the handle that
    hold it weakly: the handle goes with its last reference (no garbage collection
    needed), and a method kept past it raises ReferenceError instead of touching a
    detached record."""
    import gc
    import weakref

    lock = kind()
    gone = weakref.ref(lock)
    acquire = lock.acquire
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(3):
            assert lock.acquire()
            lock.release()
            with lock:
                pass
        del lock
        assert gone() is None
    finally:
        if enabled:
            gc.enable()
    with pytest.raises(ReferenceError, match="keep a reference to the lock"):
        acquire()


@pytest.mark.parametrize("bounded", [False, True])
def test_semaphore_fast_paths_agree_with_the_full_ones(bounded: bool) -> None:
    """The C acquire() and release() (one permit, uncontended) and the Python ones they
    hand over to (arguments, no permit left, over the bound) keep one count, as
    threading's semaphores do, a release inside ``with`` too (it gives back the
    held permit first: a holder killed after it has nothing left to give back)."""
    ours = (shmshare.SharedBoundedSemaphore if bounded else shmshare.SharedSemaphore)(2)
    theirs = (threading.BoundedSemaphore if bounded else threading.Semaphore)(2)
    try:
        steps = [lambda s: s.acquire(), lambda s: s.acquire(False), lambda s: s.acquire(False),
                 lambda s: s.acquire(True, 0.01), lambda s: s.release(),
                 lambda s: s.acquire(blocking=False), lambda s: s.release(),
                 lambda s: s.release(), lambda s: s.release(), lambda s: s.release(2),
                 lambda s: s.acquire(0)]
        for step in steps:
            assert outcome(step, ours) == outcome(step, theirs)
        for sem in (ours, theirs):
            while sem.acquire(False):
                pass
            sem.release()
            with sem:
                sem.release()
        assert ours.get_value() == theirs._value == 2
        assert [ours.acquire(False) for _ in range(3)] == [True, True, False]
    finally:
        ours.detach()


@pytest.mark.parametrize("cls", [shmshare.SharedSemaphore, shmshare.SharedBoundedSemaphore])
def test_with_on_a_temporary_semaphore_gives_its_permit_back(cls: Any,
                                                             project_dir: Path) -> None:
    """``with SharedSemaphore(name=...):`` holds a handle nothing else references:
    the ``__exit__`` that ``with`` keeps must keep it (and its record) alive to the
    block's end, or the permit is never given back (the next ``with`` waited forever)."""
    import gc

    keep = cls(1, name="t", project_dir=project_dir)
    try:
        for _ in range(3):
            with cls(name="t", project_dir=project_dir):
                gc.collect()
                assert keep.get_value() == 0
            assert keep.get_value() == 1
    finally:
        keep.unlink()
        keep.detach()


@pytest.mark.parametrize("cls", [shmshare.SharedLock, shmshare.SharedRLock])
def test_with_on_a_temporary_lock(cls: Any, project_dir: Path) -> None:
    """``with SharedLock(name=...):`` and ``with d["lock"]:`` hold a handle nothing else
    references: ``with`` keeps only its ``__exit__``, which must keep the handle (and
    its mapping) alive to the block's end, in this process and in a forked child."""
    import gc

    keep = cls(name="t", project_dir=project_dir)
    d = shmshare.SharedDict({"lock": keep})
    try:
        for _ in range(3):
            with cls(name="t", project_dir=project_dir):
                gc.collect()
                assert keep.locked() if cls is shmshare.SharedLock else True
        with d["lock"]:
            gc.collect()

        def child() -> int:
            with d["lock"]:
                gc.collect()
            with cls(name="t", project_dir=project_dir):
                pass
            return 0
        assert fork_call(child) == 0
    finally:
        d.detach()
        keep.unlink()
        keep.detach()
