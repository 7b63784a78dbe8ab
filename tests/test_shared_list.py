"""SharedList against list: every operation, differential and across processes."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from helpers import START_METHODS, fork_child, mp_run, wait_child
from hypothesis import given, settings
from hypothesis import strategies as st

from shmshare import OwnerDiedWarning, SharedList

index = st.integers(-8, 8)
slices = st.builds(slice, st.none() | index, st.none() | index,
                   st.sampled_from([None, 1, 2, -1, -2]))
values = st.lists(st.integers(0, 9), max_size=4)

OPS = st.one_of(
    st.tuples(st.just("setslice"), slices, values),
    st.tuples(st.just("delslice"), slices),
    st.tuples(st.just("getslice"), slices),
    st.tuples(st.just("insert"), index, st.integers(0, 9)),
    st.tuples(st.just("pop"), index),
    st.tuples(st.just("get"), index),
    st.tuples(st.just("set"), index, st.integers(0, 9)),
    st.tuples(st.just("del"), index),
    st.tuples(st.just("append"), st.integers(0, 9)),
    st.tuples(st.just("extend"), values),
    st.tuples(st.just("remove"), st.integers(0, 9)),
    st.tuples(st.just("index"), st.integers(0, 9)),
    st.tuples(st.just("count"), st.integers(0, 9)),
    st.tuples(st.just("sort"), st.booleans()),
    st.tuples(st.just("reverse")),
    st.tuples(st.just("imul"), st.integers(0, 2)),
    st.tuples(st.just("clear")),
)


def apply(lst: Any, op: tuple[Any, ...]) -> Any:
    name, *args = op
    if name in ("setslice", "set"):
        lst[args[0]] = args[1]
    elif name in ("delslice", "del"):
        del lst[args[0]]
    elif name in ("getslice", "get"):
        return lst[args[0]]
    elif name == "sort":
        lst.sort(reverse=args[0])
    elif name == "imul":
        lst *= args[0]
    else:
        return getattr(lst, name)(*args)
    return None


def outcome(lst: Any, op: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return "ok", apply(lst, op)
    except Exception as exc:
        return "error", type(exc)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=8), st.lists(OPS, max_size=12))
def test_differential_against_list(start: list[int], ops: list[tuple[Any, ...]]) -> None:
    """Every operation gives the same result, exception and contents as on a list."""
    ref = list(start)
    shared = SharedList(start)
    try:
        for op in ops:
            assert outcome(shared, op) == outcome(ref, op), op
            assert shared.copy() == ref, op
        shared.check()
    finally:
        shared.detach()


def test_operators_and_types() -> None:
    """+ and * give plain lists; += and *= change in place; ==, <, repr, in, reversed."""
    a = SharedList([1, 2])
    assert a + [3] == [1, 2, 3] and type(a + [3]) is list  # noqa: RUF005 - testing +
    assert [0] + a == [0, 1, 2]  # noqa: RUF005
    assert a * 2 == [1, 2, 1, 2] and 2 * a == [1, 2, 1, 2]
    b = a
    a += [3]
    a *= 2
    assert b is a and a == [1, 2, 3, 1, 2, 3]
    assert a < [9] and 3 in a and next(reversed(a)) == 3
    assert repr(SharedList([1])) == "SharedList([1])"
    with pytest.raises(TypeError):
        a + (1,)  # noqa: RUF005 - as list: only lists concatenate
    with pytest.raises(TypeError):
        hash(a)
    a.detach()


def test_unpicklable_item_changes_nothing() -> None:
    """An unpicklable item raises and leaves the list as it was."""
    import threading

    a = SharedList([1])
    with pytest.raises(TypeError):
        a.append(threading.Lock())
    with pytest.raises(TypeError):
        a.extend([2, threading.Lock()])
    assert a == [1]
    a.detach()


def _append_many(lst: SharedList, n: int) -> None:
    for i in range(n):
        lst.append(i)


@pytest.mark.parametrize("method", START_METHODS)
def test_appends_from_processes(method: str) -> None:
    """Appends from two processes of each start method all land; pickling is by reference."""
    lst = SharedList()
    assert len(pickle.dumps(lst)) < 500
    assert mp_run(method, _append_many, lst, 100) == 0
    assert mp_run(method, _append_many, lst, 100) == 0
    assert sorted(lst) == sorted(list(range(100)) * 2)
    lst.detach()


def test_unlink_is_not_remove(project_dir) -> None:  # type: ignore[no-untyped-def]
    """remove(x) removes an item as list does; unlink() removes the list from shared memory."""
    lst = SharedList([1, 2, 1], name="named", project_dir=project_dir)
    lst.remove(1)
    assert lst == [2, 1]
    lst.unlink()
    assert not (project_dir / "named.key").exists()
    assert lst == [2, 1]  # still attached here until detach
    lst.detach()


def test_len_after_detach_raises_and_reads_nothing() -> None:
    """len() reads the length word in C (LengthWord) only while the heap is open:
    after detach it takes the slow path, which says the list is detached, as every
    other method does -- the word's memory may be unmapped by then."""
    lst = SharedList([1, 2, 3])
    other = pickle.loads(pickle.dumps(lst))  # a second handle on the same list
    try:
        assert len(lst) == len(other) == 3
        lst.detach()
        with pytest.raises(ValueError, match="detached"):
            len(lst)
        with pytest.raises(ValueError, match="detached"):
            bool(lst)
        assert len(other) == 3  # its own attachment still reads the word
    finally:
        other.detach()


def test_len_is_the_c_slot_and_overriding_it_still_works() -> None:
    """SharedList's len() is the C slot of LengthWord; a subclass defining
    __len__ gets its own, and unpickling a list (no __init__) keeps the slot."""
    class Counted(SharedList[int]):
        def __len__(self) -> int:
            return 42

    lst, sub = SharedList([1]), Counted([1, 2])
    try:
        assert type(lst).__len__ is not SharedList._length_slow
        assert len(sub) == 42 and len(pickle.loads(pickle.dumps(lst))) == 1
    finally:
        lst.detach()
        sub.detach()


def test_len_sees_another_process_change_after_a_cached_read() -> None:
    """len() answers from memory while nothing changed, and sees at once another
    process's append."""
    lst = SharedList([1])
    try:
        assert len(lst) == 1 and len(lst) == 1
        assert wait_child(fork_child(lambda: lst.append(2) or 0)) == 0
        assert len(lst) == 2
    finally:
        lst.detach()


def test_ring_ops_against_a_list() -> None:
    """Thousands of appends, pops and inserts at both ends and in the middle (the ring's
    head wraps, the array grows and shrinks) give exactly what a list gives."""
    import random

    rng = random.Random(7)
    ref: list[int] = []
    lst: SharedList[int] = SharedList()
    try:
        for step in range(4000):
            k = rng.random()
            phase = (step // 500) % 2  # grow for a while, then shrink
            if k < (0.3 if phase else 0.45):
                ref.append(step)
                lst.append(step)
            elif k < 0.6 if phase else k < 0.75:
                ref.insert(0, step)
                lst.insert(0, step)
            elif ref and k < 0.8:
                assert lst.pop(0) == ref.pop(0)
            elif ref and k < 0.95:
                assert lst.pop() == ref.pop()
            elif ref:
                i = rng.randrange(len(ref))
                ref.insert(i, step)
                lst.insert(i, step)
            assert len(lst) == len(ref)
            if step % 97 == 0:
                assert lst.copy() == ref
                assert lst[len(ref) // 2] == ref[len(ref) // 2] if ref else True
        assert lst.copy() == ref
        lst.check()
        lst.clear()
        assert lst.stats()["used_blocks"] == 2  # the record and an empty ref array
    finally:
        lst.detach()


def _hold_lock(lst: SharedList, w: int) -> None:
    import os
    import time

    with lst.lock:
        os.write(w, b"h")
        time.sleep(30)


def test_len_needs_no_lock() -> None:
    """len() and bool() answer while another process holds the list's lock."""
    import os
    import signal

    from helpers import wait_pid

    lst = SharedList([1, 2, 3])
    r, w = os.pipe()
    pid = fork_child(_hold_lock, lst, w)
    try:
        assert os.read(r, 1) == b"h"
        lst._heap.lock_timeout = 2.0  # a lock wait would fail the test, not hang it
        assert len(lst) == 3 and bool(lst)
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_pid(pid, 15)
        os.close(r)
        os.close(w)
    with pytest.warns(OwnerDiedWarning):  # the holder died holding it: recovered
        lst.lock.acquire()
    lst.lock.release()
    assert lst.copy() == [1, 2, 3]
    lst.detach()


def _deque_worker(lst: SharedList, n: int) -> None:
    for i in range(n):
        lst.insert(0, ("front", i))
        lst.append(("back", i))
    for _ in range(n // 2):
        lst.pop(0)
        lst.pop()


@pytest.mark.parametrize("method", START_METHODS)
def test_both_ends_from_processes(method: str) -> None:
    """insert(0)/append/pop(0)/pop() from another process of each start method."""
    lst = SharedList()
    assert mp_run(method, _deque_worker, lst, 100) == 0
    assert lst.copy() == [("front", i) for i in range(49, -1, -1)] + [
        ("back", i) for i in range(50)]
    lst.check()
    lst.detach()
