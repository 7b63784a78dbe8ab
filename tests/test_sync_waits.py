"""Manager().Condition and Manager().Barrier: as threading's, across processes, and robust."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading

import pytest
from helpers import JOIN_TIMEOUT, START_METHODS, fork_child, wait_child

import shmshare


def test_condition_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """wait/notify need the lock; wait times out False; wait_for returns the result."""
    with shmshare.Manager(project_dir=tmp_path) as m, mp.Manager() as theirs:
        for cond in (m.Condition(), theirs.Condition()):
            with pytest.raises(RuntimeError):
                cond.notify()
            with pytest.raises(RuntimeError):
                cond.wait(0.01)
            with cond:
                assert cond.wait(0.01) is False
                assert cond.wait_for(lambda: 42, timeout=0.01) == 42
                assert cond.wait_for(lambda: 0, timeout=0.01) == 0
                cond.notify_all()


def _consumer(cond: object, ns: object, out: object) -> None:
    with cond:  # type: ignore[attr-defined]
        assert cond.wait_for(lambda: ns.ready, timeout=JOIN_TIMEOUT)  # type: ignore[attr-defined]
    out.release()  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", START_METHODS)
def test_condition_across_processes(method: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Waiters in children of each start method wake on notify_all()."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        cond, ns, out = m.Condition(m.Lock()), m.Namespace(ready=False), m.Semaphore(0)
        ctx = mp.get_context(method)
        procs = [ctx.Process(target=_consumer, args=(cond, ns, out)) for _ in range(2)]
        for p in procs:
            p.start()
        with cond:
            ns.ready = True
            cond.notify_all()
        assert out.acquire(timeout=JOIN_TIMEOUT) and out.acquire(timeout=JOIN_TIMEOUT)
        for p in procs:
            p.join(JOIN_TIMEOUT)
            assert p.exitcode == 0


@pytest.mark.filterwarnings("ignore::shmshare.OwnerDiedWarning")  # the kill may hit the lock
def test_notify_skips_dead_waiter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A waiter SIGKILLed while waiting does not swallow the next notify()."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        cond = m.Condition()
        r, w = os.pipe()

        def waiter() -> int:
            with cond:
                os.write(w, b"1")
                cond.wait()
            return 0

        pid = fork_child(waiter)
        assert os.read(r, 1) == b"1"
        with cond:  # the child is now registered and waiting
            pass
        os.kill(pid, signal.SIGKILL)
        assert wait_child(pid) == -signal.SIGKILL
        got = []
        t = threading.Thread(target=lambda: got.append(_wait_once(cond)))
        t.start()
        while cond._get_waiting() < 1:  # the thread (the dead child's entry is not counted)
            threading.Event().wait(0.001)
        with cond:
            cond.notify()  # must reach the live thread, not the dead process
        t.join(JOIN_TIMEOUT)
        assert got == [True]
        os.close(r)
        os.close(w)


def _wait_once(cond: object) -> bool:
    with cond:  # type: ignore[attr-defined]
        return cond.wait(JOIN_TIMEOUT)  # type: ignore[attr-defined,no-any-return]


def _party(barrier: object, out: object) -> None:
    out.put(barrier.wait(JOIN_TIMEOUT))  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", START_METHODS)
def test_barrier_across_processes(method: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Three parties (two children) pass; indices are distinct; the action runs once."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        ns = m.Namespace(actions=0)
        b, out = m.Barrier(3, action=lambda: setattr(ns, "actions", ns.actions + 1)), m.Queue()
        assert b.parties == 3 and b.n_waiting == 0 and not b.broken
        ctx = mp.get_context(method)
        procs = [ctx.Process(target=_party, args=(b, out)) for _ in range(2)]
        for p in procs:
            p.start()
        mine = b.wait(JOIN_TIMEOUT)
        got = sorted([mine, out.get(timeout=JOIN_TIMEOUT), out.get(timeout=JOIN_TIMEOUT)])
        assert got == [0, 1, 2] and ns.actions == 1
        for p in procs:
            p.join(JOIN_TIMEOUT)


def test_barrier_timeout_abort_reset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A timeout breaks the barrier; reset() repairs it; abort() breaks it."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        b = m.Barrier(2)
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(0.05)
        assert b.broken
        b.reset()
        assert not b.broken
        b.abort()
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(1)


@pytest.mark.filterwarnings("ignore::shmshare.OwnerDiedWarning")  # the kill may hit the lock
def test_barrier_party_killed_breaks_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A party SIGKILLed while waiting breaks the barrier for the others: no hang."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        b = m.Barrier(3)
        pid = fork_child(lambda: b.wait())
        while b.n_waiting == 0:
            threading.Event().wait(0.001)
        os.kill(pid, signal.SIGKILL)
        assert wait_child(pid) == -signal.SIGKILL
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(JOIN_TIMEOUT)


def test_barrier_matches_threading_barrier(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """parties/n_waiting/broken/abort/reset and errors agree with multiprocessing's Barrier."""
    with shmshare.Manager(project_dir=tmp_path) as m, mp.Manager() as theirs:
        for b in (m.Barrier(1), theirs.Barrier(1)):
            assert b.parties == 1 and b.n_waiting == 0 and b.broken is False
            assert b.wait() == 0  # one party: passes at once
            b.abort()
            assert b.broken is True
            with pytest.raises(threading.BrokenBarrierError):
                b.wait()
            b.reset()
            assert b.broken is False and b.wait() == 0
