"""Leased, fenced locks on a real redis-server, across real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest
from redis_server import RedisServer, name, redis_server, store  # noqa: F401  (fixtures)

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

from shmshare.stores.redis import (
    BoundedSemaphore,
    Lock,
    RedisStore,
    RLock,
    Semaphore,
)

LEASE = 1.0  # seconds; short so that recovery tests stay quick

HOLDER = """
import sys
from shmshare.stores import LockLostError
from shmshare.stores.redis import Lock, RedisStore
lock = Lock(sys.argv[2], store=RedisStore(sys.argv[1]), lease=float(sys.argv[3]))
lock.acquire()
print(lock.token, flush=True)
sys.stdin.readline()          # the test pauses us (SIGSTOP) here, or kills us
try:
    lock.release()
except LockLostError:
    print("lost", flush=True)
else:
    print("released", flush=True)
"""


def _holder(server: RedisServer, lock_name: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, server.unix_url, lock_name,
                             str(LEASE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except BrokenPipeError:
                pass


def test_mutual_exclusion_and_growing_tokens(store: RedisStore, name: str) -> None:  # noqa: F811
    """Two objects on one name exclude each other; every hold gets a larger token."""
    a, b = Lock(name, store=store), Lock(name, store=store)
    tokens = []
    for _ in range(3):
        with a:
            tokens.append(a.token)
            assert a.locked() and not b.acquire(blocking=False)
            assert not b.acquire(timeout=0.05)
        assert b.acquire(blocking=False)
        tokens.append(b.token)
        b.release()
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert not a.locked()
    with pytest.raises(RuntimeError, match="unlocked"):
        a.release()
    a.destroy()


def test_release_wakes_a_blocked_waiter(store: RedisStore, name: str) -> None:  # noqa: F811
    """A waiter blocked on the server is woken by release (a thread, its own connection)."""
    a, b = Lock(name, store=store), Lock(name, store=store)
    a.acquire()
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(b.acquire(timeout=30)))
    t.start()
    a.release()
    t.join(timeout=30)
    assert got == [True]
    b.release()
    a.destroy()


def test_dead_holder_recovered_after_lease(redis_server: RedisServer,  # noqa: F811
                                           store: RedisStore, name: str) -> None:  # noqa: F811
    """A SIGKILLed holder's lock is taken within lease + 1 s, with a larger token."""
    proc, their_token = _holder(redis_server, name)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        lock = Lock(name, store=store, lease=LEASE)
        assert lock.acquire(timeout=LEASE + 1.0)
        assert lock.token > their_token
        lock.release()
        lock.destroy()
    finally:
        _reap(proc)


def test_paused_holder_gets_lock_lost(redis_server: RedisServer,  # noqa: F811
                                      store: RedisStore, name: str) -> None:  # noqa: F811
    """A holder SIGSTOPped past its lease loses it: LockLostError at release, no double hold."""
    proc, their_token = _holder(redis_server, name)
    try:
        proc.send_signal(signal.SIGSTOP)
        lock = Lock(name, store=store, lease=LEASE)
        assert lock.acquire(timeout=LEASE + 1.0)  # its lease ended while it was stopped
        assert lock.token > their_token
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.send_signal(signal.SIGCONT)
        assert proc.stdout.readline().strip() == "lost"
        assert proc.wait(timeout=30) == 0
        lock.check()  # ours is still good: the continued process did not take it back
        assert lock.locked()
        lock.release()
        lock.destroy()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        _reap(proc)


def test_holder_that_lives_keeps_its_lease(redis_server: RedisServer,  # noqa: F811
                                           store: RedisStore, name: str) -> None:  # noqa: F811
    """The renewer keeps a live holder's lease: others time out past several lease lengths."""
    proc, _ = _holder(redis_server, name)
    try:
        lock = Lock(name, store=store, lease=LEASE)
        assert not lock.acquire(timeout=3 * LEASE)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        assert lock.acquire(timeout=30)
        lock.release()
        lock.destroy()
    finally:
        _reap(proc)


def test_rlock(store: RedisStore, name: str) -> None:  # noqa: F811
    """An RLock re-enters in its thread; another thread can neither take nor release it."""
    r = RLock(name, store=store)
    with r, r:
        errors: list[BaseException] = []

        def other() -> None:
            try:
                r.release()
            except RuntimeError as e:
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=30)
        assert len(errors) == 1
        assert not RLock(name, store=store).acquire(blocking=False)
    assert RLock(name, store=store).acquire(blocking=False)
    r.destroy()


def test_semaphores(store: RedisStore, name: str) -> None:  # noqa: F811
    """Permits are counted on the server; unheld release adds one, or raises if bounded."""
    s, t = Semaphore(name, 2, store=store), Semaphore(name, 2, store=store)
    assert s.acquire(blocking=False) and t.acquire(blocking=False)
    assert not s.acquire(blocking=False)
    Semaphore(name, 2, store=store).release()  # holds none: a third permit appears
    assert s.acquire(blocking=False)
    s.release(2)
    t.release()
    s.destroy()
    b = BoundedSemaphore(name + "b", 1, store=store)
    with pytest.raises(ValueError, match="too many"):
        b.release()
    with b:
        assert not BoundedSemaphore(name + "b", 1, store=store).acquire(timeout=0.05)
    b.destroy()
