"""The public objects and the Manager on a real redis-server: url=, $SHMSHARE_URL, pickling
by reference, lifetimes, fenced writes, a SIGKILLed lock holder, Pools under fork and spawn."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import textwrap
import time

import pytest
from helpers import fork_call, fork_child, run_python, wait_pid
from redis_server import RedisServer, redis_server  # noqa: F401  (fixtures)

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

import shmshare
from shmshare import SharedDict, SharedNamespace, SharedValue
from shmshare.objects import remote
from shmshare.stores import LockLostError
from shmshare.stores.redis import leases

LEASE = 1.0  # seconds: short, so that recovery stays quick


@pytest.fixture
def url(redis_server: RedisServer) -> str:  # noqa: F811
    return redis_server.unix_url


def _exists(obj: object) -> bool:
    h = shmshare.segment_of(obj)  # type: ignore[arg-type]
    return bool(h.store.client.exists(h.store.key(h.store_name, "kind")))  # type: ignore[attr-defined]


def _until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true or ``timeout`` passes (what the server's clock decides)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_namespace_and_value(url: str) -> None:
    """A Namespace's attribute space is the user's and a Value checks its typecode, on Redis too."""
    ns = SharedNamespace({"name": "Bob"}, url=url)
    ns.lock = 1
    assert (ns.name, ns.lock) == ("Bob", 1) and "Bob" in repr(ns)
    del ns.lock
    with pytest.raises(AttributeError):
        ns.lock  # noqa: B018
    v = SharedValue("i", 3, name=f"v-{os.getpid()}", url=url)
    v.value += 1
    assert fork_call(lambda: 0 if v.value == 4 else 1) == 0
    with pytest.raises(ValueError, match="typecode 'i'"):
        SharedValue("d", name=f"v-{os.getpid()}", url=url)
    with pytest.raises(TypeError):
        v.value = 1.5
    for obj in (ns, v):
        shmshare.unlink(obj)


def test_create_flags_and_kinds(url: str) -> None:
    """create=True/False as in shared memory; a name holds one kind; unlink is seen by all."""
    name = f"flags-{os.getpid()}"
    with pytest.raises(FileNotFoundError, match="create=False"):
        SharedDict(name=name, create=False, url=url)
    a = SharedDict({"k": 1}, name=name, create=True, url=url)
    with pytest.raises(FileExistsError):
        SharedDict(name=name, create=True, url=url)
    b = SharedDict({"k": 99}, name=name, url=url)  # opening never re-applies the data
    assert b["k"] == 1
    with pytest.raises(shmshare.WrongTypeError, match="is a 'dict'"):
        SharedNamespace(name=name, url=url)
    with pytest.raises(TypeError, match="not both"):
        SharedDict(name=name, url=url, project_dir="/tmp")
    a.unlink()
    with pytest.raises(shmshare.ObjectGoneError, match="is gone"):
        b["k"] = 2
    b.detach()
    with pytest.raises(ValueError, match="detached"):
        b.get("k")
    assert "detached" in repr(b)


def test_shmshare_url_is_the_default(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """$SHMSHARE_URL puts objects on Redis; a kind not yet there refuses, naming the issue."""
    monkeypatch.setenv("SHMSHARE_URL", url)
    d = SharedDict({"a": 1})
    assert type(shmshare.segment_of(d)).__name__ == "RemoteHandle"
    assert pickle.loads(pickle.dumps(d))["a"] == 1
    with pytest.raises(NotImplementedError, match="numpy views"):
        shmshare.SharedArray((2,), "f8")  # views of shared memory have no store version
    d.unlink()


@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_pickles_by_reference_to_an_unrelated_process(redis_server: RedisServer,  # noqa: F811
                                                      over: str) -> None:
    """A pickle is the url and the name: a fresh interpreter opens the same dict (over a
    unix socket, and over TCP with a password)."""
    url = redis_server.unix_url if over == "unix" else redis_server.tcp_url
    d = SharedDict({"big": b"x" * 100_000}, name=f"ref-{os.getpid()}", url=url)
    data = pickle.dumps(d)
    assert len(data) < 400
    run_python(textwrap.dedent("""
        import pickle, sys
        d = pickle.loads(bytes.fromhex(sys.argv[1]))
        assert len(d["big"]) == 100_000
        d["child"] = "was here"
    """), data.hex())
    assert d["child"] == "was here"
    d.unlink()


def test_anonymous_object_outlives_its_last_holder_by_one_lifetime(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held, an anonymous dict's TTL is renewed; detached everywhere, the server removes it."""
    monkeypatch.setattr(remote, "LIFETIME", LEASE)
    d = SharedDict({"a": 1}, url=url)
    h = shmshare.segment_of(d)
    key = h.store.key(h.store_name, "kind")  # type: ignore[attr-defined]
    client = h.store.client  # type: ignore[attr-defined]
    lowest = [client.pttl(key)]
    assert 0 < lowest[0] <= LEASE * 1000

    def renewed() -> bool:  # the TTL went up again: renewed, not merely counting down
        ttl = client.pttl(key)
        lowest[0] = min(lowest[0], ttl)
        return bool(ttl > lowest[0] + 100)

    assert _until(renewed)
    d.detach()
    assert _until(lambda: not client.exists(key), timeout=LEASE * 3 + 5)


def test_write_under_an_ended_lease_is_refused(url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A holder whose lease ended (paused past it) gets LockLostError and writes nothing."""
    monkeypatch.setattr(remote, "LOCK_LEASE", LEASE)
    d = SharedDict({"k": "before"}, url=url)
    d.lock.acquire()
    leases.release(d.lock._holds[-1].lease)  # this process stops renewing: as if paused
    assert _until(lambda: not d.lock.locked(), timeout=LEASE + 5)
    with pytest.raises(LockLostError, match="refused"):
        d["k"] = "after"

    def take_it_meanwhile() -> int:
        assert d.lock.acquire(timeout=5)
        d["k"] = "theirs"  # the new holder's write, which ours must not overwrite
        return 0

    assert fork_call(take_it_meanwhile) == 0  # (exits holding it: its lease runs on)
    with pytest.raises(LockLostError, match="refused"):
        d["k"] = "after"
    assert fork_call(lambda: 0 if d["k"] == "theirs" else 1) == 0
    with pytest.raises(LockLostError):
        d.lock.release()
    d.unlink()


def test_dead_holder_of_a_dict_lock(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process SIGKILLed inside ``with d.lock:``: its writes stand, and the lock (and with
    it every writer, which waits for it) comes back one lease later."""
    monkeypatch.setattr(remote, "LOCK_LEASE", LEASE)
    d = SharedDict({"a": 1}, url=url)
    r, w = os.pipe()

    def hold_and_die() -> None:
        d.lock.acquire()
        d["b"] = 2
        os.write(w, b"1")
        os.kill(os.getpid(), signal.SIGKILL)

    pid = fork_child(hold_and_die)
    assert os.read(r, 1) == b"1"
    assert wait_pid(pid) == -signal.SIGKILL
    d["c"] = 3  # waits for the dead holder's lease, then writes
    assert d.copy() == {"a": 1, "b": 2, "c": 3}
    assert d.lock.acquire(timeout=LEASE + 1)
    d.lock.release()
    os.close(r)
    os.close(w)
    d.unlink()


def test_manager_lock_of_a_sigkilled_holder(url: str) -> None:
    """A client SIGKILLed holding a Manager(url=) Lock: recovered within lease + 1 s, with a
    larger fencing token."""
    with shmshare.Manager(url=url, lease=LEASE) as m:
        lock = m.Lock()
        r, w = os.pipe()

        def hold_and_die() -> None:
            lock.acquire()
            os.write(w, str(lock.token).encode() + b"\n")
            os.kill(os.getpid(), signal.SIGKILL)

        pid = fork_child(hold_and_die)
        token = int(os.read(r, 64))
        assert wait_pid(pid) == -signal.SIGKILL
        assert lock.acquire(timeout=LEASE + 1)
        assert lock.token > token
        lock.release()
        os.close(r)
        os.close(w)


def _work(args: tuple[object, object, object, int]) -> int:
    d, lock, q, i = args
    with lock:  # type: ignore[attr-defined]
        d["n"] = d.get("n", 0) + 1  # type: ignore[attr-defined]
    d.apply("total", lambda t: t + i, default=0)  # type: ignore[attr-defined]
    q.put(i)  # type: ignore[attr-defined]
    return i


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_manager_on_redis_with_a_pool(url: str, method: str) -> None:
    """Manager(url=) objects pass to a Pool by reference; locked and applied updates are
    exact; shutdown removes every key the manager made."""
    m = shmshare.Manager(url=url, ctx=mp.get_context(method))
    d, lock, q = m.dict(), m.Lock(), m.Queue()
    with m.Pool(2) as pool:
        assert sorted(pool.map(_work, [(d, lock, q, i) for i in range(12)])) == list(range(12))
    assert d["n"] == 12 and d["total"] == sum(range(12))
    assert sorted(q.get(timeout=5) for _ in range(12)) == list(range(12))
    lst, arr = m.list([1]), m.Array("i", 2)  # every typeid is on the store
    with m.Pool(2) as pool:
        pool.map(_append, [(lst, arr, i) for i in range(6)])
    assert sorted(lst) == [0, 1, 1, 2, 3, 4, 5] and arr[:] == [6, 15]
    client = shmshare.segment_of(d).store.client  # type: ignore[attr-defined]
    prefix = m._prefix
    m.shutdown()
    assert client.keys(f"shmshare:{{{prefix}*") == []


def _append(args: tuple[object, object, int]) -> None:
    lst, arr, i = args
    lst.append(i)  # type: ignore[attr-defined]
    with arr.get_lock():  # type: ignore[attr-defined]
        arr[0] += 1  # type: ignore[index]
        arr[1] += i  # type: ignore[index]


def _make_and_return(args: tuple[str, int]) -> SharedDict:
    url, i = args
    d = SharedDict({"i": i}, url=url)  # anonymous; this worker's handle goes at return
    return d


def test_anonymous_dict_returned_from_a_pool_worker(url: str) -> None:
    """A dict a worker makes and returns arrives alive: its lifetime outlasts the handoff."""
    with mp.get_context("fork").Pool(2) as pool:
        dicts = pool.map(_make_and_return, [(url, i) for i in range(4)])
    assert [d["i"] for d in dicts] == list(range(4))
    for d in dicts:
        d.unlink()


def test_a_child_forked_inside_the_lock_holds_nothing(url: str) -> None:
    """A child forked inside ``with d.lock:`` does not share the parent's hold: its
    acquire waits (times out here) and its writes are not the holder's."""
    d = SharedDict({"k": 0}, url=url)
    with d.lock:
        def child() -> int:
            if d.lock.held() or d.lock.acquire(timeout=0.2):
                return 1
            return 0

        assert fork_call(child) == 0
    d.unlink()


def test_clear_errors_for_an_unreachable_or_untrusted_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No server: StoreUnavailableError naming the url (password hidden); an unauthenticated
    remote host: refused before any connection; no url anywhere: shared memory, as always."""
    from shmshare.stores import StoreUnavailableError, UntrustedStoreError

    with pytest.raises(StoreUnavailableError, match=r"unix://:\*\*\*@.*unavailable") as info:
        SharedDict(name="x", url=f"unix://:hunter2@{tmp_path}/no.sock")
    assert "hunter2" not in str(info.value)
    with pytest.raises(StoreUnavailableError):
        shmshare.Manager(url=f"unix://:pw@{tmp_path}/no.sock")
    with pytest.raises(UntrustedStoreError, match="trust=True"):
        SharedNamespace(url="redis://192.0.2.1:6379/0")
    with pytest.raises(TypeError, match="store url"):
        SharedValue("i", url=b"redis://x")  # type: ignore[arg-type]


def test_objects_of_a_killed_manager_expire(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Manager(url=) SIGKILLed before shutdown(): every key it made expires one lifetime
    after its last renewal (dicts by their own lifetime, locks and queues by the manager's)."""
    monkeypatch.setattr(remote, "LIFETIME", LEASE)
    r, w = os.pipe()

    def manage_and_die() -> None:
        m = shmshare.Manager(url=url, lease=LEASE)
        m.dict(a=1)
        lock, q = m.Lock(), m.Queue()
        with lock:
            q.put(1)
        # Keys first written since the last renewal have no TTL yet (documented): die
        # once a renewal has given every key one.
        client = m._store.client
        keys = [k for obj in m._keeper.objects for k in client.keys(obj._prefix + "*")]
        assert _until(lambda: all(client.pttl(k) > 0 for k in keys))
        os.write(w, m._prefix.encode() + b"\n")
        os.kill(os.getpid(), signal.SIGKILL)

    pid = fork_child(manage_and_die)
    prefix = os.read(r, 64).decode().strip()
    assert wait_pid(pid) == -signal.SIGKILL
    os.close(r)
    os.close(w)
    from shmshare.stores.redis import RedisStore

    client = RedisStore(url).client
    pattern = f"shmshare:{{{prefix}*"
    assert client.keys(pattern)  # the objects are there...
    assert _until(lambda: not client.keys(pattern), timeout=LEASE * 3 + 5), client.keys(pattern)
