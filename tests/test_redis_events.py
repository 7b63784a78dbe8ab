"""Event, Condition and Barrier on a real redis-server, across forked processes."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import JOIN_TIMEOUT, fork_child, wait_child

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

from shmshare.stores.redis import RedisStore
from shmshare.stores.redis.events import Barrier, Condition, Event
from shmshare.stores.redis.lock import Lock

# The redis_server, store and name fixtures come from tests/redis_server.py (a plugin
# that conftest.py loads).

LEASE = 1.0  # seconds; short so that the dead-party tests stay quick


def _until(cond: Callable[[], Any], what: str, timeout: float = JOIN_TIMEOUT) -> None:
    """Poll ``cond`` (a state on the server) until true; fail after ``timeout``."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def _llen(store: RedisStore, name: str, part: str) -> int:
    return int(store.client.llen(store.key(name, part)))


def _zcard(store: RedisStore, name: str, part: str) -> int:
    return int(store.client.zcard(store.key(name, part)))


# --------------------------------------------------------------------- Event
def test_event_basics(store: RedisStore, name: str) -> None:
    ev = Event(name, store=store)
    assert not ev.is_set()
    assert ev.wait(0.05) is False
    ev.set()
    assert ev.is_set() and ev.wait() is True and ev.wait(0) is True
    ev.clear()
    assert not ev.is_set()
    again = pickle.loads(pickle.dumps(ev))  # by reference: the same event
    ev.set()
    assert again.is_set()
    ev.destroy()


def test_event_pulse_wakes_every_waiter(store: RedisStore, name: str) -> None:
    """set() then clear() at once: each process waiting at set() returns True."""
    ev = Event(name, store=store)
    pids = [fork_child(lambda: 0 if ev.wait(JOIN_TIMEOUT) else 3) for _ in range(3)]
    _until(lambda: _llen(store, name, "ev-waiters") == 3, "3 registered waiters")
    ev.set()
    ev.clear()
    assert [wait_child(p) for p in pids] == [0, 0, 0]
    assert not ev.is_set()
    ev.destroy()


# ----------------------------------------------------------------- Condition
def test_condition_needs_the_lock(store: RedisStore, name: str) -> None:
    cond = Condition(name, store=store, lease=LEASE)
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0.01)
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify()
    with pytest.raises(TypeError, match="Redis Lock or RLock"):
        Condition(name, threading.Lock(), store=store)  # type: ignore[arg-type]
    with cond:
        assert cond.wait(0.05) is False  # timed out, and holds the lock again
        assert cond.lock.held_by_me()
    cond.destroy()


def _cond_waiter(cond: Condition) -> int:
    with cond:
        return 0 if cond.wait(JOIN_TIMEOUT) else 3


def test_condition_notify_n_then_all(store: RedisStore, name: str) -> None:
    cond = Condition(name, store=store, lease=LEASE)
    pids = [fork_child(_cond_waiter, cond) for _ in range(3)]
    _until(lambda: _llen(store, name, "cv-waiters") == 3, "3 waiters")
    with cond:
        cond.notify(2)
    _until(lambda: _llen(store, name, "cv-waiters") == 1, "2 woken")
    with cond:
        cond.notify_all()
    assert sorted(wait_child(p) for p in pids) == [0, 0, 0]
    cond.destroy()


def test_condition_wait_releases_every_rlock_level(store: RedisStore, name: str) -> None:
    """An RLock held at depth 2 is free while waiting, and at depth 2 again after."""
    cond = Condition(name, store=store, lease=LEASE)
    result: list[bool] = []

    def waiter() -> None:
        with cond, cond:
            result.append(cond.wait(JOIN_TIMEOUT))
            assert cond.lock._count == 2  # type: ignore[attr-defined]

    t = threading.Thread(target=waiter)
    t.start()
    _until(lambda: _llen(store, name, "cv-waiters") == 1, "the waiter")
    other = Lock(f"{name}.lock", store=store, lease=LEASE)  # the same server lock
    assert other.acquire(timeout=JOIN_TIMEOUT)  # free while the waiter sleeps
    other.release()
    with cond:
        cond.notify()
    t.join(JOIN_TIMEOUT)
    assert result == [True]
    cond.destroy()


def test_condition_skips_a_dead_waiter(store: RedisStore, name: str) -> None:
    """A waiter SIGKILLed in wait() is not notified once its lease ended: the live one is."""
    cond = Condition(name, store=store, lease=LEASE)
    dead = fork_child(_cond_waiter, cond)
    _until(lambda: _llen(store, name, "cv-waiters") == 1, "the first waiter")
    live = fork_child(_cond_waiter, cond)
    _until(lambda: _llen(store, name, "cv-waiters") == 2, "the second waiter")
    os.kill(dead, signal.SIGKILL)
    assert wait_child(dead) == -signal.SIGKILL
    first = store.client.lindex(store.key(name, "cv-waiters"), 0).decode()
    _until(lambda: not store.client.exists(store.key(name, f"alive:{first}")),
           "the dead waiter's lease to end", timeout=LEASE * 3 + 5)
    with cond:
        cond.notify(1)
    assert wait_child(live) == 0
    cond.destroy()


def test_condition_wait_for(store: RedisStore, name: str) -> None:
    cond = Condition(name, store=store, lease=LEASE)
    flag = Event(f"{name}.flag", store=store)
    with cond:
        assert cond.wait_for(flag.is_set, timeout=0.05) is False

    def setter() -> int:
        with cond:
            flag.set()
            cond.notify_all()
        return 0

    with cond:
        pid = fork_child(setter)
        assert cond.wait_for(flag.is_set, timeout=JOIN_TIMEOUT) is True
    assert wait_child(pid) == 0
    cond.destroy()
    flag.destroy()


# ------------------------------------------------------------------- Barrier
def test_barrier_across_processes(store: RedisStore, name: str) -> None:
    """Three parties: indexes 0..2 each once, the action runs once, twice in a row."""
    count = Event(f"{name}.acted", store=store)
    bar = Barrier(name, 3, action=count.set, store=store, lease=LEASE)
    for _round in range(2):
        count.clear()
        pids = [fork_child(lambda: bar.wait(JOIN_TIMEOUT) + 10) for _ in range(2)]
        _until(lambda: bar.n_waiting == 2, "two parties waiting")
        mine = bar.wait(JOIN_TIMEOUT)
        assert sorted([mine + 10] + [wait_child(p) for p in pids]) == [10, 11, 12]
        assert count.is_set() and not bar.broken and bar.n_waiting == 0
    with pytest.raises(ValueError, match="has 3 parties"):
        Barrier(name, 4, store=store)
    bar.destroy()
    count.destroy()


def test_barrier_timeout_breaks_then_reset(store: RedisStore, name: str) -> None:
    bar = Barrier(name, 2, store=store, lease=LEASE)
    with pytest.raises(threading.BrokenBarrierError):
        bar.wait(0.05)
    assert bar.broken
    with pytest.raises(threading.BrokenBarrierError):
        bar.wait(JOIN_TIMEOUT)  # broken stays broken
    bar.reset()
    assert not bar.broken
    pid = fork_child(lambda: bar.wait(JOIN_TIMEOUT))
    assert bar.wait(JOIN_TIMEOUT) in (0, 1)
    assert wait_child(pid) in (0, 1)
    bar.destroy()


def _broken_party(bar: Barrier) -> int:
    """A party that expects the barrier to break: exit code 0 if it did."""
    try:
        bar.wait(JOIN_TIMEOUT)
    except threading.BrokenBarrierError:
        return 0
    return 3


def test_barrier_abort_wakes_waiters(store: RedisStore, name: str) -> None:
    bar = Barrier(name, 3, store=store, lease=LEASE)

    pid = fork_child(_broken_party, bar)
    _until(lambda: bar.n_waiting == 1, "a waiting party")
    bar.abort()
    assert wait_child(pid) == 0 and bar.broken
    bar.destroy()


def test_barrier_dead_party_breaks_it(store: RedisStore, name: str) -> None:
    """A party SIGKILLed while waiting: the live one gets BrokenBarrierError about one
    lease later, not a wait until its timeout; the barrier is not passed with it."""
    bar = Barrier(name, 3, store=store, lease=LEASE)

    dead = fork_child(_broken_party, bar)
    _until(lambda: _zcard(store, name, "arrived") == 1, "the first party")
    live = fork_child(_broken_party, bar)
    _until(lambda: _zcard(store, name, "arrived") == 2, "the second party")
    os.kill(dead, signal.SIGKILL)
    assert wait_child(dead) == -signal.SIGKILL
    assert wait_child(live, timeout=LEASE * 3 + 10) == 0
    assert bar.broken
    bar.destroy()


def test_barrier_action_failure_breaks_it(store: RedisStore, name: str) -> None:
    def boom() -> None:
        raise KeyError("action failed")

    bar = Barrier(name, 2, action=boom, store=store, lease=LEASE)

    def party() -> int:
        try:
            bar.wait(JOIN_TIMEOUT)
        except threading.BrokenBarrierError:
            return 0
        except KeyError:
            return 0
        return 3

    pid = fork_child(party)
    _until(lambda: bar.n_waiting == 1 or bar.broken, "the first party")
    with pytest.raises((KeyError, threading.BrokenBarrierError)):
        bar.wait(JOIN_TIMEOUT)
    assert wait_child(pid) == 0 and bar.broken
    bar.destroy()


def test_objects_of_one_name_do_not_share_waiters(store: RedisStore, name: str) -> None:
    """A Lock, an Event and a Condition given the same name: each one's waiters are its
    own (a set() does not swallow the lock's waiter, a release does not drop the event's)."""
    lock, ev = Lock(name, store=store), Event(name, store=store)
    cond = Condition(name, lock=Lock(name + ".cv", store=store), store=store)
    holder = Lock(name, store=store)
    assert holder.acquire(timeout=5)
    out: dict[str, Any] = {}

    def run(key: str, fn: Callable[[], Any]) -> threading.Thread:
        t = threading.Thread(target=lambda: out.__setitem__(key, fn()))
        t.start()
        return t

    def cv_wait() -> bool:
        with cond:
            return cond.wait(timeout=JOIN_TIMEOUT)

    threads = [run("lock", lambda: lock.acquire(timeout=JOIN_TIMEOUT)),
               run("event", lambda: ev.wait(timeout=JOIN_TIMEOUT)), run("cond", cv_wait)]
    _until(lambda: _llen(store, name, "waiters") == 1, "the lock's waiter")
    _until(lambda: _llen(store, name, "ev-waiters") == 1, "the event's waiter")
    _until(lambda: _llen(store, name, "cv-waiters") == 1, "the condition's waiter")
    start = time.monotonic()
    holder.release()
    ev.set()
    with cond:
        cond.notify()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT)
    assert out == {"lock": True, "event": True, "cond": True}
    assert time.monotonic() - start < JOIN_TIMEOUT / 2
    lock.release()
    for obj in (lock, ev, cond, cond.lock):
        obj.destroy()
