"""SharedQueue with large items: the one-call put and get (ext/hotqueue.c) copy an
item once and never wait or grow the heap; everything else must take the general
path, and a consumer killed anywhere in a get loses at most the item it took."""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import sys
import warnings

import pytest
from helpers import JOIN_TIMEOUT, fork_child, wait_child
from test_sync_syscalls import _strace_usable

import shmshare
from shmshare import SharedQueue

MB = 1 << 20


class Tagged(bytes):
    """A bytes subclass: its pickle is not one bytes object, so it must come back as itself."""


def test_items_larger_than_an_extent_round_trip() -> None:
    """Items bigger than the whole heap so far are queued through growth, in order, intact."""
    q = SharedQueue()
    try:
        extents = q.stats()["extents"]
        items = [os.urandom(3 * MB + 5), bytearray(b"b" * (2 * MB)), {"k": "v" * MB}, b""]
        for item in items:
            q.put(item)
        assert q.stats()["extents"] > extents
        for item in items:
            got = q.get(timeout=5)
            assert type(got) is type(item) and got == item
        assert q.empty()
        q.check()
    finally:
        q.detach()


def test_bytes_items_keep_their_type() -> None:
    """bytes come back as bytes (unpickled in C); a bytes subclass as its own class."""
    q = SharedQueue()
    try:
        items = [b"", b"abc", b"x" * 10_240, Tagged(b"t" * 10_240), Tagged(b""), b"y" * MB]
        for item in items:
            q.put(item)
        for item in items:
            got = q.get_nowait()
            assert type(got) is type(item) and got == item
    finally:
        q.detach()


def test_bounded_queue_of_big_items() -> None:
    """maxsize counts items, whatever their size: full at maxsize, free again after a get."""
    q = SharedQueue(2)
    try:
        a, b, c = (bytes([i]) * (MB + i) for i in range(3))
        q.put(a)
        q.put(b, timeout=5)
        assert q.full()
        with pytest.raises(queue.Full):
            q.put_nowait(c)
        with pytest.raises(queue.Full):
            q.put(c, timeout=0.01)
        assert q.get() == a
        q.put_nowait(c)
        assert [q.get(), q.get()] == [b, c]
        with pytest.raises(queue.Empty):
            q.get_nowait()
        q.check()
    finally:
        q.detach()


def test_big_items_under_this_threads_lock() -> None:
    """Under ``with q.lock:`` the one-call tries fail (the lock is taken) and the
    general path, which knows this thread holds it, does the work."""
    q = SharedQueue()
    try:
        item = b"z" * (2 * MB)
        with q.lock:
            q.put(item)
            q.put([item])
            assert q.get() == item
            assert q.get() == [item]
        assert q.empty()
    finally:
        q.detach()


def test_queue_path_kept_past_detach_answers_codes() -> None:
    """The C put and take kept past detach() answer -1; the queue raises as detached."""
    q = SharedQueue()
    q.put(b"a")
    fast = q._r._fast
    q.detach()
    assert fast.put(b"x") == -1
    assert fast.take() == -1
    with pytest.raises(ValueError, match="detached"):
        q.put(b"x")
    with pytest.raises(ValueError, match="detached"):
        q.get_nowait()


@pytest.mark.parametrize("after", [0, 1, 7])
def test_consumer_killed_mid_get_of_big_items_loses_at_most_the_one_it_took(after: int) -> None:
    """A consumer SIGKILLed while getting 256 KB items: every item is still queued,
    in order, except those it reported got and at most one it took unreported."""
    q = SharedQueue()
    n, size = 40, 256 * 1024
    for i in range(n):
        q.put(i.to_bytes(4, "big") * (size // 4))
    r, w = os.pipe()

    def consume() -> int:
        while True:
            item = q.get()
            os.write(w, item[:4])  # reported: got and kept

    pid = fork_child(consume)
    seen = b""
    while len(seen) < 4 * after:
        seen += os.read(r, 4 * after - len(seen))
    os.kill(pid, signal.SIGKILL)
    assert wait_child(pid) == -signal.SIGKILL
    os.close(w)
    while chunk := os.read(r, 4096):
        seen += chunk
    os.close(r)
    reported = [int.from_bytes(seen[i:i + 4], "big") for i in range(0, len(seen), 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)  # killed holding the lock
        left = []
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            assert item == item[:4] * (size // 4)
            left.append(int.from_bytes(item[:4], "big"))
    assert reported == list(range(len(reported)))
    assert left == list(range(n - len(left), n))  # in order, no duplicate
    assert len(reported) <= n - len(left) <= len(reported) + 1
    q.check()
    q.detach()


_WALK = """
import os, shmshare
q = shmshare.SharedQueue()
q.put(b""); q.get()
os.getppid()
for _ in range(200):
    q.put(b"x" * 10_240)
for _ in range(200):
    q.get()
os.getppid()
for i in range(2000):
    q.put(i); q.get()
os.getppid()
q.detach()
"""


def test_walking_fresh_memory_maps_ahead_in_few_calls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """200 items of 10 KB put, then got: the 2 MB walked is mapped ahead in 256 KB
    steps after the lock is let go (src/ahead.c), a few madvise calls, not one per
    item; 2000 small puts and gets, which reuse the same few blocks, make almost none."""
    why = _strace_usable()
    if why:
        pytest.skip(why)
    out = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-e", "trace=madvise,getppid", "-o", str(out),
                    sys.executable, "-c", _WALK], check=True, timeout=JOIN_TIMEOUT)
    lines = out.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if "getppid(" in line]
    assert len(marks) == 3, lines[-20:]
    walk, reuse = ([line for line in lines[a + 1:b] if "madvise(" in line]
                   for a, b in itertools.pairwise(marks))
    assert 2 <= len(walk) <= 40, walk
    assert len(reuse) <= 8, reuse


def _get_one(q: SharedQueue, want: bytes) -> None:
    assert q.get(timeout=JOIN_TIMEOUT) == want


@pytest.mark.parametrize("n", [64 * 1024 - 1, 64 * 1024, 2 * MB])
def test_a_large_bytes_item_is_queued_without_being_pickled_first(
        n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """q.put(b) of one bytes object of 64 KiB or more writes its pickle straight from b
    (STORE OF BYTES in src/dict_hot.c); what another process gets is b."""
    from shmshare.objects import queue as queue_module

    pickled: list[object] = []
    real = queue_module.dumps
    monkeypatch.setattr(queue_module, "dumps", lambda v: (pickled.append(v), real(v))[1])
    q = SharedQueue()
    try:
        q.put(bytes(3 * n))  # grown now: the puts below need no growth
        assert q.get(timeout=5) == bytes(3 * n)
        pickled.clear()
        payload = os.urandom(n)
        q.put(payload)
        assert pickled == ([] if n >= 64 * 1024 else [payload])
        assert wait_child(fork_child(_get_one, q, payload)) == 0
        q.put(Tagged(payload))  # a subclass: pickle's to make, and back as itself
        got = q.get(timeout=5)
        assert type(got) is Tagged and got == payload
    finally:
        q.detach()


def test_a_large_bytes_item_on_a_full_queue_waits_and_lands() -> None:
    q = SharedQueue(1)
    try:
        big = os.urandom(MB)
        q.put(big[::-1])
        with pytest.raises(queue.Full):
            q.put(big, timeout=0.1)
        with pytest.raises(queue.Full):
            q.put_nowait(big)
        assert q.get(timeout=5) == big[::-1]
        q.put(big)
        assert q.get(timeout=5) == big and q.empty()
    finally:
        q.detach()
