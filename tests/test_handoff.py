"""Shared objects handed to another process arrive alive, or fail at once: never a hang."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import JOIN_TIMEOUT, START_METHODS, fork_call

import shmshare
from shmshare import ObjectGoneError, SharedDict, SharedList

pytestmark = pytest.mark.timeout(120)  # a regression hangs Pool's result thread: fail instead


def make_dict(i: int) -> SharedDict:
    """A Pool task returning an anonymous shared object it drops at once."""
    d = SharedDict()
    d["i"] = i
    return d


def put_and_leave(q: Any) -> None:
    """A Process that puts an anonymous list on a queue and exits."""
    q.put(SharedList([1, 2, 3]))


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_results_arrive_alive(method: str) -> None:
    """pool.map of workers returning SharedDicts: every one arrives, even from exiting workers."""
    with mp.get_context(method).Pool(2, maxtasksperchild=1) as pool:
        got = pool.map_async(make_dict, range(4)).get(timeout=JOIN_TIMEOUT)
        assert [d["i"] for d in got] == [0, 1, 2, 3]
        for d in got:
            d.detach()


@pytest.mark.parametrize("method", START_METHODS)
def test_process_pool_executor_results_arrive_alive(method: str) -> None:
    """ProcessPoolExecutor.map returning SharedDicts: results, not BrokenProcessPool."""
    with ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        got = list(ex.map(make_dict, range(4), timeout=JOIN_TIMEOUT))
    assert [d["i"] for d in got] == [0, 1, 2, 3]
    for d in got:
        d.detach()


@pytest.mark.parametrize("method", START_METHODS)
def test_queue_from_exiting_process_arrives_alive(method: str) -> None:
    """A child that puts an anonymous object on a queue and exits: the parent gets it alive."""
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=put_and_leave, args=(q,))
    p.start()
    try:
        lst = q.get(timeout=JOIN_TIMEOUT)
        assert list(lst) == [1, 2, 3]
        lst.detach()
    finally:
        p.join(JOIN_TIMEOUT)
        if p.is_alive():
            p.kill()
            p.join()
    assert p.exitcode == 0


def test_gone_before_received_fails_at_once() -> None:
    """Sender gone before the receiver attached: ObjectGoneError (no OSError) saying what to do."""
    r, w = os.pipe()

    def child() -> None:
        os.write(w, pickle.dumps(SharedDict({"a": 1})))  # then os._exit: no pins kept

    assert fork_call(child) == 0
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    with pytest.raises(ObjectGoneError, match="Manager") as info:
        pickle.loads(data)
    assert isinstance(info.value, shmshare.ShmshareError)
    assert isinstance(info.value, ReferenceError) and not isinstance(info.value, OSError)
    assert pickle.loads(pickle.dumps(info.value)).args == info.value.args


def test_named_object_unlinked_before_received_fails_at_once(project_dir: Path) -> None:
    """A named object removed before the receiver opened it: ObjectGoneError too."""
    d = SharedDict("handed", project_dir=project_dir)
    data = pickle.dumps(d)
    d.unlink()
    d.detach()
    with pytest.raises(ObjectGoneError, match="'handed'"):
        pickle.loads(data)


def test_pin_dropped_once_claimed() -> None:
    """The sender's pin goes after a receiver attached: the object is freed with its last user."""
    from shmshare import _core

    d = SharedDict()
    shmid = d.segment.id
    data = pickle.dumps(d)
    pickle.loads(data).detach()  # the receiver claims (and detaches again)
    del d
    with SharedList() as other:
        pickle.dumps(other)  # pinning again drops the claimed pin...
        with pytest.raises(OSError):
            _core.stat(shmid)  # ...and with it the last attachment
        pickle.loads(pickle.dumps(other)).detach()


def test_claims_from_processes_at_once_are_all_counted() -> None:
    """Receivers that claim at the same moment are each counted (a lost increment
    would keep the sender's pin until it exits)."""
    from helpers import fork_child, wait_child

    from shmshare.naming.handoff import add_claim, read_claims

    seg = shmshare.Segment(size=4096)
    att = seg._attachment()

    def claimer() -> int:
        for _ in range(20_000):
            add_claim(att)
        return 0

    view = att.memoryview()
    try:
        start = read_claims(view)
        pids = [fork_child(claimer) for _ in range(4)]
        assert [wait_child(p) for p in pids] == [0] * 4
        assert read_claims(view) - start == 80_000
    finally:
        view.release()
    seg.detach()


def _pickled_during_exit(conn: Any) -> None:
    """Make an anonymous list whose only pickle is made while the exit's finalizers run
    (as a Queue's feeder thread does for an item put just before a slow exit)."""
    import multiprocessing.util as mpu

    lst = SharedList([1, 2, 3])
    mpu.Finalize(None, lambda: conn.send_bytes(pickle.dumps(lst)), exitpriority=-6)


@pytest.mark.parametrize("method", START_METHODS)
def test_object_pickled_during_the_childs_exit_arrives_alive(method: str) -> None:
    """The child's exit waits for the receiver even when the object is first pickled
    during that exit: the wait is set up when the child makes the object, not at the
    pickle (the finalizers of an exit are collected before they run)."""
    ctx = mp.get_context(method)
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_pickled_during_exit, args=(send,))
    p.start()
    send.close()
    try:
        data = recv.recv_bytes() if recv.poll(JOIN_TIMEOUT) else b""
        assert data, "the child sent nothing"
        # A child that does not wait exits here; one that waits is still there.
        p.join(1.0)
        lst = pickle.loads(data)
        assert list(lst) == [1, 2, 3]
        lst.detach()
    finally:
        p.join(JOIN_TIMEOUT)
        if p.is_alive():
            p.kill()
            p.join()
        recv.close()
    assert p.exitcode == 0
