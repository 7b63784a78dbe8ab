"""shmshare._core.fork_hooks: the one registry of what each layer does around a fork."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest
from helpers import JOIN_TIMEOUT, fork_call, mp_run

from shmshare._core import fork_hooks, proc
from shmshare.naming import handoff
from shmshare.objects import lock, sync


def _record(into: list[str], name: str):  # type: ignore[no-untyped-def]
    return lambda: into.append(name)


def _report(fd: int, events: list[str]) -> int:
    os.write(fd, " ".join(events).encode())
    return 0


def test_before_hooks_run_in_reverse_and_after_hooks_in_registration_order() -> None:
    """Before a fork the last registered runs first; after it, the first registered does."""
    events: list[str] = []
    removers = [fork_hooks.at_fork(before=_record(events, f"before-{n}"),
                                   after_in_child=_record(events, f"child-{n}"),
                                   after_in_parent=_record(events, f"parent-{n}"))
                for n in "abc"]
    r, w = os.pipe()
    try:
        assert fork_call(lambda: _report(w, events)) == 0
        os.close(w)
        child = os.read(r, 4096).decode().split()
    finally:
        os.close(r)
        for remove in removers:
            remove()
    assert child == ["before-c", "before-b", "before-a", "child-a", "child-b", "child-c"]
    assert events == ["before-c", "before-b", "before-a", "parent-a", "parent-b", "parent-c"]


def test_a_removed_hook_no_longer_runs() -> None:
    """The function at_fork returns unregisters exactly the hooks it registered."""
    events: list[str] = []
    fork_hooks.at_fork(after_in_parent=_record(events, "removed"))()
    remove = fork_hooks.at_fork(after_in_parent=_record(events, "kept"))
    try:
        assert fork_call(lambda: 0) == 0
    finally:
        remove()
    assert events == ["kept"]


def test_a_failing_hook_does_not_stop_the_others() -> None:
    """Every hook runs even when an earlier one raises; the first error is raised after."""
    events: list[str] = []

    def boom() -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        fork_hooks._run([boom, _record(events, "after"), boom])
    assert events == ["after"]


def test_the_library_resets_a_child_bottom_up() -> None:
    """The process table (core) is forgotten in a child before the objects' owner records."""
    hooks = fork_hooks._after_in_child
    order = [hooks.index(fn) for fn in (proc._forget_in_child, handoff._after_fork_in_child,
                                        lock._forget_owners_in_child,
                                        sync._forget_owners_in_child)]
    assert order == sorted(order)


def _mp_child_ran(q: mp.Queue) -> None:  # type: ignore[type-arg]
    q.put(handoff._exit_hook_pid == os.getpid())


def test_multiprocessing_child_hooks_run_in_forked_children() -> None:
    """multiprocessing's after-fork hooks run the registered child hooks (handoff's exit wait)."""
    q = mp.get_context("fork").Queue()
    assert mp_run("fork", _mp_child_ran, q) == 0
    assert q.get(timeout=JOIN_TIMEOUT) is True
