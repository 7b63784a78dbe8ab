"""shmshare.Manager side by side with multiprocessing.Manager."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.managers
from multiprocessing.context import ProcessError
from typing import Any

import pytest
from helpers import JOIN_TIMEOUT, START_METHODS
from redis_server import redis_server  # noqa: F401  (a fixture, started only when needed)

import shmshare


@pytest.fixture(params=["shm", "redis"])
def both(request, tmp_path):  # type: ignore[no-untyped-def]
    """A shmshare Manager (in this test's own directory, or on a real redis-server) and a
    multiprocessing one."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").unix_url
        ours = shmshare.Manager(url=url)
    else:
        ours = shmshare.Manager(project_dir=tmp_path)
    with ours, mp.Manager() as theirs:
        yield ours, theirs


@pytest.fixture(params=["shm", "redis"])
def ours(request, tmp_path):  # type: ignore[no-untyped-def]
    """A started shmshare Manager: in this test's own directory, or on a redis-server; every
    object it made is gone after its shutdown."""
    if request.param == "redis":
        m = shmshare.Manager(url=request.getfixturevalue("redis_server").unix_url)
        client, prefix = m._store.client, m._prefix
        with m:
            yield m
        assert client.keys(f"shmshare:{{{prefix}*") == []  # shutdown removed everything
        return
    with shmshare.Manager(project_dir=tmp_path) as m:
        yield m
    assert not list((tmp_path / "managers").iterdir())  # shutdown removed everything


def on_redis(m: Any) -> bool:
    return getattr(m, "_url", None) is not None


def same(f: Any, ours: Any, theirs: Any) -> Any:
    """Run ``f`` on both; results and exception types must agree."""
    def run(obj: Any) -> tuple[str, Any]:
        try:
            return "ok", f(obj)
        except Exception as exc:
            return "error", type(exc)
    a, b = run(ours), run(theirs)
    assert a == b, (a, b)
    return a[1]


def test_lifecycle_errors_match(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """start/shutdown/with raise the same ProcessError messages as SyncManager."""
    ours = shmshare.Manager(project_dir=tmp_path, start=False)
    theirs = mp.managers.SyncManager()
    for m in (ours, theirs):
        m.start()
        with pytest.raises(ProcessError, match="Already started server"):
            m.start()
        m.shutdown()
        m.join()
        with pytest.raises(ProcessError, match="Manager has shut down"):
            m.start()
        with pytest.raises(ProcessError):
            m.__enter__()
    assert shmshare.Manager is not None


def test_typeid_before_start_and_after_shutdown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Objects cannot be made before start() or after shutdown()."""
    m = shmshare.Manager(project_dir=tmp_path, start=False)
    with pytest.raises(ProcessError, match="not yet started"):
        m.dict()
    m.start()
    d = m.dict(a=1)
    m.shutdown()
    with pytest.raises(ValueError, match="Manager was shut down"):
        d["a"]  # as a proxy whose server is gone
    with pytest.raises(ProcessError, match="shut down"):
        m.list()


def test_accepted_arguments_and_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """address/authkey/serializer/ctx are accepted; connect() and register() explain."""
    with shmshare.Manager(("127.0.0.1", 0), b"key", "pickle", mp.get_context("spawn"),
                          shutdown_timeout=2.0, project_dir=tmp_path) as m:
        assert m.address == ("127.0.0.1", 0)
        with pytest.raises(NotImplementedError, match="by name"):
            m.connect()
    with pytest.raises(ValueError, match="serializer"):
        shmshare.Manager(serializer="json", project_dir=tmp_path)
    with pytest.raises(NotImplementedError, match="no server process"):
        shmshare.Manager.register("Custom", dict)


def test_dict_matches(both) -> None:  # type: ignore[no-untyped-def]
    """Manager().dict(): methods, return types and exceptions as DictProxy."""
    ours, theirs = both
    a, b = ours.dict({"x": 1}, y=2), theirs.dict({"x": 1}, y=2)
    for f in [lambda d: d["x"], lambda d: d["nope"], lambda d: d.get("nope", 5),
              lambda d: d.keys(), lambda d: d.values(), lambda d: d.items(),
              lambda d: d.copy(), lambda d: len(d), lambda d: "x" in d,
              lambda d: d.setdefault("z", 3), lambda d: d.pop("z"), lambda d: d.pop("z"),
              lambda d: d.update(w=4), lambda d: d.popitem(), lambda d: sorted(d),
              lambda d: d.__delitem__("nope"), lambda d: d.clear(), lambda d: d.popitem()]:
        same(f, a, b)


def test_list_matches(both) -> None:  # type: ignore[no-untyped-def]
    """Manager().list(): methods, return types and exceptions as ListProxy."""
    ours, theirs = both
    a, b = ours.list([3, 1, 2]), theirs.list([3, 1, 2])
    for f in [lambda x: x[0], lambda x: x[-1], lambda x: x[5], lambda x: x[1:],
              lambda x: x + [9], lambda x: x * 2,  # noqa: RUF005 lambda x: len(x), lambda x: 2 in x,
              lambda x: x.append(4), lambda x: x.extend([5, 6]), lambda x: x.insert(0, 0),
              lambda x: x.index(5), lambda x: x.index(99), lambda x: x.count(1),
              lambda x: x.pop(), lambda x: x.remove(99), lambda x: x.remove(1),
              lambda x: x.reverse(), lambda x: x.sort(), lambda x: x[:],
              lambda x: x.__setitem__(0, 7), lambda x: x.__delitem__(0), lambda x: list(x)]:
        same(f, a, b)
    a += [8]
    b += [8]
    a *= 2
    b *= 2
    assert a[:] == b[:]


def test_namespace_value_set_match(both) -> None:  # type: ignore[no-untyped-def]
    """Namespace attributes, Value get/set/value, and set methods as the proxies."""
    ours, theirs = both
    na, nb = ours.Namespace(x=1), theirs.Namespace(x=1)
    same(lambda n: n.x, na, nb)
    same(lambda n: n.y, na, nb)
    na.y = nb.y = 2
    same(lambda n: (n.x, n.y), na, nb)
    del na.y
    del nb.y
    same(lambda n: n.y, na, nb)
    assert repr(na) == "Namespace(x=1)"
    va, vb = ours.Value("i", 5), theirs.Value("i", 5)
    same(lambda v: (v.value, v.get()), va, vb)
    va.value = vb.value = 7
    same(lambda v: v.get(), va, vb)
    with pytest.raises(TypeError):  # checked as multiprocessing.Value checks it
        va.value = "anything"
    wa, wb = ours.Value(object, 5), theirs.Value(object, 5)  # not an array typecode
    wa.value = wb.value = "anything"  # ...is not enforced by either
    same(lambda v: v.get(), wa, wb)
    if hasattr(theirs, "set"):  # Python 3.14+
        sa, sb = ours.set({1, 2}), theirs.set({1, 2})
        for f in [lambda s: 1 in s, lambda s: len(s), lambda s: s.add(3),
                  lambda s: s.remove(9), lambda s: s.discard(1), lambda s: sorted(s)]:
            same(f, sa, sb)
    else:
        s = ours.set({1, 2})
        s.add(3)
        s -= {1}
        assert s == {2, 3} and s | {4} == {2, 3, 4} and s.union([5]) == {2, 3, 5}


def _use_all(d: Any, lst: Any, ns: Any, v: Any, s: Any, i: int) -> None:
    d[i] = i * i
    lst.append(i)
    ns.last = i
    v.value = i
    s.add(i)
    d["nested"].append(i)  # a shared object stored in a shared object: a live reference


@pytest.mark.parametrize("method", START_METHODS)
def test_objects_across_processes(method: str, ours) -> None:  # type: ignore[no-untyped-def]
    """Every object works from children of each start method, nested references included."""
    m = ours
    d, lst, ns, v, s = m.dict(), m.list(), m.Namespace(), m.Value("i", -1), m.set()
    d["nested"] = m.list()
    ctx = mp.get_context(method)
    procs = [ctx.Process(target=_use_all, args=(d, lst, ns, v, s, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT)
        assert p.exitcode == 0
    assert sorted(lst) == [0, 1, 2] and s == {0, 1, 2}
    assert ns.last in (0, 1, 2) and v.value in (0, 1, 2)
    assert sorted(d["nested"]) == [0, 1, 2] and d[2] == 4


def _pool_square(args: tuple[Any, int]) -> int:
    d, i = args
    d[i] = i * i
    return i


def test_pool_is_ordinary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Manager().Pool() is a multiprocessing Pool; objects pass to its tasks."""
    with shmshare.Manager(project_dir=tmp_path) as m:
        d = m.dict()
        with m.Pool(2) as pool:
            assert pool.map(_pool_square, [(d, i) for i in range(10)]) == list(range(10))
        assert d.copy() == {i: i * i for i in range(10)}


def test_crashed_manager_is_swept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The objects of a manager whose process was SIGKILLed are removed by the next one."""
    import textwrap

    from helpers import run_python

    code = textwrap.dedent(f"""
        import os, signal, shmshare
        m = shmshare.Manager(project_dir={str(tmp_path)!r})
        m.dict(a=1); m.list([1])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert run_python(code, check=False).returncode < 0
    left = list((tmp_path / "managers").iterdir())
    assert len(left) == 1 and list(left[0].glob("*.key"))
    with shmshare.Manager(project_dir=tmp_path):
        assert not left[0].exists()


def test_gc_removes_crashed_manager(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """'shmshare gc' removes the objects of a manager whose process was SIGKILLed."""
    import subprocess
    import sys
    import textwrap

    from helpers import run_python

    code = textwrap.dedent(f"""
        import os, signal, shmshare
        m = shmshare.Manager(project_dir={str(tmp_path)!r})
        m.Lock(); m.Queue().put(1)
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    pid = int(run_python(code, check=False).stdout)
    from helpers import segments_created_by

    assert len(segments_created_by(pid)) == 2
    proc = subprocess.run([sys.executable, "-m", "shmshare", "gc", "--project-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "removed managers/manager-" in proc.stdout
    assert segments_created_by(pid) == []


def _touch_all(objs: tuple[Any, ...]) -> int:
    d, lst, q, lock, arr, ev = objs
    with lock:
        d["n"] = d.get("n", 0) + 1
        lst.append(1)
        arr[0] += 1
    q.put(1)
    ev.set()
    return 0


@pytest.mark.parametrize("method", START_METHODS)
def test_objects_to_process_pool_executor(method: str, ours) -> None:  # type: ignore[no-untyped-def]
    """Manager objects pass to ProcessPoolExecutor tasks under each start method."""
    import concurrent.futures as cf

    m = ours
    objs = (m.dict(), m.list(), m.Queue(), m.Lock(), m.Array("i", 1), m.Event())
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        assert list(ex.map(_touch_all, [objs] * 4)) == [0] * 4
    d, lst, q, _, arr, ev = objs
    assert d["n"] == 4 and len(lst) == 4 and q.qsize() == 4 and arr[0] == 4
    assert ev.is_set()


def test_dict_iterator_raises_on_size_change(both) -> None:  # type: ignore[no-untyped-def]
    """Manager().dict(): a size change during iteration raises RuntimeError, as DictProxy."""
    for m in both:
        d = m.dict({1: "a", 2: "b"})
        assert list(iter(d)) == [1, 2]
        it = iter(d)
        assert next(it) == 1
        d[3] = "c"
        with pytest.raises(RuntimeError, match="changed size during iteration"):
            next(it)
        with pytest.raises(RuntimeError):
            next(it)  # sticky, as dict's own iterator
        it = iter(d)
        d[1] = "changed"  # a new value, same size: no error, as with dict
        assert list(it) == [1, 2, 3]


def test_plain_shared_dict_iteration_stays_tolerant(project_dir) -> None:  # type: ignore[no-untyped-def]
    """SharedDict itself keeps its documented tolerant iteration (no RuntimeError)."""
    with shmshare.SharedDict({1: "a", 2: "b"}) as d:
        it = iter(d)
        assert next(it) == 1
        d[3] = "c"
        assert list(it) == [2, 3]


def test_pool_without_processes_raises_as_multiprocessing(both) -> None:  # type: ignore[no-untyped-def]
    """Manager().Pool(0) and Pool(-1) raise RemoteError, as SyncManager's (and a ValueError)."""
    ours, theirs = both
    for n in (0, -1):
        with pytest.raises(multiprocessing.managers.RemoteError):
            theirs.Pool(n)
        with pytest.raises(multiprocessing.managers.RemoteError) as info:
            ours.Pool(n)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, shmshare.ShmshareError)
        assert str(info.value) == f"Pool() needs at least 1 process, not {n}"


@pytest.mark.parametrize("typeid", ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event",
                                    "Condition", "Barrier"])
def test_sync_objects_repr_as_proxies(both, typeid: str) -> None:  # type: ignore[no-untyped-def]
    """Manager-made synchronisation objects repr as multiprocessing's proxies of the same typeid."""
    ours, theirs = both
    args = (2,) if typeid == "Barrier" else ()
    a, b = getattr(ours, typeid)(*args), getattr(theirs, typeid)(*args)
    prefix = repr(b).rsplit(" at ", 1)[0]
    assert repr(a).rsplit(" at ", 1)[0] == prefix
    assert repr(a).endswith(f" at {id(a):#x}>")
