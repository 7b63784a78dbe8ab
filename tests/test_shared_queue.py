"""SharedQueue / Manager().Queue(): queue.Queue semantics across processes, and crashes."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import warnings

import pytest
from helpers import JOIN_TIMEOUT, START_METHODS, fork_child, wait_child

import shmshare
from shmshare import SharedQueue


def test_matches_manager_queue(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """put/get/qsize/empty/full/nowait/task_done/join agree with multiprocessing's Queue."""
    with shmshare.Manager(project_dir=tmp_path) as ours, mp.Manager() as theirs:
        for q in (ours.Queue(2), theirs.Queue(2)):
            assert q.empty() and not q.full() and q.qsize() == 0
            q.put(1)
            q.put_nowait([2])
            assert q.full() and q.qsize() == 2
            with pytest.raises(queue.Full):
                q.put(3, timeout=0.01)
            with pytest.raises(queue.Full):
                q.put_nowait(3)
            assert q.get() == 1 and q.get_nowait() == [2]
            with pytest.raises(queue.Empty):
                q.get(timeout=0.01)
            with pytest.raises(queue.Empty):
                q.get_nowait()
            q.task_done()
            q.task_done()
            with pytest.raises(ValueError):
                q.task_done()
            q.join()
        jq = ours.JoinableQueue()
        jq.put("x")
        assert jq.get() == "x"


def _producer(q: SharedQueue, start: int, n: int) -> None:
    for i in range(start, start + n):
        q.put(i)


def _consumer(q: SharedQueue, out: SharedQueue, n: int) -> None:
    total = 0
    for _ in range(n):
        total += q.get(timeout=JOIN_TIMEOUT)
        q.task_done()
    out.put(total)


@pytest.mark.parametrize("method", START_METHODS)
def test_producers_consumers(method: str) -> None:
    """Two producers and two consumers of each start method: every item once, join() returns."""
    q, out = SharedQueue(maxsize=10), SharedQueue()
    ctx = mp.get_context(method)
    procs = [ctx.Process(target=_producer, args=(q, 0, 200)),
             ctx.Process(target=_producer, args=(q, 200, 200)),
             ctx.Process(target=_consumer, args=(q, out, 250)),
             ctx.Process(target=_consumer, args=(q, out, 150))]
    for p in procs:
        p.start()
    q.join()
    for p in procs:
        p.join(JOIN_TIMEOUT)
        assert p.exitcode == 0
    assert out.get() + out.get() == sum(range(400)) and q.empty()
    q.detach()
    out.detach()


def test_blocked_get_wakes_on_put() -> None:
    """A get() blocked in another thread returns as soon as an item is put."""
    q = SharedQueue()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=JOIN_TIMEOUT)))
    t.start()
    q.put("hello")
    t.join(JOIN_TIMEOUT)
    assert got == ["hello"]
    q.detach()


def test_consumer_killed_while_waiting_blocks_nobody() -> None:
    """A consumer SIGKILLed while blocked in get(): others still put and get."""
    q = SharedQueue()
    r, w = os.pipe()

    def consume() -> int:
        os.write(w, b"1")  # about to block in get()
        q.get()
        return 0

    pid = fork_child(consume)
    assert os.read(r, 1) == b"1"
    os.kill(pid, signal.SIGKILL)
    assert wait_child(pid) == -signal.SIGKILL
    os.close(r)
    os.close(w)
    with warnings.catch_warnings():
        # The kill may land while the child holds the lock inside get(): then
        # the next put() repairs and warns, which is right but not the point here.
        warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)
        q.put(1)
        assert q.get(timeout=5) == 1
    q.detach()


def test_consumer_killed_holding_the_lock() -> None:
    """A process killed holding the queue's lock: the next user is told and nothing is lost."""
    q = SharedQueue()
    q.put("kept")

    def die_holding() -> int:
        q.lock.acquire()
        os._exit(0)

    assert wait_child(fork_child(die_holding)) == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert q.get(timeout=5) == "kept"
    assert any(issubclass(w.category, shmshare.OwnerDiedWarning) for w in caught) or (
        q.stats()["recoveries"] >= 1)
    q.check()
    q.detach()
