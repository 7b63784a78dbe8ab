"""Shared fixtures: heaps on anonymous segments, and a leak check.

Every test runs under ``no_segment_leaks``: segments created by this
process or by children it forked (registered through ``fork_child``) must
all be gone when the test ends (extents included).
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
from collections.abc import Callable, Iterator

import pytest

from shmshare import _core
from shmshare._core.heap import Heap

_children: set[int] = set()


def fork_child(fn: Callable[[], int | None]) -> int:
    """Run fn() in a forked child that always ends with os._exit."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn() or 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    _children.add(pid)
    return pid


def wait_child(pid: int, timeout: float = 60.0) -> int:
    """Bounded wait for a child; returns its exit status (or -signal)."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not finish within {timeout} s")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _ours() -> set[int]:
    me = {os.getpid()} | _children
    out = set()
    for sid in _core.list_ids():
        try:
            st = _core.stat(sid)
        except OSError:
            continue
        if st.cpid in me:
            out.add(sid)
    return out


@pytest.fixture(autouse=True)
def no_segment_leaks() -> Iterator[None]:
    before = _ours()
    yield
    gc.collect()
    leaked = _ours() - before
    for sid in leaked:          # clean up so one failure does not cascade
        with contextlib.suppress(OSError):
            _core.rmid(sid)
    assert not leaked, f"segments leaked: {sorted(leaked)}"


class HeapFactory:
    def __init__(self) -> None:
        self.made: list[tuple[Heap, _core.Attachment]] = []

    def __call__(self, size: int = 1 << 20, *, anonymous: bool = True,
                 mode: int = 0o600) -> Heap:
        total = size + 4096
        sid = _core.shmget(_core.IPC_PRIVATE, total, _core.IPC_CREAT | 0o600)
        att = _core.shmat(sid, total)
        _core.rmid(sid)
        heap = Heap.create(att, 4096, size, mode=mode, anonymous=anonymous)
        self.made.append((heap, att))
        return heap

    def close_all(self) -> None:
        for heap, att in self.made:
            if heap._h is not None:
                heap.destroy_extents()
                heap.close()
            att.detach()
        self.made.clear()


@pytest.fixture
def make_heap() -> Iterator[HeapFactory]:
    f = HeapFactory()
    try:
        yield f
    finally:
        f.close_all()


@pytest.fixture
def heap(make_heap: HeapFactory) -> Heap:
    return make_heap()
