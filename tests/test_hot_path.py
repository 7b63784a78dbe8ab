"""The one-call paths of SharedDict (ext/hotpath.c): d[k] = v and d[k] for a str, int
or bytes key (a cache hit, or the re-read of a missing or changed key) keep the GIL and try the
heap lock once; every other outcome must take the general path, which waits,
grows, repairs or raises."""

from __future__ import annotations

import errno
import pickle
import threading
from typing import Any

import pytest
from helpers import fork_call, fork_child, lock_held_elsewhere, wait_pid
from shmshare._core._lib import ffi

import shmshare
from shmshare._core._hotpath import HotPath
from shmshare._core.heap import _PEEK, _STORE_BYTES_TRY, _STORE_TRY
from shmshare._core.heap_dict import NOT_READ

BIG = (1 << 20) + 1  # above what the hot path copies (heap_dict.BIG_VALUE)


def _waits_for_the_holder(release: Any, fn: Any) -> list[Any]:
    """``fn()`` in a thread while another process holds the lock: still waiting after
    0.3 s, nothing done; once ``release()`` lets the lock go it finishes.  [its result]"""
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(fn()))
    t.start()
    t.join(0.3)
    assert t.is_alive() and not done  # waiting for the holder
    release()
    t.join(30)
    return done


def test_hot_calls_kept_after_detach_return_codes_not_crashes() -> None:
    """A HotPath method kept past close() answers -1 (get: NOT_READ); the dict raises
    as detached."""
    d = shmshare.SharedDict({"a": 1})
    heap = d._heap
    get_hot, store, peek = heap.get_hot, heap.store, heap._peek
    assert d["a"] == 1
    d.detach()
    assert get_hot({}, "a") is NOT_READ
    assert peek(b"a") == -1
    assert store(b"a", 1, b"x", 1) == -1
    with pytest.raises(ValueError, match="detached"):
        d["a"]
    with pytest.raises(ValueError, match="detached"):
        d["a"] = 2


def test_get_hot_returns_the_value_and_keeps_its_bytes_and_version() -> None:
    """get_hot unpickles the value and keeps [bytes, stripe, version]; a hit serves it
    from there; a get_hot of the changed key updates that same entry in place."""
    d: shmshare.SharedDict[str, Any] = shmshare.SharedDict({"a": [1, 2]})
    try:
        assert d["a"] == [1, 2]  # maps the version stripes
        cache: dict[str, list[Any]] = {}
        assert d._heap.get_hot(cache, "a") == [1, 2]
        entry = cache["a"]
        entry[0] = pickle.dumps("from the cache", 5)  # a hit reads only the cache
        assert d._heap.get_hot(cache, "a") == "from the cache"
        entry[0] = pickle.dumps([1, 2], 5)
        data, stripe, version = entry
        assert shmshare.objects.codec.loads(data) == [1, 2]
        assert d._heap.versions_view[stripe] == version
        d["a"] = "changed"
        assert d._heap.get_hot(cache, "a") == "changed"
        assert cache["a"] is entry and entry[1] == stripe and entry[2] != version
        assert d._heap.versions_view[stripe] == entry[2]
        assert d._heap.get_hot(cache, "missing") is NOT_READ
        assert d._heap.get_hot(cache, "") is NOT_READ  # the empty key: the general path
        with pytest.raises(TypeError):
            d._heap.get_hot([], "a")  # type: ignore[arg-type]
    finally:
        d.detach()


def test_odd_keys_and_large_values_take_the_general_path() -> None:
    """Lone surrogates (no UTF-8) and values past the copy limit go the general way."""
    d = shmshare.SharedDict()
    try:
        odd = "x\udcff"
        d[odd] = 1
        assert d._heap.get_hot({}, odd) is NOT_READ
        assert d[odd] == 1
        big = [b"b" * BIG]  # large, and not one bytes object (those: the test below)
        d["big"] = big
        assert d._heap.get_hot({}, "big") is NOT_READ
        for _ in range(2):
            assert d["big"] == big
        assert "big" not in d._read_cache
        d["big"] = 5  # a small value again: kept
        assert d["big"] == 5 and "big" in d._read_cache
    finally:
        d.detach()


# Ints at every boundary of their encoding's length (codec._int: (bit_length + 8) // 8
# bytes, two's complement) and past 64 bits (the general path's), and bytes keys up to
# and past what the C paths encode (HOT_KEY_MAX: 256 bytes with the 6 of the tag).
INT_KEYS = [0, 1, -1, 127, 128, -128, -129, 255, 256, -256, -257, 32767, 32768, -32768,
            -32769, (1 << 31) - 1, 1 << 31, -(1 << 31), (1 << 63) - 1, -(1 << 63), 1 << 63,
            -(1 << 63) - 1, 1 << 64, 10 ** 30, -(10 ** 30)]
BYTES_KEYS = [b"", b"a", b"\xff", b"\x00" * 3, b"k" * 250, b"k" * 251]


def _nested(depth: int) -> Any:
    key: Any = ("leaf", -1)
    for i in range(depth - 1):
        key = (i, key)
    return key


# Tuples of what the C paths encode, 8 deep and 9 (the general path's), and tuples
# holding what they do not: a float, a bool, a lone surrogate, a frozenset, too many bytes.
TUPLE_KEYS = [(), (1,), ("a", 1), (None,), ("", b"", 0), (b"x", ("n", (1 << 62, -1))),
              _nested(8), _nested(9), (1.5, "a"), (True, 2), ("x\udcff",), (frozenset({1}),),
              ("k" * 240,), ("k" * 250,)]


@pytest.mark.parametrize("key", INT_KEYS + BYTES_KEYS + TUPLE_KEYS, ids=repr)
def test_keys_the_c_paths_encode_are_the_general_paths_keys(key: Any) -> None:
    """d[k] = v, d[k] and k in d encode an int, bytes or tuple key in C
    (ext/hotkeys.c): into exactly codec.encode_key's bytes, so what one path writes
    the other finds."""
    d: Any = shmshare.SharedDict()
    try:
        d[key] = ("c", key)                       # the C store (or the general one)
        assert d.pop(key) == ("c", key)           # the general path's encoding finds it
        assert len(d) == 0
        d.update({key: ("general", key)})         # written by the general path
        assert d[key] == ("general", key)         # read by the C path
        assert key in d and d.get(key) == ("general", key)
        d[key] = "again"
        assert len(d) == 1 and list(d) == [key] and type(next(iter(d))) is type(key)
        del d[key]
        assert key not in d and d.get(key, 7) == 7
    finally:
        d.detach()


def test_int_bytes_and_tuple_keys_are_read_in_one_c_call() -> None:
    """HotPath.get and .has answer for int, bytes and tuple keys (not only str), and
    an int key equal to a bool or float key is the same key, its first form kept."""
    d: Any = shmshare.SharedDict({"a": 0})
    try:
        assert d["a"] == 0  # the general path maps the version stripes
        d[5] = "five"
        d[b"k"] = "kay"
        cache: dict[Any, Any] = {}
        assert d._heap.get_hot(cache, 5) == "five" and 5 in cache
        assert d._heap.get_hot(cache, b"k") == "kay" and b"k" in cache
        d[(1, "a")] = "tuple"
        assert d._heap.get_hot(cache, (1, "a")) == "tuple" and (1, "a") in cache
        assert d._heap.has_hot({}, (1, "a")) is True
        assert d._heap.get_hot({}, (1.5,)) is NOT_READ       # a float in it
        assert d._heap.has_hot({}, 5) is True and d._heap.has_hot({}, 6) is False
        assert d._heap.get_hot({}, 1 << 64) is NOT_READ      # past 64 bits
        assert d._heap.get_hot({}, True) is NOT_READ         # a bool: the general path
        d[True] = "bool first"
        d[1] = "then int"                                  # one key, as in a dict
        d[1.0] = "then float"
        assert d[True] == d[1] == d[1.0] == "then float"
        assert [k for k in d if k == 1] == [True] and type(list(d)[-1]) is bool
        d[7] = "int first"
        d[7.0] = "float"
        assert d[7] == "float" and [k for k in d if k == 7] == [7]
        assert type(next(k for k in d if k == 7)) is int
    finally:
        d.detach()


def test_reads_and_writes_under_this_threads_lock_run_held_in_one_c_call() -> None:
    """Holding the lock here, d[k], d[k] = v, k in d, d.get, apply() and a
    SharedValue's value run held in their one C call (the handle's guard says this
    thread holds it): no hand-over to the general path."""
    general: list[str] = []

    class Counting(shmshare.SharedDict):  # type: ignore[type-arg]
        def _read(self, key: Any) -> Any:
            general.append("read")
            return super()._read(key)

        def _setitem(self, key: Any, value: Any) -> None:
            general.append("setitem")
            super()._setitem(key, value)

        def _store_slow(self, kb: bytes, data: bytes) -> None:
            general.append("store_slow")
            super()._store_slow(kb, data)

    d: Any = Counting({"a": 1})
    v = shmshare.SharedValue("i", 0)
    try:
        assert d["a"] == 1 and v.value == 0  # the general path maps the version stripes
        for k in ("big", "room", "more"):  # the heap grown (the general path's job)
            d[k] = b"y" * (1 << 17)
        del d["room"], d["more"]
        general.clear()
        with d.lock:
            assert d._heap.get_hot({}, "a") == 1
            d["a"] = 2
            assert d["a"] == 2 and "a" in d and d.get("a") == 2
            d[(1, "b")] = 3
            d["big"] = b"x" * (1 << 17)  # stored from the bytes object, held
            assert d[(1, "b")] == 3 and "nope" not in d and d.get("nope", 4) == 4
            with pytest.raises(KeyError):
                d["nope"]
        assert d.apply("a", lambda n: n + 1) == 3
        with v.get_lock():
            v.value += 5
            assert v.value == 5
        assert general == []
        assert d["a"] == 3 and d[(1, "b")] == 3 and d["big"] == b"x" * (1 << 17)
        assert v.value == 5
    finally:
        d.detach()
        v.detach()


def test_another_thread_waits_while_this_one_holds_the_lock() -> None:
    """The held one-call paths are this thread's: another thread of the process,
    whose guard does not name it, waits for the lock, then sees the writes."""
    d: Any = shmshare.SharedDict({"a": 1})
    try:
        assert d["a"] == 1
        seen: list[object] = []

        def other() -> None:
            d["a"] = 100  # a write takes the lock (a cached read need not)
            seen.append(d["a"])

        with d.lock:
            t = threading.Thread(target=other)
            t.start()
            t.join(0.3)
            assert t.is_alive() and not seen  # waiting, not running under our hold
            d["a"] = 2
            assert d["a"] == 2
        t.join(30)
        assert seen == [100] and d["a"] == 100
    finally:
        d.detach()


def test_a_child_forked_under_the_lock_does_not_write_under_its_parents_hold() -> None:
    """A child forked while its parent holds the lock holds nothing (its guard is
    forgotten): its one-call store finds the lock busy and hands over; the parent's
    writes, made held, are there once the child can see them."""
    d: Any = shmshare.SharedDict({"a": 1})
    try:
        assert d["a"] == 1
        with d.lock:
            d["a"] = 2

            def child() -> int:
                data = pickle.dumps(3, 5)
                return 0 if d._heap.store(b"a", 1, data, len(data)) == errno.EBUSY else 1

            assert fork_call(child) == 0
            assert d["a"] == 2
        assert d["a"] == 2
    finally:
        d.detach()


def test_reads_and_writes_wait_for_another_process_holding_the_lock() -> None:
    """While another process holds the lock, d[k] and d[k] = v wait for it, not fail."""
    d = shmshare.SharedDict({"a": 1})
    try:
        d["a"] = 1
        with lock_held_elsewhere(d) as release:
            assert d._heap.get_hot({}, "a") is NOT_READ  # busy: the general path
            def use() -> Any:
                d["a"] = 7
                return d["a"]
            assert _waits_for_the_holder(release, use) == [7]
    finally:
        d.detach()


def test_hot_store_grows_the_heap_through_the_general_path() -> None:
    """The one-call store never grows the heap; a value that needs growth still lands."""
    d = shmshare.SharedDict()
    try:
        before = d._heap.stats()["extents"]
        for i in range(200):
            d[f"k{i}"] = b"v" * 4000
        assert d._heap.stats()["extents"] > before
        assert all(d[f"k{i}"] == b"v" * 4000 for i in range(200))
    finally:
        d.detach()


def test_large_bytes_values_read_unpickled_equal_what_pickle_gives() -> None:
    """A large value that is the pickle of one bytes object is read straight into the
    result; every other large pickle, well-formed or not, reads as pickle.loads has it."""
    import pickle
    import struct

    d = shmshare.SharedDict()
    try:
        payload = bytes(range(256)) * (BIG // 256 + 1)
        n = struct.pack("<I", len(payload))
        shapes = {
            "dumps": pickle.dumps(payload, 5),
            "no memo": b"\x80\x05B" + n + payload + b".",
            "binbytes8": b"\x80\x05\x8e" + struct.pack("<Q", len(payload)) + payload + b"\x94.",
            "bytearray": pickle.dumps(bytearray(payload), 5),
            "tuple": pickle.dumps((payload,), 5),
            "trailing": b"\x80\x05B" + n + payload + b"\x94.x",
            "short": b"\x80\x05B" + struct.pack("<I", len(payload) + 10) + payload + b".",
            "huge length": b"\x80\x05\x8e" + b"\xff" * 8 + payload + b".",
            "no stop": b"\x80\x05B" + n + payload + b"\x94\x94",
        }
        for name, data in shapes.items():
            d._heap.dict_set(name.encode(), len(name.encode()), data)
        for name, data in shapes.items():
            try:
                want: object = pickle.loads(data)
            except Exception as e:  # whatever pickle raises, d[k] raises too
                with pytest.raises(type(e)):
                    d[name]
            else:
                got = d[name]
                assert type(got) is type(want) and got == want, name
    finally:
        d.detach()


_DICTS: dict[str, shmshare.SharedDict[str, Any]] = {}


def _rewrite_while_unpickled(n: int) -> tuple[str, int, object]:
    d = _DICTS["d"]
    d["k"] = ("new", n)  # a write that lands while this value is being unpickled
    return ("old", n, d["other"])  # and a read of the same dict: the lock is free


class _Rewrites:
    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return _rewrite_while_unpickled, (self.n,)


def test_a_write_during_the_unpickling_is_seen_by_the_next_read() -> None:
    """A changed key's value is unpickled with the lock released, from the bytes copied
    under it: a write meanwhile never tears it, and the version kept is the one read
    with those bytes, so the next read returns the new value, not the cached one."""
    d: shmshare.SharedDict[str, Any] = shmshare.SharedDict({"other": 1, "k": 0})
    _DICTS["d"] = d
    try:
        assert d["k"] == 0  # cached
        d["k"] = _Rewrites(7)  # the key changed: the next read re-reads it
        assert d["k"] == ("old", 7, 1)
        assert d["k"] == ("new", 7)
        assert d["k"] == ("new", 7)
    finally:
        del _DICTS["d"]
        d.detach()


class _Shares:
    """A protocol-5 value whose bytes travel as a PickleBuffer (PEP 574)."""

    def __init__(self, data: bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: object) -> tuple[object, tuple[object]]:
        return _Shares, (pickle.PickleBuffer(self.data),)


def test_values_unpickled_from_buffers_are_private_copies() -> None:
    """A value rebuilt from a buffer (bytearray, PickleBuffer) owns its bytes: changing
    the result changes neither the cached bytes nor the next read."""
    d: shmshare.SharedDict[str, Any] = shmshare.SharedDict({"ba": bytearray(b"abc"), "pb": 0})
    try:
        for _ in range(2):  # the first read after a change, then a cache hit
            got = d["ba"]
            got[0] = ord("z")
            assert d["ba"] == bytearray(b"abc")
        d["pb"] = _Shares(bytearray(b"xyz"))
        for _ in range(2):
            shared = d["pb"]
            assert bytes(shared.data) == b"xyz"
            shared.data[0] = ord("q")
    finally:
        d.detach()


def test_a_value_that_fails_to_unpickle_raises_and_a_good_one_reads_after() -> None:
    d = shmshare.SharedDict({"a": 1})
    try:
        assert d["a"] == 1
        d._heap.dict_set(b"a", 1, b"\x80\x05cno_such_module\nthing\n\x94.")
        with pytest.raises(ModuleNotFoundError):
            d["a"]
        d["a"] = 2
        assert d["a"] == 2
    finally:
        d.detach()


def test_the_cache_is_emptied_past_its_byte_cap() -> None:
    """The bytes get keeps are counted; past the cap the cache starts over."""
    d = shmshare.SharedDict({"a": b"x" * 100, "b": b"y" * 100})
    try:
        hot = HotPath(int(ffi.cast("uintptr_t", d._heap._h)), _PEEK, _STORE_TRY,
                      _STORE_BYTES_TRY, 1 << 20, pickle.loads, NOT_READ, 250)
        cache: dict[str, list[object]] = {}
        assert hot.get(cache, "a") is NOT_READ  # the stripes not mapped yet
        assert d["a"] == b"x" * 100  # maps them for d's own HotPath
        hot.versions_mapped(int(ffi.cast("uintptr_t", ffi.from_buffer(d._heap.versions_view))))
        assert hot.get(cache, "a") == b"x" * 100 and list(cache) == ["a"]
        assert hot.get(cache, "b") == b"y" * 100 and list(cache) == ["a", "b"]
        assert hot.get(cache, "a") == b"x" * 100 and list(cache) == ["a", "b"]  # a hit
        d["a"] = b"x" * 100  # changed: the next get re-reads it
        assert hot.get(cache, "a") == b"x" * 100 and cache == {}  # past 250 bytes
        assert hot.get(cache, "b") == b"y" * 100 and list(cache) == ["b"]
        with pytest.raises(ValueError, match="aligned address"):
            hot.versions_mapped(0)
        hot.close()
    finally:
        d.detach()


def test_a_large_bytes_value_is_read_in_one_copy_before_any_stripe_is_mapped() -> None:
    """A dict holding only a large bytes value never maps its version stripes (nothing
    is cached): its reads must still take the one-copy path, not the general one."""
    d = shmshare.SharedDict({"big": b"b" * BIG})
    try:
        for _ in range(2):
            assert d._heap.get_hot({}, "big") == b"b" * BIG
            assert d["big"] == b"b" * BIG
    finally:
        d.detach()


def test_an_absent_key_is_answered_by_the_one_read() -> None:
    """d[k] and d.get(k) of a str key the dict does not hold: the C read that found
    it absent (under the lock) answers -- KeyError, a subclass's __missing__, the
    default -- without the general path reading it again; a cached entry of a key
    since deleted (by any process) is dropped."""
    general: list[Any] = []

    class Counting(shmshare.SharedDict):  # type: ignore[type-arg]
        def _read(self, key: Any) -> Any:
            general.append(key)
            return super()._read(key)

    class Defaulting(Counting):
        def __missing__(self, key: Any) -> Any:
            return ("missing", key)

    d: Any = Counting({"a": 1})
    e: Any = Defaulting({"b": 2})
    try:
        assert d["a"] == 1 and e["b"] == 2  # the general path maps the version stripes
        general.clear()
        assert d.get("nope") is None and d.get("nope", 5) == 5
        with pytest.raises(KeyError, match="nope"):
            d["nope"]
        assert e["nope"] == ("missing", "nope") and e.get("nope", 6) == 6
        assert general == []
        cache: dict[str, list[Any]] = {}
        assert d._heap.get_hot(cache, "a", None) == 1 and "a" in cache
        assert wait_pid(fork_child(d.__delitem__, "a")) == 0
        assert d._heap.get_hot(cache, "a", "gone") == "gone" and "a" not in cache
        assert d._heap.get_hot(cache, "a") is NOT_READ  # no default: the general path's
        assert general == []
    finally:
        d.detach()
        e.detach()


def test_set_add_in_one_call_keeps_the_first_form_and_each_item_once() -> None:
    """SharedSet.add is one C call (HotPath.store_key: the item encoded in C as
    encode_key would, and the store tried once; a present item written again,
    empty as before): the item first added keeps its form (True, not 1), under this
    thread's lock too, and two processes adding the same items hold each once;
    discard and remove are one C call too (HotPath.pop)."""
    s: Any = shmshare.SharedSet()
    try:
        s.add(True)
        s.add(1)
        s.add(1.0)
        assert list(s) == [True] and len(s) == 1
        with s.lock:
            s.add(2)
            s.add((3, "x"))
        assert sorted(map(repr, s)) == ["(3, 'x')", "2", "True"]

        def add_all() -> None:
            for i in range(300):
                s.add(i % 100)
        pid = fork_child(add_all)
        add_all()
        assert wait_pid(pid) == 0
        assert len(s) == 101 and set(s) == set(range(100)) | {(3, "x")}
        # discard and remove take the item out the same way (HotPath.pop)
        s.discard(1.0)                  # the member True/1, whatever form it was given
        s.discard(1)
        with pytest.raises(KeyError):
            s.remove(1)
        with s.lock:
            s.remove((3, "x"))
            s.discard("absent")
        assert 1 not in s and (3, "x") not in s and len(s) == 99
    finally:
        s.detach()


def test_len_is_one_c_call_held_or_not_and_waits_for_another_holder() -> None:
    """len(d) and len(s) read the length in one C call (the lock tried once), under
    this thread's hold too; while another process holds the lock it hands over to
    the general path, which waits for it without trying again; detached, it raises."""
    slow: list[int] = []

    class Counting(shmshare.SharedDict):  # type: ignore[type-arg]
        def _length_slow(self) -> int:
            slow.append(1)
            return super()._length_slow()

    d: Any = Counting({i: i for i in range(10)})
    s: Any = shmshare.SharedSet(range(5))
    try:
        assert len(d) == 10 and len(s) == 5 and not slow
        assert d._heap._hot.len() == 10
        with d.lock:
            d[10] = 10
            assert len(d) == 11 and not slow
        with lock_held_elsewhere(d) as release:
            assert d._heap._hot.len() == -1  # busy: the general path decides
            hot, tries = d._heap._hot, []

            class Tried:  # the heap's one-call len, counted (len()'s slot has its own)
                def __getattr__(self, name: str) -> Any:
                    return getattr(hot, name)

                def len(self) -> int:
                    tries.append(1)
                    return int(hot.len())
            d._heap._hot = Tried()
            assert _waits_for_the_holder(release, lambda: len(d)) == [11] and slow == [1]
            assert tries == []  # the slot's one try is not made again before the wait
            d._heap._hot = hot
    finally:
        d.detach()
        s.detach()
    with pytest.raises(ValueError, match="detached"):
        len(d)
    with pytest.raises(ValueError, match="detached"):
        len(s)


def test_update_writes_each_item_in_one_held_c_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """update() holds the lock and writes each item through the one-call store, run
    held, not through the general path's dict_set (unless the heap must grow)."""
    from shmshare._core.heap import Heap

    d: Any = shmshare.SharedDict({i: 0 for i in range(20)})
    calls: list[bytes] = []
    general = Heap.dict_set

    def counting(self: Any, key: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(key)
        return general(self, key, *args, **kwargs)
    try:
        monkeypatch.setattr(Heap, "dict_set", counting)
        d.update({i: i * i for i in range(20)}, extra=1)
        assert calls == []  # (a 64 KiB heap holds these without growing)
        assert d.copy() == {**{i: i * i for i in range(20)}, "extra": 1}
    finally:
        d.detach()


def test_iteration_decodes_keys_in_c_as_decode_key_does() -> None:
    """A scan's batch is parsed in one C call (ext/hotscan.c) that decodes str and
    int keys itself and hands every other key to decode_key: iteration gives back
    exactly the keys inserted, with their types, forwards and reversed."""
    keys = [*INT_KEYS, *[k for k in BYTES_KEYS if k], *TUPLE_KEYS, True, 2.5, "x\udcff", "",
            "é", "a\xffb", None, frozenset({1, 2})]
    d: Any = shmshare.SharedDict()
    s: Any = shmshare.SharedSet()
    ref: dict[Any, int] = {}  # what a dict keeps of the same inserts (True is 1 here)
    try:
        for i, k in enumerate(keys):
            d[k] = ref[k] = i
            s.add(k)
        got = list(d)
        assert got == list(ref) and [type(k) for k in got] == [type(k) for k in ref]
        assert list(reversed(d)) == list(reversed(ref))
        assert list(d.items()) == list(ref.items())
        assert list(d.values()) == list(ref.values())
        assert set(s) == set(ref) and len(s) == len(ref)
    finally:
        d.detach()
        s.detach()


def test_a_short_scan_batch_is_an_error_not_a_read_past_it() -> None:
    """parse_scan checks every record against the bytes it was given."""
    from shmshare._core._hotpath import parse_scan

    record = (1).to_bytes(8, "little") + (3).to_bytes(8, "little") + (2).to_bytes(8, "little")
    good = record + b"abcxy" + b"\0" * 3
    assert parse_scan(good, 1, None) == [(1, b"abc", b"xy")]
    for n, data in ((2, good), (1, good[:26]), (1, record[:20])):
        with pytest.raises(ValueError, match="past the batch"):
            parse_scan(data, n, None)


def test_list_item_store_is_one_c_call_and_hands_over_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """lst[i] = x of a plain value is one C call (shms_list_store); an index out of
    range, the lock held here, or an item that needs the heap to grow hands over to
    HeapList.set, which raises, runs held or grows."""
    from shmshare._core.heap_list import HeapList

    general: list[int] = []
    real_set = HeapList.set

    def counting(self: Any, i: int, data: bytes) -> bool:
        general.append(i)
        return real_set(self, i, data)
    lst: Any = shmshare.SharedList(range(10))
    try:
        monkeypatch.setattr(HeapList, "set", counting)
        lst[3] = "three"
        lst[-1] = (9, "nine")
        assert lst[3] == "three" and lst[9] == (9, "nine") and general == []
        with pytest.raises(IndexError):
            lst[10] = 1
        with pytest.raises(IndexError):
            lst[-11] = 1
        assert general == [10, -11]
        with lst.lock:
            lst[0] = "held"
        lst[1] = "x" * (1 << 17)  # more than the 64 KiB heap holds: grown
        assert lst[0] == "held" and lst[1] == "x" * (1 << 17)
        assert general[2:] == [0, 1] and len(lst) == 10
    finally:
        lst.detach()


def test_pop_and_del_take_the_item_in_one_c_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """d.pop(k) and del d[k] copy the value out and delete the key in one C call
    (HotPath.pop), held or not, dropping a cached entry of it; a value past the
    copy limit is taken by the general path's dict_pop; another process sees the
    key gone."""
    from shmshare._core.heap import Heap

    general: list[bytes] = []
    real_pop = Heap.dict_pop

    def counting(self: Any, key: bytes, *args: Any, **kwargs: Any) -> Any:
        general.append(key)
        return real_pop(self, key, *args, **kwargs)
    d: Any = shmshare.SharedDict({"a": 1, 2: "two", (3, "x"): [3], "big": b"y" * BIG})
    try:
        assert d["a"] == 1 and "a" in d._read_cache
        monkeypatch.setattr(Heap, "dict_pop", counting)
        assert d.pop("a") == 1 and "a" not in d._read_cache and "a" not in d
        del d[2]
        with d.lock:
            assert d.pop((3, "x")) == [3]
        assert d.pop("a", "gone") == "gone" and general == []
        with pytest.raises(KeyError):
            d.pop(2)
        with pytest.raises(KeyError):
            del d[(3, "x")]
        assert d.pop("big") == b"y" * BIG and len(general) == 1  # the general path's

        def child() -> int:
            return 0 if len(d) == 0 and "a" not in d and d.get(2) is None else 1
        assert fork_call(child) == 0
    finally:
        d.detach()


def test_namespace_attributes_are_one_c_call_held_or_not() -> None:
    """ns.x and ns.x = v are AttrItems' slots: one C call each, under this thread's
    hold of the lock too; what they cannot do -- a value only cloudpickle pickles,
    an attribute not set, del -- is the general path's, with the same answers; names
    starting with '_' stay the handle's own; a busy lock is waited for."""
    general: list[str] = []

    class Counting(shmshare.SharedNamespace):
        def _getattr_slow(self, key: str) -> Any:
            general.append(f"get {key}")
            return super()._getattr_slow(key)

        def _setattr_slow(self, key: str, value: Any) -> None:
            general.append(f"set {key}")
            super()._setattr_slow(key, value)

    ns: Any = Counting(x=1)
    try:
        assert ns.x == 1  # the general path maps the version stripes
        general.clear()
        ns.x = 2
        ns.name = "shared"              # a name of the user's, as multiprocessing's
        assert ns.x == 2 and ns.name == "shared" and general == []
        with shmshare.lock_of(ns):
            ns.x += 1
            assert ns.x == 3
        assert general == []
        with pytest.raises(AttributeError, match="'Namespace' object has no attribute 'y'"):
            _ = ns.y
        assert getattr(ns, "y", 5) == 5 and not hasattr(ns, "y") and general == []
        ns.f = lambda n: n + 1          # pickle refuses it: cloudpickle, the general path
        assert ns.f(1) == 2 and general == ["set f"]
        del ns.f
        assert not hasattr(ns, "f")
        ns._local = 7                   # the handle's own, not shared
        assert ns._local == 7 and "_local" not in dir(ns)
        with lock_held_elsewhere(ns) as release:
            def use() -> Any:
                ns.x = 10
                return ns.x
            assert _waits_for_the_holder(release, use) == [10]
    finally:
        shmshare.detach(ns)
    with pytest.raises(ValueError, match="detached"):
        _ = ns.x
