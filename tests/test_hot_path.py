"""The one-call paths of SharedDict (ext/hotpath.c): d[k] = v and the re-read of a
changed d[k] keep the GIL and try the heap lock once; every other outcome must
take the general path, which waits, grows, repairs or raises."""

from __future__ import annotations

import os
import threading

import pytest
from helpers import fork_child, wait_pid

import shmshare

BIG = (1 << 20) + 1  # above what the hot path copies (heap_dict.BIG_VALUE)


def test_hot_calls_kept_after_detach_return_codes_not_crashes() -> None:
    """A HotPath method kept past close() answers -1; the dict raises as detached."""
    d = shmshare.SharedDict({"a": 1})
    heap = d._heap
    reread, store, peek = heap.reread, heap.store, heap._peek
    assert d["a"] == 1
    d.detach()
    assert reread({}, "a") == -1
    assert peek(b"a") == -1
    assert store(b"a", 1, b"x", 1) == -1
    with pytest.raises(ValueError, match="detached"):
        d["a"]
    with pytest.raises(ValueError, match="detached"):
        d["a"] = 2


def test_reread_keeps_the_value_and_its_version() -> None:
    d = shmshare.SharedDict({"a": [1, 2]})
    try:
        assert d["a"] == [1, 2]  # maps the version stripes
        cache: dict[str, tuple[bytes, int, int]] = {}
        data = d._heap.reread(cache, "a")
        assert type(data) is bytes and shmshare.objects.codec.loads(data) == [1, 2]
        got, stripe, version = cache["a"]
        assert got is data and d._heap.versions_view[stripe] == version
        assert d._heap.reread(cache, "missing") is None
        with pytest.raises(TypeError):
            d._heap.reread([], "a")  # type: ignore[arg-type]
    finally:
        d.detach()


def test_odd_keys_and_large_values_take_the_general_path() -> None:
    """Lone surrogates (no UTF-8) and values past the copy limit go the general way."""
    d = shmshare.SharedDict()
    try:
        odd = "x\udcff"
        d[odd] = 1
        assert d._heap.reread({}, odd) == -1
        assert d[odd] == 1
        big = [b"b" * BIG]  # large, and not one bytes object (those: the test below)
        d["big"] = big
        assert isinstance(d._heap.reread({}, "big"), int)
        for _ in range(2):
            assert d["big"] == big
        assert "big" not in d._read_cache
        d["big"] = 5  # a small value again: kept
        assert d["big"] == 5 and "big" in d._read_cache
    finally:
        d.detach()


def test_reads_and_writes_under_this_threads_lock() -> None:
    """Holding the lock here makes the hot calls fail; the general path runs held."""
    d = shmshare.SharedDict({"a": 1})
    try:
        with d.lock:
            assert d._heap.reread({}, "a") != 0 and not isinstance(
                d._heap.reread({}, "a"), bytes)
            d["a"] = 2
            assert d["a"] == 2
            d["b"] = 3
        assert d["a"] == 2 and d["b"] == 3
    finally:
        d.detach()


def _hold_lock(d: shmshare.SharedDict, r: int, w: int) -> None:
    with d.lock:
        os.write(w, b"held")
        os.read(r, 1)  # until the parent says so


def test_reads_and_writes_wait_for_another_process_holding_the_lock() -> None:
    """While another process holds the lock, d[k] and d[k] = v wait for it, not fail."""
    d = shmshare.SharedDict({"a": 1})
    go_r, go_w = os.pipe()
    held_r, held_w = os.pipe()
    try:
        d["a"] = 1
        pid = fork_child(_hold_lock, d, go_r, held_w)
        assert os.read(held_r, 4) == b"held"
        assert not isinstance(d._heap.reread({}, "a"), bytes)  # busy: a code
        results: list[object] = []

        def use() -> None:
            d["a"] = 7
            results.append(d["a"])

        t = threading.Thread(target=use)
        t.start()
        t.join(0.3)
        assert t.is_alive() and not results  # waiting for the holder
        os.write(go_w, b"x")
        t.join(30)
        assert results == [7]
        assert wait_pid(pid) == 0
    finally:
        for fd in (go_r, go_w, held_r, held_w):
            os.close(fd)
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
