"""One object model (issue 12): constructors, reopening, attribute space, handle functions."""

from __future__ import annotations

import io
import multiprocessing as mp
import multiprocessing.managers
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import JOIN_TIMEOUT, START_METHODS, fork_child, mp_run, wait_pid

import shmshare
from shmshare import (
    Manager,
    SharedArray,
    SharedBarrier,
    SharedBoundedSemaphore,
    SharedCondition,
    SharedDict,
    SharedEvent,
    SharedList,
    SharedLock,
    SharedNamespace,
    SharedQueue,
    SharedRLock,
    SharedSemaphore,
    SharedSet,
    SharedTypedArray,
    SharedValue,
)
from shmshare.objects.shared_object import kinds

# One public constructor call per kind, with its data; the handle keywords are added.
MAKERS: dict[str, Any] = {
    "dict": lambda **kw: SharedDict({"a": 1}, **kw),
    "list": lambda **kw: SharedList([1, 2], **kw),
    "set": lambda **kw: SharedSet({1, 2}, **kw),
    "namespace": lambda **kw: SharedNamespace({"x": 1}, **kw),
    "value": lambda **kw: SharedValue("i", 3, **kw),
    "queue": lambda **kw: SharedQueue(2, **kw),
    "array": lambda **kw: SharedArray((3,), "int32", **kw),
    "typed-array": lambda **kw: SharedTypedArray("i", [1, 2], **kw),
    "semaphore": lambda **kw: SharedSemaphore(2, **kw),
    "bsemaphore": lambda **kw: SharedBoundedSemaphore(2, **kw),
    "mlock": lambda **kw: SharedLock(**kw),
    "rlock": lambda **kw: SharedRLock(**kw),
    "event": lambda **kw: SharedEvent(**kw),
    "condition": lambda **kw: SharedCondition(**kw),
    "barrier": lambda **kw: SharedBarrier(2, **kw),
}


def test_every_kind_is_registered_and_tested() -> None:
    """The registry holds exactly the public kinds, each once, and every one is tested here."""
    assert set(kinds()) == set(MAKERS)
    assert all(shmshare.kind_class(k) is cls for k, cls in kinds().items())


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_same_keywords_everywhere(kind: str, project_dir: Path) -> None:
    """name=, create=, project_dir=, persist=, mode=, trust= work on every kind; a typo is a
    TypeError naming it; create=False without a name is refused."""
    make = MAKERS[kind]
    obj = make(name="n", create=True, project_dir=project_dir, persist=False, mode=0o600,
               trust=False)
    assert shmshare.name_of(obj) == "n"
    again = make(name="n", create=False, project_dir=project_dir)
    assert shmshare.segment_of(again).id == shmshare.segment_of(obj).id
    if kind != "namespace":  # Namespace(**attrs): keywords are attributes, as in multiprocessing
        with pytest.raises(TypeError, match="persit"):
            make(name="n", project_dir=project_dir, persit=True)
    with pytest.raises(ValueError, match="needs a name"):
        make(create=False)
    with pytest.raises(FileNotFoundError):
        make(name="missing", create=False, project_dir=project_dir)
    with pytest.raises(TypeError, match="name must be a str"):
        make(name=3)
    shmshare.check(obj)
    assert shmshare.stats(obj)["bytes_total"] > 0
    for o in (again, obj):
        shmshare.detach(o)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_pickles_by_reference(kind: str) -> None:
    """Every kind pickles to a reference through one reconstructor, never to a copy."""
    obj = MAKERS[kind]()
    reduced = obj.__reduce__()
    assert reduced[0] is shmshare.objects.shared_object.reopen
    twin = pickle.loads(pickle.dumps(obj))
    assert type(twin) is type(obj)
    assert shmshare.segment_of(twin).id == shmshare.segment_of(obj).id
    shmshare.detach(twin)
    shmshare.detach(obj)


def test_dict_keywords_are_not_items(project_dir: Path) -> None:
    """SharedDict(name="jobs") is named; UltraDict-style keywords are refused, not stored."""
    d = SharedDict(name="jobs", project_dir=project_dir)
    assert d.name == "jobs" and len(d) == 0
    with pytest.raises(TypeError, match="buffer_size"):
        SharedDict(name="u", buffer_size=1000, project_dir=project_dir)
    with pytest.raises(TypeError, match="shared_lock"):
        SharedDict(shared_lock=True)
    with pytest.raises(FileNotFoundError):
        SharedDict(name="x", create=False, project_dir=project_dir)
    d.detach()
    with Manager() as m:  # the Manager's dict() is dict(): keywords are items there
        assert m.dict(a=1, name="Bob").copy() == {"a": 1, "name": "Bob"}


def test_wrong_types_fail_at_construction() -> None:
    """SharedQueue("tasks") and friends fail in the constructor, saying what to pass."""
    with pytest.raises(TypeError, match="name='tasks'") as info:
        SharedQueue("tasks")  # type: ignore[arg-type]
    assert isinstance(info.value, shmshare.ShmshareError)
    with pytest.raises(TypeError, match="name='jobs'"):
        SharedList("jobs")
    with pytest.raises(TypeError, match="name='s'"):
        SharedSet("s")
    with pytest.raises(TypeError):
        SharedSemaphore("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SharedBarrier("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shape"):
        SharedArray([1.5, "x"])
    with pytest.raises(TypeError, match="persist"):
        SharedDict(persist="yes")  # type: ignore[arg-type]


def test_value_takes_lock_keyword() -> None:
    """SharedValue(typecode, value, lock=False) is accepted, as multiprocessing.Value's."""
    v = SharedValue("i", 5, lock=False)
    assert v.value == 5 and v.get_lock() is v.lock
    v.detach()


def _reopen_with_initial(project_dir: str) -> None:
    d = SharedDict("config", {"retries": 3}, project_dir=project_dir)
    assert d["retries"] == 5, d.copy()
    lst = SharedList([0, 0, 0], name="slots", project_dir=project_dir)
    assert lst.copy() == [0, 9, 0], lst.copy()
    s = SharedSet({1}, name="s", project_dir=project_dir)
    assert s.copy() == {2}
    ns = SharedNamespace({"x": 1}, name="ns", project_dir=project_dir)
    assert ns.x == 2
    v = SharedValue("i", 1, name="v", project_dir=project_dir)
    assert v.value == 7


@pytest.mark.parametrize("method", START_METHODS)
def test_reopening_never_reapplies_initial_data(method: str, project_dir: Path) -> None:
    """A second SharedDict("config", {...}) or SharedList([...], name=...) in another process
    opens what is there: changed values stay, nothing is appended."""
    d = SharedDict("config", {"retries": 3}, project_dir=project_dir)
    d["retries"] = 5
    lst = SharedList([0, 0, 0], name="slots", project_dir=project_dir)
    lst[1] = 9
    s = SharedSet({1}, name="s", project_dir=project_dir)
    s.clear()
    s.add(2)
    ns = SharedNamespace({"x": 1}, name="ns", project_dir=project_dir)
    ns.x = 2
    v = SharedValue("i", 1, name="v", project_dir=project_dir)
    v.value = 7
    assert mp_run(method, _reopen_with_initial, str(project_dir)) == 0
    assert len(lst) == 3 and d["retries"] == 5
    for o in (d, lst, s, v):
        o.detach()
    shmshare.detach(ns)


def test_opening_with_other_parameters_is_an_error(project_dir: Path) -> None:
    """A different typecode, maxsize, shape, dtype or array typecode is a clear ShmValueError;
    None (or leaving it out) opens whatever is there."""
    v = SharedValue("i", 1, name="v", project_dir=project_dir)
    with pytest.raises(shmshare.ShmValueError, match="typecode 'i', not 'd'"):
        SharedValue("d", 1.0, name="v", project_dir=project_dir)
    assert SharedValue(name="v", project_dir=project_dir).value == 1
    q = SharedQueue(3, name="q", project_dir=project_dir)
    with pytest.raises(shmshare.ShmValueError, match="maxsize 3, not 5"):
        SharedQueue(5, name="q", project_dir=project_dir)
    assert SharedQueue(name="q", project_dir=project_dir).maxsize == 3
    a = SharedArray((2, 3), "float32", name="a", project_dir=project_dir)
    with pytest.raises(shmshare.ShmValueError, match="shape"):
        SharedArray((3, 2), name="a", project_dir=project_dir)
    with pytest.raises(shmshare.ShmValueError, match="dtype"):
        SharedArray((2, 3), "int8", name="a", project_dir=project_dir)
    t = SharedTypedArray("i", 4, name="t", project_dir=project_dir)
    with pytest.raises(shmshare.ShmValueError, match="typecode 'i', not 'd'"):
        SharedTypedArray("d", 4, name="t", project_dir=project_dir)
    opened = SharedTypedArray(name="t", project_dir=project_dir)
    assert (opened.typecode, len(opened)) == ("i", 4)
    opened.detach()
    for o in (v, q, a, t):
        o.detach()


LIBRARY_NAMES = ["name", "lock", "close", "unlink", "detach", "check", "stats", "persist",
                 "project_dir", "segment", "KIND", "get", "copy"]


def _read_namespace(ns: SharedNamespace) -> None:
    for i, attr in enumerate(LIBRARY_NAMES):
        assert getattr(ns, attr) == f"value {i}", (attr, getattr(ns, attr))
    ns.name = "from the child"


@pytest.mark.parametrize("method", START_METHODS)
def test_namespace_attributes_are_the_users(method: str) -> None:
    """Every name multiprocessing's Namespace stores is stored (name, lock, close, unlink...),
    in this process and in children; the handle operations are module functions."""
    reference = multiprocessing.managers.Namespace()
    ns = SharedNamespace()
    for i, attr in enumerate(LIBRARY_NAMES):
        setattr(reference, attr, f"value {i}")  # what multiprocessing's Namespace stores
        setattr(ns, attr, f"value {i}")
        assert getattr(ns, attr) == getattr(reference, attr)
    assert mp_run(method, _read_namespace, ns) == 0
    assert ns.name == "from the child"
    assert shmshare.name_of(ns) is None
    with shmshare.lock_of(ns):
        del ns.lock
    with pytest.raises(AttributeError):
        ns.lock  # noqa: B018
    ns._local = 1  # names starting with "_" stay local, as in multiprocessing
    assert "_local" not in repr(ns)
    shmshare.detach(ns)


def test_manager_namespace_takes_any_attribute() -> None:
    """Manager().Namespace(name=...) makes an attribute, as multiprocessing's does."""
    with Manager() as m:
        ns = m.Namespace(name="Bob", lock=1)
        assert (ns.name, ns.lock) == ("Bob", 1)
        assert shmshare.name_of(ns) != "Bob"


def test_manager_array_follows_multiprocessing() -> None:
    """Manager().Array: 'c' gives bytes (slices, .value, .raw), 'u' gives str, numbers are
    checked as array.array checks them; lists for numeric slices, as multiprocessing.Array."""
    with Manager() as m:
        c = m.Array("c", b"hello")
        ref = mp.Array("c", b"hello")
        assert c[:] == ref[:] == b"hello" and c[0] == ref[0] == b"h"
        assert c.value == ref.value and c.raw == ref.raw
        c.value = ref.value = b"hi"
        assert c.raw == ref.raw == b"hi\x00lo"
        c[1:3] = b"EY"
        assert c[:] == b"hEYlo"
        with pytest.raises(ValueError):
            c.value = b"toolongvalue"
        u = m.Array("u", "hé!")
        assert u[:] == "hé!" and u[1] == "é" and u.value == "hé!"
        i = m.Array("i", [1, 2, 3])
        assert i[:] == [1, 2, 3] and i[-1] == 3 and list(i) == [1, 2, 3] and len(i) == 3
        i[0] = 7
        d = m.Array("d", 2)
        assert d[:] == [0.0, 0.0]
        with pytest.raises(TypeError):
            m.Array("i", [1.7])
        with pytest.raises(TypeError):
            i[1] = 1.5
        with pytest.raises(OverflowError):
            m.Array("b", [300])
        with pytest.raises(ValueError, match="bad typecode"):
            m.Array("x", 3)
        twin = pickle.loads(pickle.dumps(i))
        assert twin[:] == [7, 2, 3]
        twin.detach()
        with i.get_lock():
            i[1] += 1
        assert i[1] == 3


def _write_array(a: SharedTypedArray) -> None:
    assert a[0] == b"\x01"
    a.value = b"child"


@pytest.mark.parametrize("method", START_METHODS)
def test_typed_array_across_processes(method: str) -> None:
    """A 'c' SharedTypedArray written by a child is read by the parent (spawn, fork, forkserver)."""
    a = SharedTypedArray("c", b"\x01parent")
    assert mp_run(method, _write_array, a) == 0
    assert a.value == b"child" and a.raw == b"child\x00t"
    a.detach()


def test_list_string_index_is_type_error() -> None:
    """lst["0"] raises TypeError as list does (not AttributeError)."""
    lst = SharedList([1])
    with pytest.raises(TypeError, match="list indices must be integers or slices, not str"):
        lst["0"]  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        lst["0"] = 1  # type: ignore[call-overload]
    lst.detach()


def test_missing_array_is_a_shmshare_error(project_dir: Path) -> None:
    """SharedArray("frames") that does not exist is a SegmentNotFoundError that says what to do."""
    with pytest.raises(shmshare.SegmentNotFoundError, match="give a shape") as info:
        SharedArray("frames", project_dir=project_dir)
    assert isinstance(info.value, FileNotFoundError)
    a = SharedArray((2,), name="frames", project_dir=project_dir)
    b = SharedArray("frames", project_dir=project_dir)
    assert b.shape == (2,)
    b.detach()
    a.detach()


def test_condition_refuses_threading_lock() -> None:
    """Manager().Condition(threading.Lock()) is refused at once with a TypeError."""
    with Manager() as m:
        with pytest.raises(TypeError, match="threading lock"):
            m.Condition(threading.Lock())  # type: ignore[arg-type]
        cond = m.Condition(m.Lock())
        with cond:
            assert not cond.wait(0)


def _plant_array(w: int, r: int) -> int:
    os.setgid(23456)
    os.setuid(23456)
    a = SharedArray((3,), "int8", mode=0o666)
    a.numpy()[:] = 7
    os.write(w, pickle.dumps(a))
    os.read(r, 1)  # keep it attached until the parent is done
    return 0


def test_array_planted_by_another_user_needs_trust() -> None:
    """A 0666 array made by another uid is refused unless trust=True, as heap objects are."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as another user")
    np = pytest.importorskip("numpy")  # imported before the child loses access to it
    assert np is not None
    to_parent, to_child = os.pipe(), os.pipe()
    pid = fork_child(_plant_array, to_parent[1], to_child[0])
    os.close(to_parent[1])  # so that a child that fails gives EOF, not a hang
    os.close(to_child[0])
    try:
        data = os.read(to_parent[0], 65536)
        assert data, "the child failed before pickling its array"
        with pytest.raises(PermissionError, match="owned by uid 23456"):
            pickle.loads(data)
        trusted = SharedArray._reopen(_address_in(data), trust=True)
        assert list(trusted.numpy()) == [7, 7, 7]
        trusted.detach()
    finally:
        os.write(to_child[1], b"x")
        assert wait_pid(pid, JOIN_TIMEOUT) == 0
        os.close(to_parent[0])
        os.close(to_child[1])


class _AddressOnly(pickle.Unpickler):
    """Unpickles a shared object's reference to its segment address only."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "reopen":
            return lambda cls, address, trust: address
        return super().find_class(module, name)


def _address_in(data: bytes) -> Any:
    return _AddressOnly(io.BytesIO(data)).load()


def test_manager_uses_the_public_classes() -> None:
    """The Manager's objects are the public classes themselves (no adapters), and pickle as such."""
    with Manager() as m:
        made = [m.list([1]), m.set(), m.Namespace(), m.Value("i", 1), m.Queue(), m.Lock(),
                m.Array("i", 2), m.dict()]
        # (the Manager's sync objects are private subclasses, for multiprocessing's reprs)
        assert [type(o) for o in made[:5]] == [SharedList, SharedSet, SharedNamespace,
                                               SharedValue, SharedQueue]
        assert isinstance(made[5], SharedLock)
        assert [type(o) for o in made[6:]] == [SharedTypedArray, shmshare.SharedDictProxy]
        for o in made:
            twin = pickle.loads(pickle.dumps(o))
            assert type(twin) is type(o)
            shmshare.detach(twin)


def test_value_holds_any_object_without_a_typecode() -> None:
    """SharedValue(None) (the Manager's Value with a label) holds what pickle refuses,
    through cloudpickle, and containers, besides the plain kinds set in one C call;
    a 'c' and a 'u' Value keep one byte and one character."""
    v, c, u = SharedValue(None, 0), SharedValue("c"), SharedValue("u")
    try:
        v.value = lambda x: x + 1
        assert v.value(1) == 2
        for x in ({"a": [1]}, (1, 2), None, 2**80, 1.5, b"b", "s"):
            v.value = x
            assert v.value == x
        c.value = 65
        assert c.value == b"A"
        c.value = b"z"
        assert c.value == b"z"
        u.value = "é"
        assert u.value == "é"
        with pytest.raises(TypeError):  # ShmTypeError is one
            u.value = "ab"
    finally:
        for o in (v, c, u):
            o.detach()


@pytest.mark.parametrize("code", "bBhHiIlLqQfd")
def test_value_converts_and_refuses_as_multiprocessing_value(code: str) -> None:
    """SharedValue(code).value = x keeps what multiprocessing.Value(code).value = x keeps,
    and raises the same exception type for what it refuses (a bool, a float, a str,
    at each integer code's bounds); one past the bounds, where ctypes wraps around
    silently, it is an OverflowError, as array.array says."""
    from shmshare.objects.value import _INT_RANGES

    lo, hi = _INT_RANGES.get(code, (-(1 << 70), 1 << 70))
    ours, theirs = SharedValue(code), mp.Value(code)
    try:
        if code in _INT_RANGES:
            for x in (lo - 1, hi + 1):
                with pytest.raises(OverflowError):
                    ours.value = x
        for x in (0, 7, lo, hi, True, 2.5, 1e300, "1"):
            try:
                theirs.value = x
                want: Any = theirs.value
            except Exception as e:  # its type is what is compared
                with pytest.raises(type(e)):
                    ours.value = x
                continue
            ours.value = x
            assert ours.value == want and type(ours.value) is type(want), (code, x)
    finally:
        ours.detach()


@pytest.mark.parametrize("cls", [shmshare.SharedDict, shmshare.SharedList, shmshare.SharedArray])
def test_the_lock_of_a_temporary_object_keeps_it_attached(project_dir: Path, cls: Any) -> None:
    """``with SharedDict(name).lock:`` locks the named object: the temporary handle
    goes at once, but its lock keeps the mapping until the lock itself goes (it said
    "detached" before).  Then the temporary's attachment is released."""
    kw: dict[str, Any] = {"shape": (4,), "dtype": "i8"} if cls is shmshare.SharedArray else {}
    obj = cls(name="locked", project_dir=project_dir, **kw)
    shmid = obj.segment.id
    def taken_elsewhere() -> int:  # in a forked child: 0 if the lock is taken
        if not obj.lock.acquire(blocking=False):
            return 0
        obj.lock.release()
        return 1

    with cls(name="locked", project_dir=project_dir).lock:
        assert wait_pid(fork_child(taken_elsewhere)) == 0
        assert shmshare._core.stat(shmid).nattch == 2  # the temporary's mapping, kept
    assert wait_pid(fork_child(taken_elsewhere)) == 1
    lk = cls(name="locked", project_dir=project_dir).lock
    assert lk.acquire(timeout=5)
    lk.release()
    del lk
    import gc

    gc.collect()
    assert shmshare._core.stat(shmid).nattch == 1  # ...and released with the lock
    obj.lock.acquire()  # ours still works: the temporary's release took nothing of ours
    obj.lock.release()
    obj.unlink()
    obj.detach()


@pytest.mark.parametrize("cls", [shmshare.SharedDict, shmshare.SharedArray])
def test_an_object_dropped_inside_its_lock_block_still_gives_the_lock_back(
        project_dir: Path, cls: Any) -> None:
    """``with obj.lock:`` keeps only the lock's ``__exit__``: the block's end gives
    the lock back (not freed memory) even when the object and its lock went in it."""
    kw: dict[str, Any] = {"shape": (4,), "dtype": "i8"} if cls is shmshare.SharedArray else {}
    obj = cls(name="dropped", project_dir=project_dir, **kw)
    holder = [cls(name="dropped", project_dir=project_dir)]

    def taken_elsewhere() -> int:  # in a forked child: 0 if the lock is taken
        if not obj.lock.acquire(blocking=False):
            return 0
        obj.lock.release()
        return 1

    with holder[0].lock:
        holder.clear()
        import gc

        gc.collect()
        assert wait_pid(fork_child(taken_elsewhere)) == 0
    assert wait_pid(fork_child(taken_elsewhere)) == 1
    obj.unlink()
    obj.detach()
