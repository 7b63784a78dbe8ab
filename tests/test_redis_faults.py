"""Faults on the Redis store, with real processes and a real redis-server: holders
SIGKILLed or SIGSTOPped, the server killed and restarted (with and without AOF), and the
connection cut by a loopback TCP proxy (tests/tcp_proxy.py).  Every wait is bounded."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import (  # noqa: F401  (fixtures)
    REDIS_SERVER,
    RedisServer,
    name,
    redis_server,
    start_server,
    stop_server,
    store,
)
from tcp_proxy import Proxy

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

from shmshare.stores import LockLostError, StoreUnavailableError
from shmshare.stores.redis import Lock, RedisStore, RLock, Semaphore
from shmshare.stores.redis.events import Barrier, Condition, Event
from shmshare.stores.redis.queue import Queue

LEASE = 1.0
SOCKET_TIMEOUT = 1.0  # the proxied stores' socket timeout: keeps the cut-link tests short


def _until(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except BrokenPipeError:
                pass


def _child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


# ------------------------------------------------------------------ dead holders
SEM_HOLDER = """
import sys
from shmshare.stores.redis import RedisStore, Semaphore
s = Semaphore(sys.argv[2], 2, store=RedisStore(sys.argv[1]), lease=float(sys.argv[3]))
s.acquire(); a = s.token
s.acquire(); b = s.token
print(a, b, flush=True)
sys.stdin.readline()  # SIGKILLed here, holding both permits
"""


def test_permits_of_a_sigkilled_holder_come_back(redis_server: RedisServer,  # noqa: F811
                                                 store: RedisStore, name: str) -> None:  # noqa: F811
    """A process SIGKILLed holding both permits of a Semaphore(2): each is taken again
    within lease + 1 s of the kill, with fencing tokens above the dead holder's."""
    proc = _child(SEM_HOLDER, redis_server.unix_url, name, str(LEASE))
    try:
        assert proc.stdout is not None
        theirs = [int(t) for t in proc.stdout.readline().split()]
        mine = Semaphore(name, 2, store=store, lease=LEASE)
        assert not mine.acquire(blocking=False)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        tokens = []
        for _ in range(2):
            assert mine.acquire(timeout=LEASE + 1.0)
            tokens.append(mine.token)
        assert time.monotonic() - killed < LEASE + 1.0
        assert theirs[0] < theirs[1] < tokens[0] < tokens[1]
        mine.release(2)
        mine.destroy()
    finally:
        _reap(proc)


BARRIER_PARTY = """
import sys
from shmshare.stores.redis import RedisStore
from shmshare.stores.redis.events import Barrier
bar = Barrier(sys.argv[2], 3, store=RedisStore(sys.argv[1]), lease=float(sys.argv[3]))
print("waiting", flush=True)
bar.wait(timeout=60)  # SIGKILLed in here
"""


def test_barrier_party_sigkilled(redis_server: RedisServer,  # noqa: F811
                                 store: RedisStore, name: str) -> None:  # noqa: F811
    """A party SIGKILLed inside Barrier.wait (of three): the live one gets
    BrokenBarrierError within lease + 1 s of the kill, not at its timeout."""
    proc = _child(BARRIER_PARTY, redis_server.unix_url, name, str(LEASE))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "waiting"
        _until(lambda: store.client.zcard(store.key(name, "arrived")) == 1, "the party")
        bar = Barrier(name, 3, store=store, lease=LEASE)
        out: list[Any] = []

        def wait() -> None:
            try:
                out.append(bar.wait(timeout=60))
            except threading.BrokenBarrierError:
                out.append(("broken", time.monotonic()))

        t = threading.Thread(target=wait)
        t.start()
        _until(lambda: store.client.zcard(store.key(name, "arrived")) == 2, "our party")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        t.join(timeout=60)
        assert out and out[0][0] == "broken", out
        assert out[0][1] - killed < LEASE + 1.0
        assert bar.broken
        bar.destroy()
    finally:
        _reap(proc)


# A holder that is stopped past its lease and continued.  It writes to a fenced
# resource: a hash that keeps the highest token seen and refuses a write with a lower one.
FENCED = """
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
if tonumber(ARGV[1]) < top then return 0 end
redis.call('HSET', KEYS[1], 'top', ARGV[1], 'value', ARGV[2])
return 1
"""

PAUSED_HOLDER = """
import sys
from shmshare.stores import LockLostError
from shmshare.stores.redis import Lock, RedisStore
store = RedisStore(sys.argv[1])
lock = Lock(sys.argv[2], store=store, lease=float(sys.argv[3]))
fenced = store.client.register_script(sys.argv[4])
lock.acquire()
token = lock.token
assert fenced(keys=[sys.argv[5]], args=[token, "old holder, in time"]) == 1
print(token, flush=True)
sys.stdin.readline()          # SIGSTOPped here past the lease, then continued
for use in ("token", "check", "release"):
    try:
        getattr(lock, use) if use == "token" else getattr(lock, use)()
    except LockLostError:
        print(use, "lost", flush=True)
    else:
        print(use, "kept", flush=True)
ok = fenced(keys=[sys.argv[5]], args=[token, "old holder, late"])
print("write", "accepted" if ok else "refused", flush=True)
"""


def test_paused_holder_is_told_at_every_use_and_fenced(redis_server: RedisServer,  # noqa: F811
                                                       store: RedisStore,  # noqa: F811
                                                       name: str) -> None:  # noqa: F811
    """SIGSTOP past the lease, SIGCONT: ``token``, ``check()`` and ``release()`` all raise
    LockLostError at once (not only after the renewer thread ran), and the late write
    carrying the old token is refused by the fenced resource."""
    resource = store.key(name, "resource")
    proc = _child(PAUSED_HOLDER, redis_server.unix_url, name, str(LEASE), FENCED, resource)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        theirs = int(proc.stdout.readline())
        proc.send_signal(signal.SIGSTOP)
        lock = Lock(name, store=store, lease=LEASE)
        assert lock.acquire(timeout=LEASE + 1.0)
        assert lock.token > theirs
        fenced = store.client.register_script(FENCED)
        assert fenced(keys=[resource], args=[lock.token, "new holder"]) == 1
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.send_signal(signal.SIGCONT)
        lines = [proc.stdout.readline().strip() for _ in range(4)]
        assert lines == ["token lost", "check lost", "release lost", "write refused"]
        assert proc.wait(timeout=30) == 0
        assert store.client.hget(resource, "value") == b"new holder"
        lock.check()
        assert lock.locked()
        lock.release()
        lock.destroy()
        store.client.delete(resource)
    finally:
        _reap(proc)


# ------------------------------------------------------------ server restarted
@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A redis-server of this test's own, which the test kills and restarts."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    box: dict[str, Any] = {"dir": tmp_path}
    try:
        yield box
    finally:
        if "server" in box:
            stop_server(box["server"].proc)


def _outage_is_clear(what: Callable[[], Any], url_part: str, bound: float) -> None:
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=url_part):
        what()
    assert time.monotonic() - start < bound, "the call hung past its bound"


@pytest.mark.parametrize("aof", [True, False], ids=["appendonly-yes", "appendonly-no"])
def test_server_killed_and_restarted(own_server: dict[str, Any], aof: bool) -> None:
    """redis-server SIGKILLed: every call raises StoreUnavailableError naming the url,
    within the caller's timeout plus the bounded retries; after a restart on the same
    socket the same objects work again.  With AOF the dict, the queue's items and the
    fence survive; without it they are gone, and the fence starts again (documented)."""
    server = own_server["server"] = start_server(own_server["dir"], appendonly=aof)
    s = RedisStore(server.unix_url, socket_timeout=SOCKET_TIMEOUT)
    q = Queue("jobs", store=s, lease=30)
    lock = Lock("lk", store=s, lease=30)
    ev = Event("ev", store=s)
    for i in range(3):
        q.put(i)
    assert lock.acquire(timeout=5)
    before = lock.token
    lock.release()
    s.client.set("shmshare:{plain}:k", b"v")

    server.proc.kill()
    stop_server(server.proc)
    bound = 2 + SOCKET_TIMEOUT + 1.0  # the caller's 2 s, one socket timeout, +1 s for load
    sock = str(server.socket_path.name).replace(".", r"\.")
    _outage_is_clear(s.ping, sock, bound)
    _outage_is_clear(lambda: q.get(timeout=2), sock, bound)
    _outage_is_clear(lambda: q.put(9, timeout=2), sock, bound)
    _outage_is_clear(lambda: lock.acquire(timeout=2), sock, bound)
    _outage_is_clear(lambda: ev.wait(timeout=2), sock, bound)

    server = own_server["server"] = start_server(own_server["dir"], port=server.port,
                                                 password=server.password, appendonly=aof)
    s.ping()
    assert lock.acquire(timeout=5)
    after = lock.token
    lock.release()
    if aof:
        assert [q.get(timeout=5) for _ in range(3)] == [0, 1, 2]
        assert s.client.get("shmshare:{plain}:k") == b"v"
        assert after > before
    else:
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
        assert s.client.get("shmshare:{plain}:k") is None
        assert after == 1  # the fence restarted: tokens do not grow across such a restart
    q.put("again")
    assert q.get(timeout=5) == "again"
    t = threading.Thread(target=lambda: (time.sleep(0.2), Event("ev", store=s).set()))
    t.start()
    assert ev.wait(timeout=10)
    t.join(timeout=30)


# ------------------------------------------------------------------- cut links
@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[Proxy]:  # noqa: F811
    p = Proxy(redis_server.port)
    try:
        yield p
    finally:
        p.close()


def _proxied(proxy: Proxy, server: RedisServer) -> RedisStore:
    return RedisStore(proxy.url(server.password), socket_timeout=SOCKET_TIMEOUT)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    try:
        result: Any = fn()
    except Exception as e:
        result = e
    return result, time.monotonic() - start


@pytest.mark.parametrize("timeout", [0.5, 2.0])
def test_dropped_link_bounds_every_call(proxy: Proxy, redis_server: RedisServer,  # noqa: F811
                                        name: str, timeout: float) -> None:  # noqa: F811
    """A link that goes silent: acquire, Queue.get and Event.wait give up (False, Empty,
    False or StoreUnavailableError naming the url) within their timeout plus one socket
    timeout (a reply that does not come is not waited for again by a retry); once the
    link is back they work again."""
    s = _proxied(proxy, redis_server)
    # (a name per object: a Lock and an Event of one name would share their waiters list)
    lock, q, ev = (Lock(name + "-l", store=s, lease=LEASE),
                   Queue(name + "-q", store=s, lease=LEASE), Event(name + "-e", store=s))
    s.ping()
    proxy.mode = "drop"
    bound = timeout + SOCKET_TIMEOUT + 1.0  # (+1 s for a loaded machine)
    for call in (lambda: lock.acquire(timeout=timeout), lambda: q.get(timeout=timeout),
                 lambda: ev.wait(timeout=timeout)):
        result, took = _timed(call)
        assert took < bound, f"{result!r} after {took:.1f} s (bound {bound:.1f} s)"
        assert result is False or isinstance(result, (queue.Empty, StoreUnavailableError))
        if isinstance(result, StoreUnavailableError):
            assert str(proxy.port) in str(result)
    proxy.mode = "pass"
    assert lock.acquire(timeout=10)
    lock.release()
    q.put(1)
    assert q.get(timeout=10) == 1
    q.close()
    lock.destroy()
    q.destroy()
    ev.destroy()


def test_queue_item_taken_while_the_reply_is_lost(proxy: Proxy,
                                                  redis_server: RedisServer,  # noqa: F811
                                                  store: RedisStore,  # noqa: F811
                                                  name: str) -> None:  # noqa: F811
    """A get blocked on the server whose reply is lost (the item moved into the consumer's
    processing list, the link silent): the item is not dropped; the get (or the next one)
    returns it once the link is back."""
    s = _proxied(proxy, redis_server)
    q = Queue(name, store=s, lease=30)
    got: list[Any] = []

    def consume() -> None:
        try:
            for _ in range(3):
                try:
                    got.append(q.get(timeout=8))
                    return
                except StoreUnavailableError:
                    continue
                except queue.Empty:
                    got.append("empty")
                    return
        finally:
            q.close()  # this thread's consumer lease

    t = threading.Thread(target=consume)
    t.start()
    _until(lambda: store.client.zcard(store.key(name, "consumers")) == 1, "the consumer")
    time.sleep(0.2)  # it is in BLMOVE now
    proxy.mode = "drop_replies"
    Queue(name, store=store).put("precious")
    _until(lambda: store.client.llen(store.key(name, "items")) == 0, "the move")
    time.sleep(SOCKET_TIMEOUT + 1.5)  # its reply is lost; it times out
    proxy.mode = "pass"
    t.join(timeout=30)
    assert got == ["precious"]
    q.close()
    q.destroy()


def test_condition_notified_while_the_reply_is_lost(proxy: Proxy,
                                                    redis_server: RedisServer,  # noqa: F811
                                                    store: RedisStore,  # noqa: F811
                                                    name: str) -> None:  # noqa: F811
    """A Condition waiter whose wake-up was popped on the server but never reached it
    (the link went silent) still returns True (notified), not False at its timeout."""
    s = _proxied(proxy, redis_server)
    cond = Condition(name, store=s, lease=30)
    result: list[Any] = []

    def waiter() -> None:
        with cond:
            result.append(cond.wait(timeout=15))

    t = threading.Thread(target=waiter)
    t.start()
    _until(lambda: store.client.llen(store.key(name, "cv-waiters")) == 1, "the waiter")
    time.sleep(0.2)  # it is in BLPOP now
    proxy.mode = "drop_replies"
    other = Condition(name, lock=RLock(f"{name}.lock", store=store), store=store)
    with other:
        other.notify()
    wake = store.key(name, "wake:")
    _until(lambda: not store.client.keys(wake + "*"), "the wake-up taken")
    time.sleep(SOCKET_TIMEOUT + 1.5)
    proxy.mode = "pass"
    t.join(timeout=60)
    assert result == [True]
    cond.lock.destroy()
    cond.destroy()


def test_reset_after_the_server_acted(proxy: Proxy, redis_server: RedisServer,  # noqa: F811
                                      store: RedisStore, name: str) -> None:  # noqa: F811
    """The server runs a step, then the connection is reset before its reply: the retry
    runs it again.  acquire gets the permit it had already taken (not a wait for its own
    lease), get returns the item it had already moved (not a loss), and release frees."""
    s = _proxied(proxy, redis_server)
    lock, q = Lock(name, store=s, lease=30), Queue(name, store=s, lease=30)
    assert lock.acquire(timeout=5)  # the scripts are loaded: the next reply is the step's
    lock.release()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    proxy.mode = "reset_next_reply"
    result, took = _timed(lambda: lock.acquire(timeout=5))
    assert result is True and took < 5, (result, took)
    assert proxy.mode == "pass"  # the reset happened
    assert store.client.zcard(store.key(name, "holders")) == 1
    first = lock.token
    lock.release()
    assert not Lock(name, store=store).locked()
    assert lock.acquire(timeout=5) and lock.token > first
    lock.release()

    Queue(name, store=store).put("only")
    proxy.mode = "reset_next_reply"
    assert q.get(timeout=5) == "only"
    assert proxy.mode == "pass"
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    q.close()
    lock.destroy()
    q.destroy()


def test_reset_during_blocking_waits(proxy: Proxy, redis_server: RedisServer,  # noqa: F811
                                     store: RedisStore, name: str) -> None:  # noqa: F811
    """Connections reset (RST) while acquire, Queue.get and Event.wait block on the server:
    each still returns what happened (the lock, the item, the event) within its timeout,
    through a reconnect."""
    s = _proxied(proxy, redis_server)
    holder = Lock(name + "-l", store=store, lease=30)
    assert holder.acquire(timeout=5)
    # (a name per object: a Lock and an Event of one name would share their waiters list)
    lock, q, ev = (Lock(name + "-l", store=s, lease=30), Queue(name + "-q", store=s, lease=30),
                   Event(name + "-e", store=s))
    out: dict[str, Any] = {}

    def run(key: str, fn: Callable[[], Any]) -> threading.Thread:
        t = threading.Thread(target=lambda: out.__setitem__(key, _timed(fn)))
        t.start()
        return t

    def get_and_close() -> Any:
        try:
            return q.get(timeout=10)
        finally:
            q.close()  # this thread's consumer lease

    threads = [run("acquire", lambda: lock.acquire(timeout=10)),
               run("get", get_and_close),
               run("wait", lambda: ev.wait(timeout=10))]
    _until(lambda: store.client.zcard(store.key(name + "-q", "consumers")) == 1,
           "the consumer")
    time.sleep(0.3)
    assert proxy.reset() >= 3  # the three waiters' connections at least
    for _ in range(2):
        time.sleep(0.3)
        proxy.reset()
    holder.release()
    Queue(name + "-q", store=store).put("item")
    Event(name + "-e", store=store).set()
    for t in threads:
        t.join(timeout=60)
    assert out["acquire"][0] is True and out["get"][0] == "item" and out["wait"][0] is True
    assert all(took < 10 for _, took in out.values()), out
    lock.release()
    q.close()
    lock.destroy()
    q.destroy()
    ev.destroy()


def test_delayed_link_still_correct(proxy: Proxy, redis_server: RedisServer,  # noqa: F811
                                    name: str) -> None:  # noqa: F811
    """A slow link (50 ms per chunk each way): locks, queues and events work, only slower."""
    s = _proxied(proxy, redis_server)
    proxy.delay = 0.05
    lock, q = Lock(name, store=s, lease=LEASE), Queue(name, store=s, lease=LEASE)
    with lock:
        q.put("a")
    assert q.get(timeout=10) == "a"
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    proxy.delay = 0.0
    q.close()
    lock.destroy()
    q.destroy()


def test_holder_cut_off_past_its_lease_loses_it(proxy: Proxy,
                                              redis_server: RedisServer,  # noqa: F811
                                              name: str) -> None:  # noqa: F811
    """A holder cut off for longer than its lease loses the lock: LockLostError at its next
    use, never a silent double hold."""
    s = _proxied(proxy, redis_server)
    lock = Lock(name, store=s, lease=LEASE)
    assert lock.acquire(timeout=5)
    proxy.mode = "drop"
    time.sleep(LEASE + 0.5)
    proxy.mode = "pass"
    with pytest.raises(LockLostError):
        lock.check()
    with pytest.raises(LockLostError):
        lock.release()
    lock.destroy()


def test_renewer_gives_up_a_lease_on_a_store_that_stays_away(
        redis_server: RedisServer, name: str) -> None:  # noqa: F811
    """The link to the store is gone for good: one lease after its last renewal the lease
    is given up (its holder gets LockLostError, not an error per renewal attempt for ever),
    and the process's renewer thread stops spending time on it."""
    from shmshare.stores.redis import leases

    proxy = Proxy(redis_server.port)
    try:
        s = _proxied(proxy, redis_server)
        lock = Lock(name, store=s, lease=LEASE)
        assert lock.acquire(timeout=5)
        lease = lock._holds[-1].lease
    finally:
        proxy.close()  # connections reset, the port closed: every renewal fails
    _until(lambda: lease.lost, "the lease given up", timeout=LEASE + 5)
    assert lease not in leases.held()
    with pytest.raises(LockLostError):
        lock.check()
    assert _until(lambda: not Lock(name, store=RedisStore(redis_server.unix_url)).locked(),
                  "the server's lease ended") is None


def test_a_silent_store_does_not_starve_another_stores_leases(
        proxy: Proxy, redis_server: RedisServer, store: RedisStore,  # noqa: F811
        name: str) -> None:  # noqa: F811
    """Three locks held through a link that goes silent (each renewal then waits a socket
    timeout) and one held directly: the direct one's short lease is still renewed on time
    (each store's leases have their own renewer thread)."""
    s = _proxied(proxy, redis_server)
    silent = [Lock(f"{name}-s{i}", store=s, lease=0.6) for i in range(3)]
    for lock in silent:
        assert lock.acquire(timeout=5)
    mine = Lock(name, store=store, lease=LEASE)
    assert mine.acquire(timeout=5)
    proxy.mode = "drop"
    time.sleep(4 * LEASE)
    mine.check()  # still ours: renewed meanwhile
    assert mine.locked()
    mine.release()
    proxy.mode = "pass"
    for lock in silent:
        with pytest.raises(LockLostError):
            lock.release()
        lock.destroy()
    mine.destroy()
