"""The objects on both stores: list, set, Namespace, Value, Queue and the sync objects behave
the same in shared memory and on a real redis-server (url=), across processes, nested by
reference; and what the store adds (create flags and kinds of sync objects, lifetimes)."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import secrets
import threading
import time
from typing import Any

import pytest
from helpers import JOIN_TIMEOUT, fork_call, mp_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_server import redis_server  # noqa: F401  (a fixture, started only when needed)
from test_shared_list import OPS
from test_shared_list import outcome as list_outcome

import shmshare
from shmshare import (
    SharedDict,
    SharedList,
    SharedNamespace,
    SharedQueue,
    SharedSet,
    SharedValue,
)
from shmshare.objects import remote
from shmshare.objects.sync import (
    SharedBoundedSemaphore,
    SharedEvent,
    SharedLock,
    SharedRLock,
    SharedSemaphore,
)
from shmshare.objects.typed_array import SharedTypedArray
from shmshare.objects.waits import SharedBarrier, SharedCondition

LEASE = 1.0  # seconds: short lifetimes, so that expiry is seen quickly
# ``kw`` is module-scoped (one value per store), which hypothesis may share between examples.
FIXTURE = HealthCheck.function_scoped_fixture


@pytest.fixture
def url(redis_server) -> str:  # type: ignore[no-untyped-def]  # noqa: F811
    pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")
    return str(redis_server.unix_url)


def _done(*objs: Any) -> None:
    """Remove the test's objects now (on Redis they would otherwise expire a lifetime later)."""
    for obj in objs:
        obj.unlink()
        obj.detach()


# -- list -------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE])
@given(st.lists(st.integers(0, 9), max_size=8), st.lists(OPS, max_size=12))
def test_list_differential_against_list(kw: dict[str, Any], start: list[int],
                                        ops: list[tuple[Any, ...]]) -> None:
    """Every operation gives the same result, exception and contents as on a list."""
    ref = list(start)
    shared = SharedList(start, **kw)
    try:
        assert isinstance(shared, SharedList)
        for op in ops:
            assert list_outcome(shared, op) == list_outcome(ref, op), op
            assert shared.copy() == ref, op
        assert list(shared) == ref and len(shared) == len(ref)
        shared.check()
    finally:
        _done(shared)


def test_list_operators_and_errors(kw: dict[str, Any]) -> None:
    """+ and * give plain lists; += and *= change in place; errors as list's."""
    a = SharedList([1, 2], **kw)
    assert a + [3] == [1, 2, 3] and type(a + [3]) is list  # noqa: RUF005 - testing +
    assert [0] + a == [0, 1, 2] and a * 2 == [1, 2, 1, 2]  # noqa: RUF005
    b = a
    a += [3]
    a *= 2
    assert b is a and a == [1, 2, 3, 1, 2, 3] and a < [9] and 3 in a
    assert next(reversed(a)) == 3 and a[-1] == 3 and a[1:3] == [2, 3]
    assert repr(a).startswith("SharedList([1, 2, 3")
    for bad in (lambda: a["x"], lambda: a.__setitem__(99, 0), lambda: a.pop(99)):
        with pytest.raises((TypeError, IndexError)):
            bad()
    with pytest.raises(TypeError):
        a.append(threading.Lock())  # unpicklable: nothing changes
    with pytest.raises(TypeError):
        a.extend([7, threading.Lock()])
    assert a == [1, 2, 3, 1, 2, 3]
    a.sort(key=lambda v: -v)
    assert a == [3, 3, 2, 2, 1, 1]
    a.clear()
    with pytest.raises(IndexError, match="empty"):
        a.pop()
    _done(a)


def _append_many(lst: Any, n: int) -> None:
    for i in range(n):
        lst.append(i)


def _rewrite_under_lock(lst: Any, n: int) -> None:
    for i in range(n):
        if i % 2:
            lst.reverse()  # read and written back under the list's lock, by itself
        else:
            with lst.lock:  # several steps made one
                lst[:] = sorted(lst)


def test_list_writes_from_processes_are_atomic(kw: dict[str, Any]) -> None:
    """Appends from a spawned and a forked process, while a third rewrites the whole list
    under its lock: no append is lost (the rewrite is atomic against other writers)."""
    lst = SharedList(**kw)
    assert len(pickle.dumps(lst)) < 500
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(lst, 100)),
             mp.get_context("fork").Process(target=_rewrite_under_lock, args=(lst, 20))]
    for p in procs:
        p.start()
    _append_many(lst, 100)
    for p in procs:
        p.join(JOIN_TIMEOUT)
        assert p.exitcode == 0
    assert sorted(lst) == sorted(list(range(100)) * 2)
    _done(lst)


def _insert_front(lst: Any, tag: str, n: int) -> None:
    for i in range(n):
        lst.insert(0, (tag, i))
        if i % 3 == 0:
            lst.pop(len(lst) // 2)  # a pop in the middle: every item after it moves


def test_list_index_operations_from_processes(kw: dict[str, Any]) -> None:
    """insert at 0 and pop in the middle from two processes at once: each is one atomic
    step, so exactly the right number of items remain and none is duplicated."""
    lst = SharedList([("seed", i) for i in range(50)], **kw)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            _insert_front(lst, "child", 60)
            code = 0
        finally:
            os._exit(code)
    _insert_front(lst, "parent", 60)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    items = lst.copy()
    assert len(items) == 50 + 2 * 60 - 2 * 20 and len(set(items)) == len(items)
    _done(lst)


# -- set --------------------------------------------------------------------------------

ITEMS = st.sampled_from([0, 1, 1.0, True, False, 2, 2.5, "a", b"a", (1, "x"), None])
SET_OPS = st.one_of(
    st.tuples(st.just("add"), ITEMS), st.tuples(st.just("discard"), ITEMS),
    st.tuples(st.just("remove"), ITEMS), st.tuples(st.just("pop")),
    st.tuples(st.just("update"), st.lists(ITEMS, max_size=3)),
    st.tuples(st.just("difference_update"), st.lists(ITEMS, max_size=3)),
    st.tuples(st.just("intersection_update"), st.lists(ITEMS, max_size=4)),
    st.tuples(st.just("symmetric_difference_update"), st.lists(ITEMS, max_size=3)),
    st.tuples(st.just("__contains__"), ITEMS), st.tuples(st.just("clear")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE])
@given(st.lists(ITEMS, max_size=6), st.lists(SET_OPS, max_size=10))
def test_set_differential_against_set(kw: dict[str, Any], start: list[Any],
                                      ops: list[tuple[Any, ...]]) -> None:
    """Same results and contents as a set, with set's equality (1 == 1.0 == True)."""
    ref = set(start)
    shared = SharedSet(start, **kw)
    try:
        for name, *args in ops:
            if name == "pop":  # which item pops differs; that one is gone from both
                got = outcome(shared.pop)
                if got[0] == "ok":
                    ref.remove(got[1])
                else:
                    assert not ref
                continue
            assert outcome(getattr(shared, name), *args) == outcome(getattr(ref, name), *args)
            assert shared.copy() == ref and len(shared) == len(ref)
        assert shared == ref and shared | {"z"} == ref | {"z"}
    finally:
        _done(shared)


def outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except Exception as exc:
        return "error", type(exc)


# -- typed arrays -----------------------------------------------------------------------

@pytest.mark.parametrize(("typecode", "init", "item"), [
    ("i", [1, -2, 3, 4, 5], 9), ("d", 5, 2.5), ("c", b"hello", b"J"), ("u", "h\xe9llo", "J"),
    ("q", [-1, 2**40, 0, 7, 8], -(2**50)), ("B", range(5), 255)])
def test_typed_array_as_multiprocessing_array(kw: dict[str, Any], typecode: str, init: Any,
                                              item: Any) -> None:
    """Items, slices (with steps), value/raw, errors and pickling as mp.Array's."""
    ours = SharedTypedArray(typecode, init, **kw)
    try:
        model = list(ours)  # the items one by one: bytes of 1 for 'c', str of 1 for 'u'
        if typecode != "u":
            ref = mp.Array(typecode, init, lock=False)
            assert list(ref) == model and ref[:] == ours[:]

        def joined(items: list[Any]) -> Any:
            return (b"".join(items) if typecode == "c" else "".join(items)
                    if typecode == "u" else items)

        assert len(ours) == 5 and ours.typecode == typecode
        ours[1] = item
        ours[-1] = item
        ours[0:2] = joined(model[2:4])
        model[1] = model[-1] = item
        model[0:2] = model[2:4]
        assert ours[:] == joined(model) and ours[::2] == joined(model[::2])
        assert ours[-1] == item and list(ours) == model
        ours[::2] = joined(model[::2][::-1])  # a slice with a step, as mp.Array allows
        model[::2] = model[::2][::-1]
        assert ours[:] == joined(model) and ours[::-2] == joined(model[::-2])
        with pytest.raises(IndexError):
            ours[5]
        with pytest.raises(ValueError, match="same size"):
            ours[0:2] = joined(model[0:3])
        if typecode in "cu":
            ours.value = init[:2]
            assert ours.value == init[:2]
        else:
            with pytest.raises(TypeError):
                ours[0] = "x"
        again = pickle.loads(pickle.dumps(ours))
        assert again[:] == ours[:]
        again.detach()
        with ours.get_lock():
            ours[2] = item
        assert fork_call(lambda: 0 if ours[2] == item else 1) == 0
    finally:
        _done(ours)


def test_typed_array_on_a_store_has_no_numpy_view(url: str) -> None:
    """On a store the items are copies: numpy() explains; Manager(url).Array works, by name."""
    with shmshare.Manager(url=url) as m:
        a = m.Array("i", range(3))
        with pytest.raises(shmshare.ShmTypeError, match="no numpy view"):
            a.numpy()
        assert SharedTypedArray(name=a.name, url=url)[:] == [0, 1, 2]
        with pytest.raises(ValueError, match="typecode 'i' and length 3"):
            SharedTypedArray("d", 3, name=a.name, url=url)


# -- Namespace, Value, nesting ----------------------------------------------------------

def _use_nested(d: Any) -> None:
    d["list"].append("child")
    d["set"].add("child")
    d["ns"].seen = "child"
    with d["lock"]:
        d["value"].value += 1
    d["queue"].put("child")
    d["event"].set()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_nested_objects_by_reference(kw: dict[str, Any], method: str) -> None:
    """A dict whose values are shared objects pickles them by reference: another process
    changes the same list, set, Namespace, Value, Queue and Event, under the same Lock."""
    parts = {"list": SharedList([1], **kw), "set": SharedSet({1}, **kw),
             "ns": SharedNamespace(**kw), "value": SharedValue("i", 0, **kw),
             "lock": SharedLock(**kw), "queue": SharedQueue(**kw), "event": SharedEvent(**kw)}
    d = SharedDict(parts, **kw)
    assert mp_run(method, _use_nested, d) == 0
    assert d["event"].is_set() and d["queue"].get(timeout=10) == "child"
    assert parts["list"] == [1, "child"] and parts["set"] == {1, "child"}
    assert parts["ns"].seen == "child" and parts["value"].value == 1
    for obj in (d, *parts.values()):
        if isinstance(obj, SharedNamespace):
            shmshare.unlink(obj)
            shmshare.detach(obj)
        else:
            _done(obj)


def test_namespace_and_value(kw: dict[str, Any]) -> None:
    """Attributes are the user's; a Value checks its typecode; both seen by a child."""
    ns = SharedNamespace({"name": "Bob"}, **kw)
    ns.lock = 1
    v = SharedValue("d", 1.5, **kw)
    v.value *= 2
    assert fork_call(lambda: 0 if (ns.name, ns.lock, v.value) == ("Bob", 1, 3.0) else 1) == 0
    with pytest.raises(TypeError):
        v.value = "x"
    del ns.lock
    with pytest.raises(AttributeError):
        ns.lock  # noqa: B018
    shmshare.unlink(ns)
    shmshare.detach(ns)
    _done(v)


# -- Queue and the sync objects ---------------------------------------------------------

def test_queue_matches_queue_queue(kw: dict[str, Any]) -> None:
    """put/get/qsize/empty/full/nowait/task_done/join as queue.Queue."""
    q = SharedQueue(2, **kw)
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put(1)
    q.put_nowait([2])
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    assert q.get() == 1 and q.get_nowait() == [2]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    q.task_done()
    q.task_done()
    with pytest.raises(ValueError):
        q.task_done()
    q.join()
    _done(q)


def test_sync_objects_match_threading(kw: dict[str, Any]) -> None:
    """acquire/release results and errors as threading's objects (the Manager's are those)."""
    for ours, theirs in [(SharedLock(**kw), threading.Lock()),
                         (SharedRLock(**kw), threading.RLock()),
                         (SharedSemaphore(2, **kw), threading.Semaphore(2)),
                         (SharedBoundedSemaphore(1, **kw), threading.BoundedSemaphore(1))]:
        for step in [lambda x: x.acquire(), lambda x: x.acquire(False),
                     lambda x: x.acquire(timeout=0.01), lambda x: x.release(),
                     lambda x: x.release(), lambda x: x.release()]:
            assert outcome(step, ours) == outcome(step, theirs)
        _done(ours)
    ev, ref = SharedEvent(**kw), threading.Event()
    for step in [lambda e: e.is_set(), lambda e: e.wait(0.01), lambda e: e.set(),
                 lambda e: e.is_set(), lambda e: e.wait(), lambda e: e.clear(),
                 lambda e: e.wait(0.01)]:
        assert outcome(step, ev) == outcome(step, ref)
    cond = SharedCondition(**kw)
    with cond:
        assert cond.wait(0.01) is False and cond.wait_for(lambda: 1, 0.01) == 1
    with pytest.raises(RuntimeError):
        cond.notify()
    bar = SharedBarrier(1, **kw)
    assert bar.wait(5) == 0 and bar.parties == 1
    _done(ev, cond, bar)


def _worker(lock: Any, sem: Any, q: Any, bar: Any, ev: Any, out: Any) -> None:
    bar.wait(JOIN_TIMEOUT)
    with lock:
        out.put(os.getpid())
    q.put(os.getpid())
    sem.release()
    ev.wait(JOIN_TIMEOUT)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sync_objects_pass_to_processes(kw: dict[str, Any], method: str) -> None:
    """Lock, Semaphore, Queue, Barrier and Event pass to Process by reference."""
    lock, sem, q, out = SharedLock(**kw), SharedSemaphore(0, **kw), SharedQueue(**kw), \
        SharedQueue(**kw)
    bar, ev = SharedBarrier(3, **kw), SharedEvent(**kw)
    ctx = mp.get_context(method)
    procs = [ctx.Process(target=_worker, args=(lock, sem, q, bar, ev, out)) for _ in range(2)]
    for p in procs:
        p.start()
    assert bar.wait(JOIN_TIMEOUT) in (0, 1, 2)
    for _ in procs:
        assert sem.acquire(timeout=JOIN_TIMEOUT)
    ev.set()
    for p in procs:
        p.join(JOIN_TIMEOUT)
        assert p.exitcode == 0
    pids = {p.pid for p in procs}
    assert {q.get(timeout=5), q.get(timeout=5)} == pids == {out.get(timeout=5),
                                                           out.get(timeout=5)}
    _done(lock, sem, q, out, bar, ev)


def _executor_task(args: tuple[Any, Any, Any, int]) -> int:
    lock, q, v, i = args
    with lock:
        v.value += 1
    q.put(i)
    return i


def test_sync_objects_pass_to_a_process_pool_executor(kw: dict[str, Any]) -> None:
    """Lock, Queue and Value pass to ProcessPoolExecutor tasks (spawn); locked updates exact."""
    import concurrent.futures as cf

    lock, q, v = SharedLock(**kw), SharedQueue(**kw), SharedValue("i", 0, **kw)
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        assert sorted(ex.map(_executor_task, [(lock, q, v, i) for i in range(8)])) == \
            list(range(8))
    assert v.value == 8 and sorted(q.get(timeout=5) for _ in range(8)) == list(range(8))
    _done(lock, q, v)


# -- what the store adds ----------------------------------------------------------------

def test_sync_objects_by_name_on_a_store(url: str) -> None:
    """create= flags, one kind per name, the creator's value kept, unlink seen by all."""
    name = f"s-{secrets.token_hex(4)}"
    with pytest.raises(FileNotFoundError, match="create=False"):
        SharedSemaphore(name=name, create=False, url=url)
    a = SharedSemaphore(3, name=name, create=True, url=url)
    with pytest.raises(FileExistsError):
        SharedSemaphore(name=name, create=True, url=url)
    b = SharedSemaphore(name=name, url=url)  # the default value 1: the stored 3 wins
    assert [b.acquire(False) for _ in range(4)] == [True, True, True, False]
    with pytest.raises(shmshare.WrongTypeError, match="is a 'semaphore'"):
        SharedLock(name=name, url=url)
    with pytest.raises(shmshare.WrongTypeError):
        SharedDict(name=name, url=url)
    with pytest.raises(TypeError, match="not both"):
        SharedLock(name=name, url=url, project_dir="/tmp")
    with pytest.raises(shmshare.ShmTypeError):
        SharedCondition(threading.Lock(), url=url)
    assert shmshare.name_of(a) == name and shmshare.segment_of(a).persist is False
    q = SharedQueue(2, name=name + "-q", url=url)
    with pytest.raises(shmshare.ShmValueError, match="maxsize 2, not 3"):
        SharedQueue(3, name=name + "-q", url=url)  # as on shared memory
    assert SharedQueue(name=name + "-q", url=url).maxsize == 2
    q.unlink()
    anon = SharedEvent(url=url)
    assert shmshare.name_of(anon) is None and pickle.loads(pickle.dumps(anon)).name == anon.name
    shmshare.unlink(anon)  # the module functions take these objects too
    shmshare.detach(anon)
    assert mp_run("spawn", _release_three, b) == 0
    assert [a.acquire(False) for _ in range(4)] == [True, True, True, False]
    a.unlink()
    assert SharedSemaphore(name=name, create=True, url=url) is not None  # the name is free
    SharedSemaphore(name=name, url=url).unlink()


def _release_three(sem: Any) -> None:
    for _ in range(3):
        sem.release()


def test_shmshare_url_is_the_default_for_every_class(url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With $SHMSHARE_URL set, every class goes to the store; project_dir= still asks for
    shared memory; unpickling a shared-memory object does not dispatch."""
    shm = SharedList([1])
    monkeypatch.setenv("SHMSHARE_URL", url)
    lst, lock, q = SharedList([1]), SharedLock(), SharedQueue()
    assert type(lst).__name__ == "RemoteList" and type(lock).__name__ == "RemoteLock"
    assert type(q).__name__ == "RemoteQueue"
    again = pickle.loads(pickle.dumps(shm))
    assert type(again) is SharedList and again == [1]
    again.detach()
    shm.detach()
    _done(lst, lock, q)


def test_anonymous_sync_object_expires_after_its_last_holder(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handle renews its object's TTL; once detached, the server removes it."""
    monkeypatch.setattr(remote, "LIFETIME", LEASE)
    lock = SharedLock(url=url)
    assert lock.acquire()
    client, key = lock.store.client, lock.store.key(lock.name, "kind")
    deadline = time.monotonic() + LEASE * 3
    while time.monotonic() < deadline:  # held: renewed past its lifetime
        assert client.exists(key)
        time.sleep(0.1)
    lock.release()
    lock.detach()
    deadline = time.monotonic() + LEASE * 3 + 5
    while client.exists(key) or client.exists(lock.store.key(lock.name, "fence")):
        assert time.monotonic() < deadline, "the detached lock was never removed"
        time.sleep(0.05)


def test_persistent_list_survives_its_holders(url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """persist=True: no TTL, reopened by name after every handle detached, until unlink."""
    monkeypatch.setattr(remote, "LIFETIME", LEASE)
    name = f"p-{secrets.token_hex(4)}"
    a = SharedList([1, 2], name=name, persist=True, url=url)
    a.detach()
    time.sleep(LEASE * 2)
    b = SharedList(name=name, create=False, url=url)
    c = SharedList(name=name, url=url)
    assert b == [1, 2] and b.persist and c.persist  # the creator chose: no TTL for anyone
    c.append(3)  # a write by an opener that did not say persist=True
    h = shmshare.segment_of(c)
    assert h.store.client.pttl(h.store.key(h.store_name, "kind")) == -1  # type: ignore[attr-defined]
    lock = SharedLock(name=name + "-lock", persist=True, url=url)
    again = SharedLock(name=name + "-lock", url=url)
    assert again.persist and again.store.client.pttl(again.store.key(again.name, "kind")) == -1
    lock.unlink()
    b.unlink()
    with pytest.raises(shmshare.ObjectGoneError):
        c.append(3)  # another handle: the list is gone for every holder
    c.detach()


def test_list_write_under_an_ended_lease_is_refused(url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A list's lock holder whose lease ended (as if paused past it) gets LockLostError from
    its next write, index step or whole rewrite alike, and the list keeps the other's writes."""
    from shmshare.stores import LockLostError
    from shmshare.stores.redis import leases

    monkeypatch.setattr(remote, "LOCK_LEASE", LEASE)
    lst = SharedList([1, 2, 3], url=url)
    lst.lock.acquire()
    leases.release(lst.lock._holds[-1].lease)  # this process stops renewing: as if paused
    deadline = time.monotonic() + LEASE + 5
    while lst.lock.locked():
        assert time.monotonic() < deadline
        time.sleep(0.02)

    def take_it_meanwhile() -> int:
        assert lst.lock.acquire(timeout=5)
        lst.append("theirs")
        return 0

    assert fork_call(take_it_meanwhile) == 0  # (exits holding it: its lease runs on)
    for write in (lambda: lst.append(4), lambda: lst.insert(0, 0), lambda: lst.reverse(),
                  lambda: lst.__setitem__(slice(None), [9])):
        with pytest.raises(LockLostError):
            write()
    assert lst.copy() == [1, 2, 3, "theirs"]
    with pytest.raises(LockLostError):
        lst.lock.release()
    lst.unlink()
