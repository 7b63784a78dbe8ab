"""The reliable queue on a real redis-server: order, maxsize, requeue after a dead consumer."""

from __future__ import annotations

import pickle
import queue
import signal
import subprocess
import sys
import threading

import pytest
from redis_server import RedisServer, name, redis_server, store  # noqa: F401  (fixtures)

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

from shmshare.stores.redis import RedisStore
from shmshare.stores.redis.queue import JoinableQueue, Queue

LEASE = 1.0

CONSUMER = """
import sys
from shmshare.stores.redis import RedisStore
from shmshare.stores.redis.queue import Queue
q = Queue(sys.argv[2], store=RedisStore(sys.argv[1]), lease=float(sys.argv[3]))
print(q.get(timeout=30), flush=True)
sys.stdin.readline()  # killed here, before acknowledging
"""


def test_fifo_and_maxsize(store: RedisStore, name: str) -> None:  # noqa: F811
    """Items come out in order; a full queue raises Full, or waits for a get."""
    q = Queue(name, 2, store=store)
    q.put({"a": 1})
    q.put_nowait(lambda: 2)  # cloudpickle fallback, as the shared-memory store
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert q.qsize() == 2
    t = threading.Thread(target=q.put, args=(3,), kwargs={"timeout": 30})
    t.start()
    assert q.get() == {"a": 1}
    t.join(timeout=30)
    assert q.get()() == 2 and q.get() == 3
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.close()
    q.destroy()


def test_blocking_get_is_woken_by_put(store: RedisStore, name: str) -> None:  # noqa: F811
    """A get blocked on the server (BLMOVE) returns the item another object puts."""
    q = Queue(name, store=store)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(pickle.loads(pickle.dumps(q)).get(timeout=30)))
    t.start()
    q.put("x")
    t.join(timeout=30)
    assert got == ["x"]
    q.destroy()


def test_dead_consumers_item_is_requeued(redis_server: RedisServer,  # noqa: F811
                                         store: RedisStore, name: str) -> None:  # noqa: F811
    """An item taken by a consumer SIGKILLed before acknowledging comes back after its lease."""
    q = Queue(name, store=store, lease=LEASE)
    q.put("first")
    q.put("second")
    proc = subprocess.Popen([sys.executable, "-c", CONSUMER, redis_server.unix_url, name,
                             str(LEASE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "first"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert q.get(timeout=30) == "second"
        assert q.get(timeout=LEASE + 1.0) == "first"  # requeued once its lease ended
        with pytest.raises(queue.Empty):
            q.get_nowait()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    q.close()
    q.destroy()


def test_joinable_queue(store: RedisStore, name: str) -> None:  # noqa: F811
    """join() returns once every item is done; too many task_done() is a ValueError."""
    q = JoinableQueue(name, store=store)
    for i in range(3):
        q.put(i)
    assert not q.join(timeout=0.05)
    done = threading.Event()
    t = threading.Thread(target=lambda: q.join(timeout=30) and done.set())
    t.start()
    for _ in range(3):
        q.get()
        q.task_done()
    t.join(timeout=30)
    assert done.is_set() and q.join(timeout=0)
    with pytest.raises(ValueError, match="too many"):
        q.task_done()
    q.close()
    q.destroy()


def test_consumer_thread_that_ends_gives_its_item_back(store: RedisStore,  # noqa: F811
                                                       name: str) -> None:  # noqa: F811
    """A thread that took an item and ended without acknowledging it (nor close()): its
    consumer lease is no longer renewed, so the item comes back one lease later."""
    import gc
    import time

    from shmshare.stores.redis import leases

    q = Queue(name, store=store, lease=LEASE)
    q.put("taken by a thread that ends")
    before = len(leases.held())
    t = threading.Thread(target=q.get, kwargs={"timeout": 30})
    t.start()
    t.join(timeout=30)
    gc.collect()
    assert len(leases.held()) == before  # the thread's lease is not renewed
    start = time.monotonic()
    assert q.get(timeout=LEASE + 1.0) == "taken by a thread that ends"
    assert time.monotonic() - start < LEASE + 1.0
    q.close()
    q.destroy()
