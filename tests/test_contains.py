"""``k in d`` and ``x in s`` ask the store whether the key is there; they never fetch its
value (a 10 MiB value would be copied, or sent over the network, only to be dropped),
on shared memory and on a real redis-server."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from helpers import fork_child, lock_held_elsewhere, wait_pid
from redis_server import redis_server  # noqa: F401  (a fixture, started only when needed)

import shmshare
from shmshare._core.heap_dict import DictMethods
from shmshare.objects import heap_object


@pytest.fixture
def no_value_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way of fetching a value raises from here on."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a membership test fetched the value")

    for name in ("dict_get", "dict_read", "dict_read_versioned", "_read_big"):
        monkeypatch.setattr(DictMethods, name, refuse)
    monkeypatch.setattr(heap_object.HeapObject, "_read", refuse)
    try:
        from shmshare.stores.redis.entries import RedisEntries
    except ImportError:
        return
    for name in ("dict_get", "dict_read_versioned"):
        monkeypatch.setattr(RedisEntries, name, refuse)


def _done(*objs: Any) -> None:
    for obj in objs:
        obj.unlink()
        obj.detach()


@pytest.mark.usefixtures("no_value_reads")
def test_membership_reads_no_value(kw: dict[str, Any]) -> None:
    big = os.urandom(3 << 20)
    d: Any = shmshare.SharedDict(**kw)
    s: Any = shmshare.SharedSet(**kw)
    try:
        for key in ("big", 7, (1, "a"), b"raw", "empty"):
            d[key] = b"" if key == "empty" else big
            s.add(key)
        for key in ("big", 7, 7.0, (1, "a"), b"raw", "empty"):
            assert key in d and key in s, key
        for key in ("nope", 8, (1, "b"), b"", ""):
            assert key not in d and key not in s, key
        del d["big"]
        s.discard("big")
        assert "big" not in d and "big" not in s
    finally:
        _done(d, s)


def test_a_cached_key_deleted_by_another_process_is_not_in(kw: dict[str, Any]) -> None:
    d: Any = shmshare.SharedDict({"k": 1}, **kw)
    try:
        assert d["k"] == 1 and "k" in d  # cached here (shared memory)
        assert wait_pid(fork_child(d.__delitem__, "k")) == 0
        assert "k" not in d
        assert wait_pid(fork_child(d.__setitem__, "k", 2)) == 0
        assert "k" in d
    finally:
        _done(d)


def test_membership_under_this_threads_lock(kw: dict[str, Any]) -> None:
    d: Any = shmshare.SharedDict({"k": os.urandom(2 << 20)}, **kw)
    try:
        with d.lock:
            assert "k" in d and "j" not in d
    finally:
        _done(d)


def test_membership_waits_for_another_process_holding_the_lock() -> None:
    d: Any = shmshare.SharedDict({"k": os.urandom(2 << 20)})
    try:
        with lock_held_elsewhere(d) as release:
            answers: list[bool] = []
            t = threading.Thread(target=lambda: answers.append("k" in d))
            t.start()
            t.join(0.3)
            assert t.is_alive() and not answers
            release()
            t.join(30)
            assert answers == [True]
    finally:
        d.detach()


def test_membership_of_a_detached_dict_raises() -> None:
    d: Any = shmshare.SharedDict({"k": 1})
    d.detach()
    with pytest.raises(ValueError, match="detached"):
        "k" in d  # noqa: B015
