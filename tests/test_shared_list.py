"""SharedList against list: every operation, differential and across processes."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from helpers import START_METHODS, fork_child, mp_run, wait_child
from hypothesis import given, settings
from hypothesis import strategies as st

from shmshare import SharedList

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


# -- the redo record: replay by readers and writers, checks ------------------------------------


def _half_done_pop_front(lst: SharedList, moved: int) -> None:
    """Leave ``lst`` as a process killed in the middle of ``pop(0)`` would: the redo
    record stored, ``moved`` items shifted down, the rest not."""
    from shmshare.objects.codec import dumps, encode_key
    from shmshare.objects.list_journal import _JOURNAL, _pack_journal

    n = len(lst)
    puts = [(i, dumps(lst[i + 1])) for i in range(n - 1)]
    heap = lst._heap
    with lst.lock:
        heap.dict_set(*_JOURNAL, _pack_journal(n, n - 1, puts), held=True)
        for i, data in puts[:moved]:
            heap.dict_set(*encode_key(i), data, held=True)


READERS = [
    ("getitem", lambda lst: lst[0], 1),
    ("getitem-last", lambda lst: lst[8], 9),
    ("getitem-negative", lambda lst: lst[-1], 9),
    ("len", len, 9),
    ("iter", list, list(range(1, 10))),
    ("copy", lambda lst: lst.copy(), list(range(1, 10))),
    ("pop", lambda lst: lst.pop(), 9),
    ("append", lambda lst: lst.append(10) or lst.copy(), [*range(1, 10), 10]),
    ("contains", lambda lst: 0 in lst, False),
]


@pytest.mark.parametrize("moved", [0, 3, 9])
@pytest.mark.parametrize(("name", "read", "expected"), READERS, ids=[r[0] for r in READERS])
def test_pending_record_replayed_first(name: str, read: Any, expected: Any, moved: int) -> None:
    """A change left half-done (record stored, some items moved) is finished by whoever
    comes next, another handle or this one, locking or not, before it answers; with
    OwnerDiedWarning.  The reader never sees the half-done list."""
    from shmshare import OwnerDiedWarning

    lst = SharedList(range(10))
    other = pickle.loads(pickle.dumps(lst))  # another handle, as another process has
    try:
        _half_done_pop_front(lst, moved)
        with pytest.warns(OwnerDiedWarning):
            assert read(other) == expected
        final = list(range(1, 10)) + ([10] if name == "append" else [])
        if name == "pop":
            final.pop()
        assert lst.copy() == final  # the writer's handle: finished, and no second warning
        lst.check()
        assert lst.stats()["entries"] == len(lst) == len(final)
    finally:
        other.detach()
        lst.detach()


def test_pending_record_seen_by_the_writer_itself() -> None:
    """The handle that left the record (an exception between the writes) replays it too."""
    from shmshare import OwnerDiedWarning

    lst = SharedList(range(10))
    lst.copy()  # this handle has seen the list clean
    _half_done_pop_front(lst, 4)
    with pytest.warns(OwnerDiedWarning):
        assert lst[0] == 1
    assert lst.copy() == list(range(1, 10))
    lst.check()
    lst.detach()


@pytest.mark.parametrize("fail_at", [0, 1, 5])
def test_exception_between_writes(monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
    """An exception raised inside a multi-write change: at the record's write, nothing
    changed; after it, the change is finished by the next access (with a warning)."""
    from shmshare import OwnerDiedWarning
    from shmshare._core.heap import Heap

    lst = SharedList(range(50))
    real = Heap.dict_set
    calls = [0]

    def failing(self: Heap, *args: Any, **kw: Any) -> bool:
        calls[0] += 1
        if calls[0] == fail_at + 1:
            raise KeyboardInterrupt
        return real(self, *args, **kw)

    monkeypatch.setattr(Heap, "dict_set", failing)
    with pytest.raises(KeyboardInterrupt):
        lst.insert(0, "x")
    monkeypatch.setattr(Heap, "dict_set", real)
    if fail_at == 0:
        assert lst.copy() == list(range(50))
    else:
        with pytest.warns(OwnerDiedWarning):
            assert lst.copy() == ["x", *range(50)]
    lst.check()
    lst.detach()


def test_check_rejects_bad_record_and_bad_keys() -> None:
    """check() fails on an unreadable redo record, a stray key, or a missing index."""
    from shmshare.errors import CorruptSegmentError
    from shmshare.objects.codec import encode_key
    from shmshare.objects.list_journal import _JOURNAL

    lst = SharedList(range(5))
    heap = lst._heap
    heap.dict_set(*_JOURNAL, b"SLJ1 not a record")
    with pytest.raises(CorruptSegmentError, match="redo record"):
        lst.check()
    with pytest.raises(CorruptSegmentError, match="redo record"):
        lst.copy()
    heap.dict_pop(*_JOURNAL)
    lst.check()
    heap.dict_set(*encode_key("stray"), b"x")
    with pytest.raises(CorruptSegmentError, match="entry 5"):
        lst.check()
    heap.dict_pop(*encode_key("stray"))
    heap.dict_pop(*encode_key(2))
    with pytest.raises(CorruptSegmentError, match="entry 2"):
        lst.check()
    lst.detach()


def test_record_format_is_validated() -> None:
    """The record round-trips; truncated or inconsistent records are refused."""
    from shmshare.objects.list_journal import _pack_journal, _unpack_journal

    puts = [(1, b"a"), (3, b""), (4, b"ccc")]
    data = _pack_journal(4, 5, puts)
    assert _unpack_journal(data) == (4, 5, puts)
    for bad in (data[:-1], data + b"x", data[:10], b"XXXX" + data[4:],
                _pack_journal(4, 5, puts[::-1]),  # out of order
                _pack_journal(4, 6, puts),  # item 5 of the grown list not listed
                _pack_journal(4, 4, puts)):  # index past the new length
        with pytest.raises(ValueError):
            _unpack_journal(bad)


def test_single_write_methods_leave_no_record() -> None:
    """append, setitem, pop at the end, insert at the end: no record written."""
    lst = SharedList([1, 2])
    seen: list[bytes] = []
    real = lst._heap.dict_set
    heap_cls = type(lst._heap)

    def spy(self: Any, key: bytes, *args: Any, **kw: Any) -> bool:
        seen.append(key)
        return real.__func__(self, key, *args, **kw)  # type: ignore[attr-defined, no-any-return]

    import unittest.mock

    with unittest.mock.patch.object(heap_cls, "dict_set", spy):
        lst.append(3)
        lst[0] = 0
        lst.insert(3, 4)
        lst.pop()
        lst.extend([5])
        lst.pop(1)  # two writes: the record
    assert seen.count(b"journal") == 1
    assert lst == [0, 3, 5]
    lst.detach()


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
