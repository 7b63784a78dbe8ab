"""d[k] = b for a large bytes object b (ext/dictitems.c, src/dict_hot.c): the pickle is
written straight into the heap -- pickle's own framing around one copy of b's bytes --
with no pickled copy made first; what lands is byte for byte what pickle.dumps(b, 5)
makes, so every reader, of any version, reads it as before."""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any

import pytest
from helpers import fork_child, lock_held_elsewhere, wait_pid

import shmshare
from shmshare._core._hotpath import DIRECT_BYTES_MIN
from shmshare.objects import codec


def _counting(d: Any) -> list[Any]:
    """Rebind d's one-call store to a dumps that notes what it pickles."""
    pickled: list[Any] = []

    def dumps(value: Any, protocol: int) -> bytes:
        pickled.append(value)
        return pickle.dumps(value, protocol)

    d._bind_items(d._heap._hot, dumps, codec._PICKLE_REFUSED, d._read_cache)
    return pickled


@pytest.mark.parametrize("n", [DIRECT_BYTES_MIN - 1, DIRECT_BYTES_MIN,
                               DIRECT_BYTES_MIN + 1, 3 << 20])
def test_a_large_bytes_value_lands_as_pickle_makes_it(n: int) -> None:
    d: Any = shmshare.SharedDict()
    try:
        payload = os.urandom(n)
        d["room"] = bytes(3 * n)  # grown now: the stores below need no growth
        del d["room"]
        pickled = _counting(d)
        d["k"] = payload
        assert d._heap.dict_get(b"k", 1) == pickle.dumps(payload, 5)
        assert pickled == ([] if n >= DIRECT_BYTES_MIN else [payload])
        assert d["k"] == payload
        d["k"] = payload[::-1]  # an overwrite, the same way
        assert d._heap.dict_get(b"k", 1) == pickle.dumps(payload[::-1], 5)
        assert pickled == ([] if n >= DIRECT_BYTES_MIN else [payload, payload[::-1]])
    finally:
        d.detach()


def _check(d: Any, key: str, want: bytes) -> None:
    assert d[key] == want


def test_another_process_reads_what_the_direct_store_wrote() -> None:
    d: Any = shmshare.SharedDict()
    try:
        payload = os.urandom(DIRECT_BYTES_MIN * 3)
        d["k"] = payload
        assert wait_pid(fork_child(_check, d, "k", payload)) == 0
    finally:
        d.detach()


def test_subclasses_and_other_buffers_keep_their_type() -> None:
    """Only exact bytes go direct: a subclass, a bytearray, a memoryview's pickle is
    pickle's to make, and reads back as that type."""

    class B(bytes):
        pass

    d: Any = shmshare.SharedDict()
    try:
        raw = os.urandom(DIRECT_BYTES_MIN * 2)
        for value in (B(raw), bytearray(raw)):
            d["k"] = value
            got = d["k"]
            assert type(got) is type(value) and got == value
    finally:
        d.detach()


def test_a_value_that_needs_growth_lands_through_the_general_path() -> None:
    """The one-call store never grows the heap: a value larger than the free space
    is stored by the general path, which grows it."""
    d: Any = shmshare.SharedDict()
    try:
        before = d._heap.stats()["extents"]
        payload = os.urandom(8 << 20)
        pickled = _counting(d)
        d["k"] = payload
        assert d._heap.stats()["extents"] > before
        assert d["k"] == payload and len(pickled) == 1  # pickled for the general path
    finally:
        d.detach()


def test_a_direct_store_waits_for_another_process_holding_the_lock() -> None:
    d: Any = shmshare.SharedDict({"k": b""})
    payload = os.urandom(DIRECT_BYTES_MIN * 2)
    try:
        d["k"] = payload[::-1]  # room for the next value: no growth
        with lock_held_elsewhere(d) as release:
            done: list[bool] = []
            t = threading.Thread(target=lambda: (d.__setitem__("k", payload),
                                                 done.append(True)))
            t.start()
            t.join(0.3)
            assert t.is_alive() and not done  # waiting for the holder, not failed or lost
            release()
            t.join(30)
            assert done == [True] and d["k"] == payload
    finally:
        d.detach()


def test_a_direct_store_under_this_threads_lock() -> None:
    d: Any = shmshare.SharedDict()
    try:
        payload = os.urandom(DIRECT_BYTES_MIN * 2)
        with d.lock:
            d["k"] = payload
            assert d["k"] == payload
        assert d["k"] == payload
    finally:
        d.detach()
