"""The heap across processes: concurrency, dead owners, SIGKILL at random
moments, growth followed by other processes."""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import time
from typing import Any

import pytest
from conftest import HeapFactory, record_torture
from helpers import fork_child, wait_child

from shmshare._core.heap import SCAN_START, Heap

ACK = struct.Struct("=I")


def items(h: Heap) -> list[tuple[bytes, bytes | None]]:
    out: list[tuple[bytes, bytes | None]] = []
    seq = SCAN_START
    while batch := h.dict_scan(seq):
        out += [(key, val) for _, key, val in batch]
        seq = batch[-1][0]
    return out


def test_fresh_heap_mutex_is_robust(heap: Heap) -> None:
    def child() -> int:
        heap.lock()
        os._exit(0)                               # dies holding the lock
    assert wait_child(fork_child(child)) == 0
    assert heap.lock(timeout=10) is True
    heap.unlock()
    assert heap.recoveries == 1
    assert heap.stats()["recoveries"] == 1
    assert heap.check() is None


def test_dead_owner_mid_transaction_is_repaired(heap: Heap) -> None:
    for i in range(100):
        key = b"k%d" % i
        heap.dict_set(key, len(key), b"v" * i)

    def child() -> int:
        heap.lock()
        # mutate under the lock, then die without unlocking
        heap.dict_set(b"new", 3, b"x" * 5000, held=True)
        heap.dict_pop(b"k1", 2, held=True)
        os._exit(0)
    assert wait_child(fork_child(child)) == 0
    assert heap.lock(timeout=10) is True
    try:
        assert heap.check(held=True) is None
    finally:
        heap.unlock()
    assert heap.dict_get(b"new", 3) == b"x" * 5000
    assert heap.check() is None


@pytest.mark.parametrize("anonymous", [True, False])
def test_processes_hammer_set_get(make_heap: HeapFactory, anonymous: bool) -> None:
    heap = make_heap(1 << 16, anonymous=anonymous)
    nproc, nops = 4, 1500

    def worker(w: int) -> int:
        rng = random.Random(w)
        mine: dict[bytes, bytes] = {}
        for i in range(nops):
            key = b"w%d-%d" % (w, rng.randrange(200))
            val = os.urandom(rng.randrange(0, 3000))
            heap.dict_set(key, len(key), val)
            mine[key] = val
            probe = rng.choice(list(mine))
            if heap.dict_get(probe, len(probe)) != mine[probe]:
                return 3
            if i % 3 == 0:                        # exact shared counter
                heap.lock(timeout=30)
                try:
                    c = int(heap.dict_get(b"counter", 7, held=True) or b"0")
                    heap.dict_set(b"counter", 7, b"%d" % (c + 1), held=True)
                finally:
                    heap.unlock()
        for key, val in mine.items():
            if heap.dict_get(key, len(key)) != val:
                return 4
        return 0

    pids = [fork_child(lambda w=w: worker(w)) for w in range(nproc)]
    assert [wait_child(p, 120) for p in pids] == [0] * nproc
    assert heap.dict_get(b"counter", 7) == b"%d" % (nproc * len(range(0, nops, 3)))
    assert heap.check() is None


def test_growth_followed_by_other_process(make_heap: HeapFactory) -> None:
    h = make_heap(1 << 16)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()

    def val(key: bytes, n: int) -> bytes:
        return (key * (n // max(1, len(key)) + 1))[:n]

    def child() -> int:
        os.close(r1)
        os.close(w2)
        rng = random.Random(1)
        i = 0
        while h.dict_get(b"done", 4) is None:
            key = b"c%d" % i
            h.dict_set(key, len(key), val(key, rng.randrange(1, 200_000)))
            for j in range(0, 1000):
                pk = b"p%d" % j
                got = h.dict_get(pk, len(pk))
                if got is None:
                    break
                if got != val(pk, len(got)) or len(got) < 1000:
                    return 5
            i += 1
        os.write(w1, b"x")          # then wait until the parent attached all
        os.read(r2, 1)
        return 0 if h.stats()["extents"] > 3 else 6

    pid = fork_child(child)
    os.close(w1)
    os.close(r2)
    for j in range(300):
        pk = b"p%d" % j
        h.dict_set(pk, len(pk), val(pk, 1000 + j * 3000))
    h.dict_set(b"done", 4, b"1")
    assert select.select([r1], [], [], 60)[0]
    os.read(r1, 1)
    assert h.check() is None        # attaches the child's extents too
    os.write(w2, b"x")
    assert wait_child(pid) == 0
    assert h.check() is None
    os.close(r1)
    os.close(w2)


# ------------------------------------------------------ SIGKILL loop

def gen_op(seed: int, i: int, keys: list[bytes]) -> tuple[str, bytes, bytes]:
    rng = random.Random(seed * 1_000_003 + i)
    key = rng.choice(keys)
    r = rng.random()
    if r < 0.55:
        n = rng.choice((0, 10, 100, 1000, 5000, 40_000))
        return ("set", key, bytes([i & 255]) * n + struct.pack("=Q", i))
    if r < 0.75:
        return ("pop", key, b"")
    if r < 0.85:
        return ("setdefault", key, b"sd%d" % i)
    if r < 0.99:
        return ("popitem", b"", b"")
    return ("clear", b"", b"")


def apply_heap(h: Heap, op: tuple[str, bytes, bytes]) -> None:
    kind, key, val = op
    if kind == "set":
        h.dict_set(key, len(key), val)
    elif kind == "pop":
        h.dict_pop(key, len(key))
    elif kind == "setdefault":
        h.dict_set(key, len(key), val, only_if_absent=True)
    elif kind == "popitem":
        h.dict_popitem()
    else:
        h.dict_clear()


def apply_model(m: dict[bytes, bytes], op: tuple[str, bytes, bytes]) -> dict[bytes, bytes]:
    m = dict(m)
    kind, key, val = op
    if kind == "set":
        m[key] = val
    elif kind == "pop":
        m.pop(key, None)
    elif kind == "setdefault":
        m.setdefault(key, val)
    elif kind == "popitem":
        if m:
            m.popitem()
    else:
        m.clear()
    return m


@pytest.mark.slow
def test_sigkill_at_random_moments(make_heap: HeapFactory, shared_dict: Any,
                                   shared_lock: Any) -> None:
    """Writers SIGKILLed at random moments: acknowledged ops survive, heap checks out.

    At least 220 kills, and more until three of them landed inside the
    lock (how often one does depends on the scheduler, not on us).
    """
    h = make_heap(1 << 16, anonymous=False)   # keyed extents survive their creator
    seed = 12345
    keys = [b"k%d" % i for i in range(60)]
    model: dict[bytes, bytes] = {}
    nxt = 0                                   # first op not known to be applied
    rng = random.Random(7)
    recovered = 0
    kills = 0
    while kills < 220 or (recovered < 3 and kills < 3000):
        kills += 1
        r, w = os.pipe()

        def child(start: int = nxt, r: int = r, w: int = w) -> int:
            os.close(r)
            i = start
            while True:
                apply_heap(h, gen_op(seed, i, keys))
                os.write(w, ACK.pack(i))      # acknowledged after it returned
                i += 1

        pid = fork_child(child)
        os.close(w)
        want = rng.randrange(0, 40)
        buf = b""
        while len(buf) < want * ACK.size:
            assert select.select([r], [], [], 30)[0], "child stalled"
            chunk = os.read(r, 4096)
            assert chunk, "child died"
            buf += chunk
        # Not right after the wakeup: on a busy core the last ack's write
        # preempts the child there, outside any lock, every time.  A timer
        # lands anywhere in the child's loop.
        time.sleep(rng.uniform(0, 0.003))
        os.kill(pid, signal.SIGKILL)
        assert wait_child(pid, 30) == -signal.SIGKILL
        while chunk := os.read(r, 65536):
            buf += chunk
        os.close(r)
        acked = [ACK.unpack_from(buf, o)[0] for o in range(0, len(buf), ACK.size)]
        assert acked == list(range(nxt, nxt + len(acked)))
        for i in acked:
            model = apply_model(model, gen_op(seed, i, keys))
        nxt += len(acked)
        # The op in flight may or may not have committed: exactly one holds.
        if h.lock(timeout=30):
            recovered += 1
        try:
            assert h.check(held=True) is None
            got = items_held(h)
        finally:
            h.unlock()
        with_op = apply_model(model, gen_op(seed, nxt, keys))
        if got == list(with_op.items()):
            model = with_op
            nxt += 1
        else:
            assert got == list(model.items())
        before = h.stats()
        h.rebuild()
        after = h.stats()
        for f in ("bytes_used", "bytes_free", "bytes_total", "used_blocks", "entries"):
            assert before[f] == after[f], f
    assert recovered >= 3, f"{kills} kills, none inside the lock"
    assert h.stats()["recoveries"] == recovered
    assert h.check() is None
    record_torture(shared_dict, shared_lock, kills=kills, ops=nxt, lost=0)


def items_held(h: Heap) -> list[tuple[bytes, bytes | None]]:
    out: list[tuple[bytes, bytes | None]] = []
    seq = SCAN_START
    while batch := h.dict_scan(seq, held=True):
        out += [(key, val) for _, key, val in batch]
        seq = batch[-1][0]
    return out


def test_anonymous_extent_outlives_its_creator(make_heap: HeapFactory) -> None:
    """An extent grown by a child that exits before we attach it is still there for us."""
    h = make_heap(1 << 16, anonymous=True)

    def child() -> int:
        h.dict_set(b"b", 1, bytes(3_000_000))    # grows, then exits at once
        return 0
    assert wait_child(fork_child(child)) == 0
    assert h.dict_get(b"b", 1) == bytes(3_000_000)
    assert h.check() is None
