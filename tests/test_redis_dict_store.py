"""The Redis dict store: dict key equality, insertion order, paged scans, compare-and-set."""

from __future__ import annotations

import pytest
from helpers import fork_call
from redis_server import RedisServer, name, redis_server, store  # noqa: F401  (fixtures)

pytest.importorskip("redis", reason="redis-py is not installed (pip install shmshare[redis])")

from shmshare.stores.redis import RedisStore
from shmshare.stores.redis.dict_store import DictStore


def test_matches_a_dict(store: RedisStore, name: str) -> None:  # noqa: F811
    """Set, overwrite, pop and reinsert behave as dict does, keys included (1 == 1.0 == True)."""
    d, model = DictStore(name, store=store), {}
    ops = [(1, "a"), ("s", [1]), ((1.0, "t"), None), (1.0, "b"), (b"x", 2), (True, "c")]
    for k, v in ops:
        d.set(k, v)
        model[k] = v
    assert d.pop("s") == (True, [1]) and model.pop("s") == [1]
    assert d.pop("s") == (False, None)
    d.set("s", 9)
    model["s"] = 9
    assert list(d.scan(page=2)) == list(model.items()) and len(d) == len(model)
    assert d.get(1.0) == (True, "c") and d.get("nope") == (False, None)
    d.destroy()


def test_compare_and_set(store: RedisStore, name: str) -> None:  # noqa: F811
    """A write with a stale version is refused; another process's write moves the version."""
    d = DictStore(name, store=store)
    d.set("n", 0)
    value, version = d.read("n")
    assert fork_call(lambda: 0 if d.set("n", 100) else 1) == 0
    assert d.compare_and_set("n", value + 1, version) is None
    value, version = d.read("n")
    assert d.compare_and_set("n", value + 1, version) == version + 1
    assert d.get("n") == (True, 101)
    d.destroy()
