"""SharedDict under pressure: operations from several processes checked against a dict,
writers SIGKILLed at random points, and growth past 1 GiB and 1,000,000 keys."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import random
import signal
import struct
import time
import warnings
from typing import Any

import pytest
from conftest import record_torture
from helpers import JOIN_TIMEOUT, wait_pid
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import shmshare
from shmshare import SharedDict

# -- operations from several processes against a model dict ------------------------------


def _worker(d: SharedDict, conn: Any) -> None:
    while True:
        op, *args = conn.recv()
        if op == "stop":
            conn.send(None)
            return
        try:
            if op == "set":
                d[args[0]] = args[1]
                result: Any = None
            elif op == "get":
                result = d.get(args[0], "<missing>")
            elif op == "pop":
                result = d.pop(args[0], "<missing>")
            elif op == "del":
                del d[args[0]]
                result = None
            elif op == "popitem":
                result = d.popitem()
            elif op == "setdefault":
                result = d.setdefault(args[0], args[1])
            elif op == "clear":
                d.clear()
                result = None
            elif op == "items":
                result = list(d.items())
            else:
                raise AssertionError(op)
            conn.send(("ok", result))
        except KeyError as exc:
            conn.send(("KeyError", repr(exc)))


keys = st.one_of(st.integers(-5, 30), st.text(max_size=4), st.sampled_from([1.0, True, 2.5]))
values = st.one_of(st.integers(), st.text(max_size=50), st.binary(max_size=3000),
                   st.lists(st.integers(), max_size=5))


class CrossProcessDict(RuleBasedStateMachine):
    """Each step runs in one of three forked processes; a plain dict is the model."""

    def __init__(self) -> None:
        super().__init__()
        self.d = SharedDict()
        self.model: dict[Any, Any] = {}
        ctx = mp.get_context("fork")
        self.conns, self.procs = [], []
        for _ in range(3):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(self.d, child), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    def call(self, worker: int, *msg: Any) -> tuple[str, Any]:
        conn = self.conns[worker]
        conn.send(msg)
        assert conn.poll(JOIN_TIMEOUT), "worker did not answer"
        return conn.recv()  # type: ignore[no-any-return]

    @rule(w=st.integers(0, 2), k=keys, v=values)
    def set(self, w: int, k: Any, v: Any) -> None:
        assert self.call(w, "set", k, v) == ("ok", None)
        self.model[k] = v

    @rule(w=st.integers(0, 2), k=keys)
    def get(self, w: int, k: Any) -> None:
        assert self.call(w, "get", k) == ("ok", self.model.get(k, "<missing>"))

    @rule(w=st.integers(0, 2), k=keys)
    def pop(self, w: int, k: Any) -> None:
        assert self.call(w, "pop", k) == ("ok", self.model.pop(k, "<missing>"))

    @rule(w=st.integers(0, 2), k=keys)
    def delete(self, w: int, k: Any) -> None:
        status, _ = self.call(w, "del", k)
        assert status == ("ok" if k in self.model else "KeyError")
        self.model.pop(k, None)

    @precondition(lambda self: self.model)
    @rule(w=st.integers(0, 2))
    def popitem(self, w: int) -> None:
        assert self.call(w, "popitem") == ("ok", self.model.popitem())

    @rule(w=st.integers(0, 2), k=keys, v=values)
    def setdefault(self, w: int, k: Any, v: Any) -> None:
        assert self.call(w, "setdefault", k, v) == ("ok", self.model.setdefault(k, v))

    @rule(w=st.integers(0, 2))
    def clear(self, w: int) -> None:
        self.call(w, "clear")
        self.model.clear()

    @invariant()
    def same_items_in_order(self) -> None:
        _, items = self.call(random.randrange(3), "items")
        assert items == list(self.model.items())
        assert len(self.d) == len(self.model)

    def teardown(self) -> None:
        for conn, p in zip(self.conns, self.procs, strict=True):
            conn.send(("stop",))
            p.join(JOIN_TIMEOUT)
        self.d.check()
        self.d.detach()


CrossProcessDict.TestCase.settings = settings(max_examples=25, stateful_step_count=40,
                                              deadline=None)
test_cross_process_dict = CrossProcessDict.TestCase


# -- SIGKILL a writer at random points --------------------------------------------------------

_REC = struct.Struct("<cIQ")  # kind (I=intent, A=ack), key, value


def _writer(d: SharedDict, fd: int, seed: int) -> None:  # pragma: no cover - child
    rng = random.Random(seed)
    while True:
        k = rng.randrange(64)
        action = rng.random()
        v = rng.randrange(1 << 40) if action < 0.8 else 0  # 0 = delete
        size = rng.choice([8, 100, 3000, 70000])  # small blobs and large runs
        os.write(fd, _REC.pack(b"I", k, v))
        if v:
            d[k] = (v, b"x" * size)
        else:
            d.pop(k, None)
        os.write(fd, _REC.pack(b"A", k, v))


def _read_records(fd: int) -> list[tuple[bytes, int, int]]:
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    whole = len(data) - len(data) % _REC.size
    return [_REC.unpack_from(data, i) for i in range(0, whole, _REC.size)]


@pytest.mark.slow
def test_sigkill_writer_loop(shared_dict: SharedDict, shared_lock: Any) -> None:
    """200 writers killed mid-operation: every acknowledged write survives, the heap checks out."""
    d = SharedDict()
    model: dict[int, int] = {}
    rng = random.Random(1234)
    kills = ops = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)
        round_ = -1
        # At least 200 kills, more until three landed inside the lock.
        while round_ < 199 or (d.stats()["recoveries"] < 3 and round_ < 2999):
            round_ += 1
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                os.close(r)
                try:
                    _writer(d, w, round_)
                finally:
                    os._exit(1)
            os.close(w)
            target = rng.randrange(1, 60)
            got = b""
            while len(got) < target * _REC.size:  # let it run for `target` records
                chunk = os.read(r, _REC.size * target - len(got))
                if not chunk:
                    break
                got += chunk
            # A timer, not the last record's wakeup, picks the moment (see
            # test_heap_procs.test_sigkill_at_random_moments).
            time.sleep(rng.uniform(0, 0.003))
            os.kill(pid, signal.SIGKILL)
            wait_pid(pid)
            kills += 1
            records = [_REC.unpack_from(got, i) for i in range(0, len(got), _REC.size)]
            records += _read_records(r)
            os.close(r)
            pending = None
            for kind, k, v in records:
                if kind == b"I":
                    pending = (k, v)
                else:
                    ops += 1
                    pending = None
                    if v:
                        model[k] = v
                    else:
                        model.pop(k, None)
            # The operation in flight may or may not have happened; nothing else may differ.
            actual = {k: val[0] for k, val in d.items()}
            if pending is not None and actual != model:
                k, v = pending
                alt = dict(model)
                if v:
                    alt[k] = v
                else:
                    alt.pop(k, None)
                assert actual == alt, f"round {round_}: lost or torn write"
                model = alt
            assert actual == model, f"round {round_}: lost or torn write"
            # Reads through this process's cache must see the writer's changes too
            # (the cache is filled here, then the next writer changes and dies).
            assert {k: d[k][0] for k in actual} == actual
            assert all(k not in d for k in range(64) if k not in actual)
            d.check()
    stats = d.stats()
    d.clear()
    d.check()
    assert stats["recoveries"] >= 3, f"{kills} kills, too few inside the lock"
    record_torture(shared_dict, shared_lock, kills, ops, lost=0)
    d.detach()


# -- growth --------------------------------------------------------------------------------


@pytest.mark.slow
def test_growth_past_one_gib_of_values() -> None:
    """A default dict grows online past 1 GiB of values while another process reads."""
    d = SharedDict()
    chunk = 16 << 20
    count = (1 << 30) // chunk + 4
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: follows the growth, reading as it goes
        seen = 0
        while seen < count:
            n = len(d)
            if n > seen:
                v = d[n - 1]
                assert len(v) == chunk and v[:1] == bytes([(n - 1) % 251])
                seen = n
        os.write(w, b"k")
        os._exit(0)
    for i in range(count):
        d[i] = bytes([i % 251]) * chunk
    assert os.read(r, 1) == b"k"
    assert wait_pid(pid) == 0
    os.close(r)
    os.close(w)
    stats = d.stats()
    assert stats["extents"] > 1
    assert sum(len(v) for v in d.values()) == count * chunk
    d.check()
    d.detach()


@pytest.mark.slow
def test_one_million_keys() -> None:
    """1,000,000 keys: every one readable, length exact, order kept."""
    d = SharedDict()
    n = 1_000_000
    for i in range(n):
        d[i] = i
    assert len(d) == n
    sample = random.Random(5).sample(range(n), 1000)
    assert all(d[i] == i for i in sample)
    assert next(iter(d)) == 0 and next(reversed(d)) == n - 1
    d.check()
    d.detach()


def test_pickled_handle_is_small_after_growth() -> None:
    """Pickling stays a few hundred bytes however large the dict has grown."""
    d = SharedDict()
    d.update((i, b"y" * 1000) for i in range(5000))
    assert len(pickle.dumps(d)) < 500
    d.detach()
