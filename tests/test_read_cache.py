"""The per-key read cache of SharedDict: never stale, and not emptied by other keys' writes."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import pytest
from helpers import JOIN_TIMEOUT, START_METHODS, fork_call, fork_child, wait_pid

import shmshare

STEPS = 6


def _writer_steps(d: Any, conn: Any, keys: tuple[Any, Any, Any]) -> None:
    """Each step changes the dict in another way, then tells the parent and waits."""
    a, b, c = keys
    steps = [
        lambda: d.__setitem__(a, 1),                  # overwrite
        lambda: d.__delitem__(b),                     # delete
        lambda: d.update({b: 2, c: 3}),               # re-insert + insert, under the lock
        lambda: d.pop(a),                             # pop
        lambda: d.clear(),                            # clear
        lambda: d.setdefault(a, 9),                   # insert after clear
    ]
    for step in steps:
        assert conn.recv() == "go"
        step()
        conn.send("done")
    conn.close()


EXPECTED = [
    {"a": 1, "b": 0},
    {"a": 1},
    {"a": 1, "b": 2, "c": 3},
    {"b": 2, "c": 3},
    {},
    {"a": 9},
]

# Every kind of key that d[k], k in d and d.get(k) encode in C (ext/hotkeys.c),
# and one that the general path encodes.
KEYS = {"str": ("a", "b", "c"), "int": (1, -200, 1 << 40), "bytes": (b"a", b"", b"\xff" * 9),
        "tuple": (("a", 1), ("b",), ())}


@pytest.mark.parametrize("keys", list(KEYS.values()), ids=list(KEYS))
@pytest.mark.parametrize("method", START_METHODS)
def test_cached_value_is_never_stale_after_another_process_writes(method: str,
                                                                  keys: tuple[Any, ...]) -> None:
    """After another process's write returned, every read here sees it, though cached."""
    assert len(EXPECTED) == STEPS
    key = dict(zip("abc", keys, strict=True))
    ctx = mp.get_context(method)
    d = shmshare.SharedDict({key["a"]: 0, key["b"]: 0})
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_writer_steps, args=(d, child, keys))
    p.start()
    try:
        for want in EXPECTED:
            for k in keys:          # fill the cache with what is there now
                d.get(k)
            parent.send("go")
            assert parent.poll(JOIN_TIMEOUT), "writer did not answer"
            assert parent.recv() == "done"
            for name, k in key.items():
                assert d.get(k) == want.get(name), (k, want)
                assert (k in d) == (name in want)
                if name in want:
                    assert d[k] == want[name]
                else:
                    with pytest.raises(KeyError):
                        d[k]
    finally:
        p.join(JOIN_TIMEOUT)
        if p.is_alive():
            p.kill()
            p.join()
        d.detach()
    assert p.exitcode == 0


def _count_up(d: Any, n: int) -> None:
    for i in range(1, n + 1):
        d["n"] = i


def test_reads_beside_a_writer_never_go_back() -> None:
    """While another process counts up, cached reads here never decrease; the last is final."""
    d = shmshare.SharedDict({"n": 0})
    try:
        pid = fork_child(_count_up, d, 3000)
        seen = 0
        try:
            while seen < 3000:
                v = d["n"]
                assert v >= seen
                seen = v
        finally:
            assert wait_pid(pid) == 0
        assert d["n"] == 3000
    finally:
        d.detach()


def _stripe(d: shmshare.SharedDict, key: str) -> int:
    d[key]
    return d._read_cache[key][1]


def _cache_valid(d: shmshare.SharedDict, key: str) -> bool:
    hit = d._read_cache.get(key)
    return hit is not None and d._heap.versions_view[hit[1]] == hit[2]


def test_a_write_to_another_key_keeps_this_keys_cached_value() -> None:
    """Another process writing key b leaves a's cache entry valid; writing a ends it."""
    d = shmshare.SharedDict({f"k{i}": i for i in range(20)})
    try:
        stripe_a = _stripe(d, "k0")
        other = next(k for k in (f"k{i}" for i in range(1, 20)) if _stripe(d, k) != stripe_a)
        assert _cache_valid(d, "k0")
        assert fork_call(d.__setitem__, other, "new") == 0
        assert _cache_valid(d, "k0")
        assert not _cache_valid(d, other)
        assert d[other] == "new"
        assert fork_call(d.__setitem__, "k0", "changed") == 0
        assert not _cache_valid(d, "k0")
        assert d["k0"] == "changed"
        assert _cache_valid(d, "k0")
    finally:
        d.detach()


def test_own_write_and_clear_end_the_cached_value() -> None:
    """This process's own set, delete and clear are seen by its next read."""
    d = shmshare.SharedDict({"a": 1})
    try:
        assert d["a"] == 1
        d["a"] = 2
        assert d["a"] == 2
        del d["a"]
        assert "a" not in d
        d["a"] = 3
        assert d["a"] == 3
        d.clear()
        assert d.get("a") is None
    finally:
        d.detach()


def test_cached_value_is_not_used_after_detach() -> None:
    """A detached dict raises on read even for a key it has cached."""
    d = shmshare.SharedDict({"a": 1})
    assert d["a"] == 1
    d.detach()
    with pytest.raises(ValueError, match="detached"):
        d["a"]


def test_recovery_check_accepts_the_version_stripes() -> None:
    """check() and a rebuild keep the stripes block (reachable from the table)."""
    d = shmshare.SharedDict({"a": 1})
    try:
        assert d["a"] == 1
        d._heap.rebuild()
        d.check()
        assert not _cache_valid(d, "a")  # a rebuild ends every cached value
        assert d["a"] == 1
        d["b"] = 2
        d.check()
    finally:
        d.detach()


BIG = 3 << 20  # above the size from which values are unpickled from a lent buffer


def _read_other(d: Any, key: str) -> int:
    return len(d[key])  # a large read on the same thread, in the middle of an unpickling


class _ReadsWhileUnpickled:
    def __init__(self, d: Any, key: str) -> None:
        self.d, self.key = d, key

    def __reduce__(self) -> tuple[Any, ...]:
        return (_read_other, (self.d, self.key))


def test_large_value_read_inside_an_unpickling_does_not_overwrite_it() -> None:
    """A large value unpickled from the heap's buffer survives a large read made meanwhile."""
    d = shmshare.SharedDict()
    try:
        a, b = b"a" * BIG, b"b" * (BIG + 5)
        d["b"] = b
        d["a"] = (_ReadsWhileUnpickled(d, "b"), a)  # the hook runs before a is read
        for _ in range(3):
            n, got = d["a"]
            assert n == len(b)
            assert got == a
            assert d.get("b") == b
    finally:
        d.detach()
