"""The Redis store on a real 3-master Redis Cluster on loopback (``redis+cluster://``):
every object's keys share one hash tag, so each of its scripts runs on one node."""

from __future__ import annotations

import os
import pickle
import queue
import secrets
import threading

import pytest
from helpers import fork_call
from redis_server import RedisClusterServers, redis_cluster  # noqa: F401  (fixture)

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

import shmshare
from shmshare import SharedDict
from shmshare.errors import ShmValueError
from shmshare.stores import StoreUnavailableError
from shmshare.stores.redis import Lock, RedisStore, parse_url
from shmshare.stores.redis.events import Barrier, Condition, Event
from shmshare.stores.redis.queue import JoinableQueue, Queue


def _names(n: int) -> list[str]:
    return [f"c-{secrets.token_hex(4)}" for _ in range(n)]


def test_cluster_url_form() -> None:
    """redis+cluster:// names a seed node; db must be 0; TLS is rediss+cluster://."""
    u = parse_url("redis+cluster://:pw@10.0.0.1:7000")
    assert (u.is_cluster, u.host, u.port, u.db, u.is_authenticated) == (
        True, "10.0.0.1", 7000, 0, True)
    assert parse_url("rediss+cluster://h").is_authenticated
    with pytest.raises(ShmValueError, match="only db 0"):
        parse_url("redis+cluster://h:7000/2")


def test_objects_spread_over_the_masters(redis_cluster: RedisClusterServers) -> None:  # noqa: F811
    """Objects of different names land on different masters; one object's keys on one."""
    store = RedisStore(redis_cluster.url)
    c = store.client
    nodes = set()
    for n in _names(12):
        keys = [store.key(n, part) for part in ("entries", "holders", "fence", "items")]
        slots = {c.keyslot(k) for k in keys}
        assert len(slots) == 1
        nodes.add(c.get_node_from_key(keys[0]).port)
    assert len(nodes) >= 2, "twelve names all hashed to one master"


def test_dict_on_cluster(redis_cluster: RedisClusterServers) -> None:  # noqa: F811
    """A SharedDict on the cluster: writes under its lock, seen by a forked child."""
    d = SharedDict({"a": 1}, url=redis_cluster.url)
    with d.lock:
        d["b"] = d["a"] + 1
    d.update({i: i * i for i in range(300)})  # iteration reads several pages

    def child() -> int:
        d["child"] = os.getpid()
        return 0 if d["b"] == 2 and d[299] == 299 * 299 else 1

    assert fork_call(child) == 0
    assert "child" in d and len(d) == 303
    assert pickle.loads(pickle.dumps(d))["a"] == 1
    shmshare.unlink(d)


def test_lock_on_cluster(redis_cluster: RedisClusterServers) -> None:  # noqa: F811
    """Locks on several names (several masters): exclusion, wake-up, growing tokens."""
    store = RedisStore(redis_cluster.url)
    for n in _names(3):
        a, b = Lock(n, store=store), Lock(n, store=store)
        assert a.acquire(timeout=5)
        first = a.token
        got: list[bool] = []
        t = threading.Thread(target=lambda b=b, got=got: got.append(b.acquire(timeout=30)))
        t.start()
        assert not Lock(n, store=store).acquire(blocking=False)
        a.release()
        t.join(timeout=30)
        assert got == [True] and b.token > first and b.locked()
        b.release()
        a.destroy()


def test_queue_on_cluster(redis_cluster: RedisClusterServers) -> None:  # noqa: F811
    """Queue and JoinableQueue: blocking get woken by put, maxsize, join."""
    store = RedisStore(redis_cluster.url)
    n = _names(1)[0]
    q = Queue(n, 2, store=store)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(pickle.loads(pickle.dumps(q)).get(timeout=30)))
    t.start()
    q.put("x")
    t.join(timeout=30)
    assert got == ["x"]
    q.put(1)
    q.put(2)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert [q.get(timeout=5), q.get(timeout=5)] == [1, 2]
    q.close()
    q.destroy()
    jq = JoinableQueue(n + "j", store=store)
    jq.put("job")
    assert jq.get(timeout=5) == "job"
    assert not jq.join(timeout=0.05)
    jq.task_done()
    assert jq.join(timeout=5)
    jq.close()
    jq.destroy()


def test_event_condition_barrier_on_cluster(redis_cluster: RedisClusterServers) -> None:  # noqa: F811
    """Event, Condition (its lock has a name, and so a node, of its own; a waiter's
    registration is renewed on the condition's node) and Barrier."""
    store = RedisStore(redis_cluster.url)
    n = _names(1)[0]
    ev = Event(n, store=store)
    t = threading.Thread(target=lambda: (ev.wait(timeout=30) and None))
    t.start()
    ev.set()
    t.join(timeout=30)
    assert ev.wait(timeout=0) and not t.is_alive()
    ev.destroy()

    cond = Condition(n + "c", store=store, lease=1.0)
    woke: list[bool] = []

    def waiter() -> None:
        with cond:
            woke.append(cond.wait(timeout=30))

    t = threading.Thread(target=waiter)
    t.start()
    for _ in range(3000):  # until the waiter registered (bounded: 30 s)
        if store.client.llen(store.key(n + "c", "cv-waiters")):
            break
        threading.Event().wait(0.01)
    threading.Event().wait(3.0)  # three leases: its registration must have been renewed
    with cond:
        cond.notify()
    t.join(timeout=30)
    assert woke == [True]
    cond.lock.destroy()
    cond.destroy()

    bar = Barrier(n + "b", 2, store=store)
    idx: list[int] = []
    t = threading.Thread(target=lambda: idx.append(bar.wait(timeout=30)))
    t.start()
    idx.append(bar.wait(timeout=30))
    t.join(timeout=30)
    assert sorted(idx) == [0, 1]
    bar.destroy()


def test_manager_on_cluster(redis_cluster: RedisClusterServers) -> None:  # noqa: F811
    """Manager(url=redis+cluster://...) with a pool of workers."""
    with shmshare.Manager(url=redis_cluster.url) as m:
        d, lock, q = m.dict(), m.Lock(), m.Queue()
        with lock:
            d["k"] = 1
        q.put(d["k"])
        assert q.get(timeout=10) == 1


def test_cluster_down_names_the_url() -> None:
    """No node behind the seed: StoreUnavailableError naming the url (password hidden)."""
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1\b") as info:
        RedisStore("redis+cluster://:secret@127.0.0.1:1", socket_timeout=1.0).ping()
    assert "secret" not in str(info.value)
