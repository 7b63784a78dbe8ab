"""Large buffer values (numpy arrays, bytearrays) in one copy each way.

``d[k] = a`` for a contiguous writable array of at least a MiB writes a.data
straight into the heap, and ``d[k]`` copies it straight from the heap into the
returned array's memory (_core/src/dict_split.c): what is stored is still an
ordinary pickle, which every other reader (items(), pop(), the Manager, the
CLI, an older shmshare) loads as before.
"""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest
from helpers import START_METHODS

from shmshare import SharedDict, SharedNamespace

MIB = 1 << 20


def _array(n: int = 2 * MIB, dtype: str = "f8") -> np.ndarray:
    return np.arange(n // np.dtype(dtype).itemsize, dtype=dtype)


def _peak(fn):  # type: ignore[no-untyped-def]
    """(fn(), the peak of Python-tracked allocations while it ran, in bytes)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", ["f8", "i2", "c16", "u1", [("a", "i4"), ("b", "f8")]])
def test_array_round_trip(dtype) -> None:  # type: ignore[no-untyped-def]
    a = np.zeros(3 * MIB // np.dtype(dtype).itemsize, dtype=dtype)
    a.view("u1")[:] = np.arange(a.nbytes, dtype="u8").astype("u1")  # every byte counts
    with SharedDict() as d:
        d["a"] = a
        got = d["a"]
        assert got.dtype == a.dtype and got.shape == a.shape
        assert got.tobytes() == a.tobytes()
        assert got.flags.writeable and got.flags.aligned and got.flags.c_contiguous
        assert d.get("a").tobytes() == a.tobytes()


def test_shapes_and_orders() -> None:
    with SharedDict() as d:
        for a in (_array().reshape(512, -1), np.asfortranarray(_array().reshape(512, -1)),
                  _array()[::2],                              # not contiguous: in-band
                  _array().reshape(64, 64, -1).transpose(2, 0, 1)):
            d["a"] = a
            got = d["a"]
            assert got.shape == a.shape and np.array_equal(got, a)
            if a.flags.c_contiguous or a.flags.f_contiguous:  # else pickled in C order
                assert got.flags.f_contiguous == a.flags.f_contiguous


def test_value_is_a_copy_both_ways() -> None:
    a = _array()
    with SharedDict() as d:
        d["a"] = a
        a[0] = -1.0  # the store copied: the stored value keeps 0
        got = d["a"]
        assert got[0] == 0.0
        got[1] = -2.0  # the read copied: the stored value keeps 1
        assert d["a"][1] == 1.0
        again = d["a"]
        assert again.ctypes.data != got.ctypes.data  # each read is its own array


def test_readonly_array_and_bytearray() -> None:
    ro = _array()
    ro.flags.writeable = False
    ba = bytearray(b"ab" * MIB)
    with SharedDict() as d:
        d["ro"] = ro
        d["ba"] = ba
        assert np.array_equal(d["ro"], ro)
        got = d["ba"]
        assert type(got) is bytearray and got == ba
        assert type(d.get("ba")) is bytearray


def test_stored_bytes_are_an_ordinary_pickle() -> None:
    a = _array()
    with SharedDict() as d:
        d["a"] = a
        d["b"] = bytearray(b"x" * (2 * MIB))
        stored = d._heap.dict_get(b"a", 1)
        assert np.array_equal(pickle.loads(stored), a)
        assert np.array_equal(dict(d.items())["a"], a)
        assert list(d.keys()) == ["a", "b"]
        assert np.array_equal(d.pop("a"), a)
        assert d.popitem() == ("b", bytearray(b"x" * (2 * MIB)))


def test_set_does_not_pickle_the_data_first() -> None:
    a = _array(8 * MIB)
    with SharedDict() as d:
        d["a"] = a  # the heap grows here, outside the measurement
        _, peak = _peak(lambda: d.__setitem__("a", a))
        assert peak < a.nbytes // 8, f"d[k] = a allocated {peak} bytes for {a.nbytes}"


def test_get_allocates_the_array_only() -> None:
    a = _array(8 * MIB)
    with SharedDict() as d:
        d["a"] = a
        d["a"]
        got, peak = _peak(lambda: d["a"])
        assert np.array_equal(got, a)
        assert peak < a.nbytes * 1.1, f"d[k] allocated {peak} bytes for {a.nbytes}"
        # and copied straight into it: the thread's buffer for large values (the
        # copy in between, untracked by tracemalloc) was never made
        assert getattr(d._heap._tls, "big", None) is None


def test_the_c_store_hands_over_at_the_same_size() -> None:
    from shmshare._core import _hotpath
    from shmshare.objects import codec

    assert _hotpath.SPLIT_MIN == codec.SPLIT_MIN


def test_small_arrays_keep_the_ordinary_path() -> None:
    with SharedDict() as d:
        for n in (0, 8, MIB - 8):
            a = _array(n)
            d["a"] = a
            assert np.array_equal(d["a"], a)
            assert d._heap.dict_get(b"a", 1) == pickle.dumps(a, protocol=5)


def test_namespace_attribute() -> None:
    a = _array()
    with SharedNamespace() as ns:
        ns.a = a
        assert np.array_equal(ns.a, a)


def test_a_damaged_split_header_is_read_as_a_plain_pickle() -> None:
    # Only the layout the store writes is read in two parts; anything else that
    # starts the same way (here a BININT, POP that points past the value) is an
    # ordinary pickle, read as one.
    body = pickle.dumps(_array(2 * MIB), protocol=5)
    fake = b"\x80\x05J\xff\xff\xff\x7f0" + body[2:]
    with SharedDict() as d:
        d._heap.dict_set(b"a", 1, fake)
        assert np.array_equal(d["a"], _array(2 * MIB))


@pytest.mark.parametrize("method", START_METHODS)
def test_another_process_reads_it(method: str, project_dir) -> None:  # type: ignore[no-untyped-def]
    import multiprocessing as mp

    a = _array(3 * MIB)
    with SharedDict(f"big-{method}", project_dir=project_dir) as d:
        d["a"] = a
        ctx = mp.get_context(method)
        with ctx.Pool(1) as pool:
            assert pool.apply(_sum_of, (d,)) == float(a.sum())
        assert d["back"].tobytes() == (a * 2).tobytes()


def _sum_of(d: SharedDict) -> float:
    d["back"] = d["a"] * 2
    return float(d["a"].sum())


def test_unrelated_reader_sees_whole_values(project_dir) -> None:  # type: ignore[no-untyped-def]
    # A reader in an unrelated process while this one rewrites the value: every
    # read is one of the written arrays, whole (the copy out is under the lock).
    with SharedDict("torn", project_dir=project_dir) as d:
        d["a"] = np.full(MIB, 0, dtype="i8")
        code = f"""
import numpy as np, sys
from shmshare import SharedDict
d = SharedDict("torn", create=False, project_dir={str(project_dir)!r})
seen = set()
for _ in range(200):
    a = d["a"]
    assert (a == a[0]).all(), "torn read"
    seen.add(int(a[0]))
d.detach()
print(len(seen))
"""
        import subprocess
        import sys

        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        i = 0
        while child.poll() is None:
            i += 1
            d["a"] = np.full(MIB, i, dtype="i8")
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert int(out) >= 1


# -- the queue: the same layout, put and got in one copy each ----------------------


def test_queue_round_trip_both_paths() -> None:
    from shmshare import SharedQueue

    a, ba = _array(), bytearray(b"q" * (2 * MIB))
    with SharedQueue() as q:
        q.put(a)
        q.put(ba)
        got = q.get()  # the C take
        assert np.array_equal(got, a) and got.flags.writeable
        assert type(q.get()) is bytearray
        q.put(a)
        with q.lock:  # the lock held here: the general path (shms_queue_get)
            got = q.get()
        assert np.array_equal(got, a) and got.flags.writeable
        q.put(a[::2])  # not contiguous: pickled whole, as before
        assert np.array_equal(q.get(), a[::2])


def test_queue_put_does_not_pickle_the_data_first() -> None:
    from shmshare import SharedQueue

    a = _array(8 * MIB)
    with SharedQueue() as q:
        q.put(a)
        q.get()
        _, peak = _peak(lambda: q.put(a))
        assert peak < a.nbytes // 8, f"put allocated {peak} bytes for {a.nbytes}"
        got, peak = _peak(q.get)
        assert peak < a.nbytes * 1.1 and np.array_equal(got, a)


def test_bounded_queue_full_and_a_waiting_getter() -> None:
    import queue
    import threading

    from shmshare import SharedQueue

    a = _array()
    with SharedQueue(1) as q:
        q.put(a)
        with pytest.raises(queue.Full):
            q.put(a, timeout=0.05)
        with pytest.raises(queue.Full):
            q.put(a, block=False)
        assert np.array_equal(q.get(), a)
        got: list[np.ndarray] = []
        getter = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
        getter.start()  # waits in shms_queue_get until the put below
        q.put(a * 3)
        getter.join(30)
        assert np.array_equal(got[0], a * 3)


@pytest.mark.parametrize("method", START_METHODS)
def test_queue_between_processes(method: str) -> None:
    import multiprocessing as mp

    from shmshare import SharedQueue

    a = _array(3 * MIB)
    with SharedQueue() as to_child, SharedQueue() as back:
        ctx = mp.get_context(method)
        p = ctx.Process(target=_echo_doubled, args=(to_child, back))
        p.start()
        to_child.put(a)
        got = back.get(timeout=60)
        p.join(60)
        assert p.exitcode == 0 and np.array_equal(got, a * 2)


def _echo_doubled(to_child, back) -> None:  # type: ignore[no-untyped-def]
    back.put(to_child.get(timeout=60) * 2)


# -- a list's large items: read through the heap's lent buffer ---------------------


def test_list_large_items_are_read_through_a_lent_buffer() -> None:
    from shmshare import SharedList

    big = [b"L" * (5 * MIB)]  # pickled whole (neither a bytes object nor split): lent
    with SharedList([big, 1, "s" * (5 * MIB)]) as lst:
        assert lst[0] == big and lst[-3] == big and lst[1] == 1
        assert lst[2] == "s" * (5 * MIB)
        tls = lst._heap._tls
        assert tls.lent is None and tls.big is not None  # given back, kept for the next
        view = lst._core.get(0)[0]
        assert type(view) is memoryview and pickle.loads(view) == big  # lent, not back yet
        assert lst[0] == big  # a read meanwhile uses a buffer of its own
        lst._heap.recycle(view)
        with lst.lock:  # the lock held here: the general path
            assert lst[0] == big
        assert lst[0:1] == [big]


@pytest.mark.parametrize("item", [b"B" * (8 * MIB), _array(8 * MIB),
                                  bytearray(b"y" * (8 * MIB))], ids=["bytes", "array", "bytearray"])
@pytest.mark.parametrize("store", ["constructor", "extend", "slice", "append"])
def test_list_large_bytes_and_split_items_are_read_in_one_copy(item, store) -> None:  # type: ignore[no-untyped-def]
    from shmshare import SharedList

    def same(got):  # type: ignore[no-untyped-def]
        return type(got) is type(item) and (np.array_equal(got, item) if
                                            isinstance(item, np.ndarray) else got == item)

    with SharedList([1, item, 2] if store == "constructor" else [1]) as lst:
        if store == "extend":
            lst += [item, 2]
        elif store == "slice":
            lst[1:] = [item, 2]
        elif store == "append":
            lst.append(item)
            lst.append(2)
        assert same(lst[1]) and same(lst[-2]) and lst[0] == 1 and lst[2] == 2
        got, peak = _peak(lambda: lst[1])
        assert same(got)
        assert peak < len(pickle.dumps(item, 5)) * 1.1, f"lst[i] allocated {peak} bytes"
        # and copied straight into the new object: the thread's buffer for large
        # items (the copy in between, untracked by tracemalloc) was never made
        assert getattr(lst._heap._tls, "big", None) is None
        with lst.lock:  # held here: the one-try read gives way to the general path
            assert same(lst[1])
        with pytest.raises(IndexError):
            lst[3]
        lst.insert(0, item)
        got, peak = _peak(lambda: lst.pop(0))
        assert same(got)
        assert peak < len(pickle.dumps(item, 5)) * 1.1, f"pop allocated {peak} bytes"
        assert getattr(lst._heap._tls, "big", None) is None  # popped in one copy too
        with lst.lock:
            assert same(lst.pop(1))  # the general path
        assert lst[:] == [1, 2]


@pytest.mark.parametrize("kind", ["bytes", "array", "pickled whole"])
def test_list_item_read_while_another_process_rewrites_it(project_dir, kind) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from shmshare import SharedList

    def item(i: int):  # type: ignore[no-untyped-def]
        if kind == "bytes":
            return str(i % 10).encode() * (5 * MIB)
        if kind == "array":
            return np.full(5 * MIB // 8, i % 10, dtype="f8")  # read split, in one copy
        return [str(i % 10) * (5 * MIB)]  # read through the lent buffer

    with SharedList([item(0)], name="biglist", project_dir=project_dir) as lst:
        code = f"""
import numpy as np
from shmshare import SharedList
lst = SharedList(name="biglist", create=False, project_dir={str(project_dir)!r})
for _ in range(100):
    item = lst[0]
    if isinstance(item, list):
        item = item[0]
    if isinstance(item, np.ndarray):
        assert (item == item[0]).all(), "torn read"
    else:
        assert item == item[:1] * len(item), "torn read"
lst.detach()
"""
        with subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                              text=True) as child:
            i = 0
            while child.poll() is None:
                i += 1
                lst[0] = item(i)
            _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err


def test_list_items_between_one_and_four_mib_are_read_in_one_copy_too() -> None:
    from shmshare import SharedList

    item = b"m" * (2 * MIB)  # larger than a read copies into the scratch buffer
    with SharedList([b"s" * (3 * MIB), item]) as lst:
        assert lst.pop(0) == b"s" * (3 * MIB)
        scratch = lst._heap._tls.s
        for _ in range(2):
            got, peak = _peak(lambda: lst[0])
            assert got == item and peak < len(item) * 1.1, f"lst[i] allocated {peak} bytes"
        assert scratch.cap < len(item)  # never grown to hold it: copied once, into the bytes
        assert lst.pop() == item and len(lst) == 0


@pytest.mark.parametrize("kind", ["bytes", "array"])
def test_two_processes_popping_large_items_take_each_once(project_dir, kind) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from shmshare import SharedList

    n = 12
    items = ([bytes([i]) * (5 * MIB) for i in range(n)] if kind == "bytes" else
             [np.full(5 * MIB // 8, i, dtype="f8") for i in range(n)])
    with SharedList(items, name="pops", project_dir=project_dir) as lst:
        code = f"""
from shmshare import SharedList
lst = SharedList(name="pops", create=False, project_dir={str(project_dir)!r})
got = []
while True:
    try:
        item = lst.pop(0)
    except IndexError:
        break
    got.append(int(item[0]))
    assert (item == item[0]).all() if hasattr(item, "all") else item == item[:1] * len(item)
print(" ".join(map(str, got)))
lst.detach()
"""
        children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for _ in range(2)]
        taken = []
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            taken += [int(x) for x in out.split()]
        assert sorted(taken) == list(range(n))  # each item once: none lost, none twice
        assert len(lst) == 0


def test_list_large_items_are_written_in_one_copy() -> None:
    from shmshare import SharedList
    from shmshare.objects.codec import large_parts

    big, a, ba = b"w" * (8 * MIB), _array(8 * MIB), bytearray(b"y" * (2 * MIB))
    head, data, tail = large_parts(big)  # type: ignore[misc]
    assert head + bytes(data) + tail == pickle.dumps(big, protocol=5)  # byte for byte
    with SharedList() as lst:
        lst.append(big)
        lst.append(a)
        lst.insert(0, ba)
        assert [type(x) for x in lst] == [bytearray, bytes, np.ndarray]
        assert lst[1] == big and np.array_equal(lst[2], a) and lst[0] == ba
        lst[1] = a  # the heap has room now: measured without growth
        lst[2] = big
        for op in (lambda: lst.__setitem__(1, a), lambda: lst.append(big),
                   lambda: lst.insert(1, a)):
            _, peak = _peak(op)
            assert peak < MIB, f"{peak} bytes allocated to store an 8 MiB item"
        assert [type(x) for x in lst] == [bytearray, np.ndarray, np.ndarray, bytes, bytes]
        assert np.array_equal(lst[2], a) and lst[3] == big and lst[-1] == big
        assert pickle.loads(bytes(lst._raw(3, 4)[0])) == big  # an ordinary pickle
        assert lst.pop() == big and np.array_equal(lst.pop(1), a)
        del lst[-1]
        assert getattr(lst._heap._tls, "lent", None) is None  # every lent buffer given back
        with pytest.raises(IndexError):
            lst[10] = a
        assert len(lst) == 2


def test_update_splits_large_values_and_stays_atomic() -> None:
    a, big = _array(8 * MIB), b"u" * (8 * MIB)
    with SharedDict() as d:
        d.update(a=a, b=big, c=1)
        assert np.array_equal(d["a"], a) and d["b"] == big and d["c"] == 1
        _, peak = _peak(lambda: d.update({"a": a, "b": big}))
        assert peak < MIB, f"update allocated {peak} bytes for 16 MiB of values"
        with pytest.raises(TypeError, match="on purpose"):
            d.update(a=a * 0, bad=_Unpicklable())
        assert np.array_equal(d["a"], a) and "bad" not in d  # nothing written


def test_setdefault_of_a_large_array_stores_it_split() -> None:
    a = _array(8 * MIB)
    with SharedDict() as d:
        assert d.setdefault("a", a) is a
        got, peak = _peak(lambda: d["a"])
        assert np.array_equal(got, a) and peak < a.nbytes * 1.1
        assert getattr(d._heap._tls, "big", None) is None  # read in one copy
        # present: returned as stored, and the default is not even pickled
        assert np.array_equal(d.setdefault("a", _Unpicklable()), a)


class _Unpicklable:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("not picklable, on purpose")


# -- what a thread keeps after a large read -----------------------------------------


def test_a_large_read_does_not_grow_the_thread_for_good(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from shmshare import SharedQueue
    from shmshare._core import heap_base

    item = {"blob": b"z" * (6 * MIB)}  # pickled whole: no split, no bytes fast path
    with SharedQueue() as q:
        q.put(item)
        grown = []
        real_grow = heap_base.Scratch.grow
        monkeypatch.setattr(heap_base.Scratch, "grow",
                            lambda s, need: (grown.append(need), real_grow(s, need)))
        with q.lock:  # the general path: into the thread's scratch, grown to fit
            assert q.get() == item
        assert grown and max(grown) > heap_base.SCRATCH_KEEP
        assert q._heap._tls.s.cap <= heap_base.SCRATCH_KEEP  # let go once copied out

    monkeypatch.setattr(heap_base, "BIG_KEEP", 2 * MIB)
    with SharedDict() as d:
        # pickled whole (in a list: not a bytes value, not an array), so read lent
        d["kept"] = [b"k" * (MIB + MIB // 2)]  # above 1 MiB, small enough to keep
        d["dropped"] = [b"d" * (3 * MIB)]
        tls = d._heap._tls
        assert d["kept"] and tls.big is not None
        assert d["dropped"] and tls.big is None and tls.lent is None
