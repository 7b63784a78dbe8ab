"""Unpickling an object whose segment this process has attached already (a Pool worker
forked while its parent held the array) reuses that attachment: no new shmat, no page
faults again.  Never a stale one: a removed and recreated object is attached anew."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from pathlib import Path

import pytest
from helpers import JOIN_TIMEOUT, fork_call

import shmshare
from shmshare import ObjectGoneError, SharedArray, SharedDict


def _attachment(obj: object) -> object:
    return obj._seg._attachment()  # type: ignore[attr-defined]


def test_unpickling_an_array_held_here_shares_its_attachment() -> None:
    """A forked child receiving the array its parent held when forking reuses the
    inherited mapping; detaching what it received leaves the inherited one working,
    even while a view of it is alive."""
    a = SharedArray(1 << 16, "float64")
    a[:] = 2.0
    views = [a.numpy()]
    data = pickle.dumps(a)

    def child() -> int:
        b = pickle.loads(data)
        assert _attachment(b) is _attachment(a)
        assert float(b[10:20].sum()) == 20.0
        b[0] = 5.0
        b.detach()                       # no BufferError for a's view: nothing unmapped
        assert not b._seg.attached and a._seg.attached
        assert views[0][0] == 5.0 and float(a[1:3].sum()) == 4.0
        c = pickle.loads(data)           # again: shared again
        assert _attachment(c) is _attachment(a)
        del c
        return 0
    try:
        assert fork_call(child) == 0
        assert views[0][0] == 5.0
    finally:
        views.clear()
        a.detach()


def test_last_local_user_of_a_shared_attachment_detaches_it() -> None:
    """The mapping goes with the last object of this process that uses it, whichever
    of them goes last; the segment is then gone (anonymous: nobody else holds it)."""
    def child() -> int:
        a = SharedArray(1000, "int64")
        a[:] = 7
        shmid = a._seg.id
        b = pickle.loads(pickle.dumps(a))
        assert _attachment(b) is _attachment(a)
        a.detach()                        # b still uses the mapping
        assert int(b[999]) == 7 and shmshare._core.stat(shmid).nattch == 1
        b.detach()
        try:
            shmshare._core.stat(shmid)
        except OSError:
            return 0
        return 1                          # still there: leaked
    assert fork_call(child) == 0


def test_a_dead_anonymous_array_is_never_found_in_the_cache() -> None:
    """The pickle of an array detached by its last user gives ObjectGoneError, even when
    a new array (maybe at the same kernel index) is attached here."""
    a = SharedArray(1000, "int64")
    data = pickle.dumps(a)
    a.detach()
    fresh = [SharedArray(1000, "int64") for _ in range(4)]
    try:
        with pytest.raises(ObjectGoneError):
            pickle.loads(data)
    finally:
        for f in fresh:
            f.detach()


def _recreate(project_dir: Path, conn: object) -> None:
    old = SharedDict("n", create=False, project_dir=project_dir)
    old.unlink()
    old.detach()
    new = SharedDict("n", create=True, project_dir=project_dir)
    new["v"] = "new"
    conn.send(pickle.dumps(new))  # type: ignore[attr-defined]
    conn.recv()  # type: ignore[attr-defined]  # the parent has attached it
    new.detach()


def test_a_removed_and_recreated_name_is_never_served_stale(project_dir: Path) -> None:
    """This process holds "n"; another removes it and creates "n" again; a pickle of
    the new "n" received here attaches the new one, not the one held."""
    held = SharedDict("n", create=True, project_dir=project_dir)
    held["v"] = "old"
    parent, child = mp.Pipe()
    p = mp.get_context("spawn").Process(target=_recreate, args=(project_dir, child))
    p.start()
    try:
        assert parent.poll(JOIN_TIMEOUT)
        got = pickle.loads(parent.recv())
        parent.send(b"ok")
        assert got["v"] == "new" and held["v"] == "old"
        assert got._seg.id != held._seg.id
        got.detach()
    finally:
        p.join(JOIN_TIMEOUT)
        held.detach()
    assert p.exitcode == 0


def test_pool_tasks_reuse_the_inherited_array() -> None:
    """Pool(2) workers forked while the parent holds the array: every task's array
    shares the worker's inherited attachment (one mapping per worker)."""
    a = SharedArray(8 * 4096, "float64")
    a[:] = 1.0
    try:
        with mp.get_context("fork").Pool(2) as pool:
            got = pool.map(_same_mapping, [(a, a._seg._attachment().address)] * 8)
        assert got == [(True, 4096.0)] * 8
    finally:
        a.detach()


def _same_mapping(task: tuple[SharedArray, int]) -> tuple[bool, float]:
    arr, address = task
    return (_attachment(arr).address == address, float(arr[:4096].sum()))  # type: ignore[attr-defined]


def test_no_segment_is_left_by_shared_attachments() -> None:
    """Forked children that reuse and drop attachments leave nothing behind."""
    def child() -> int:
        a = SharedArray(100, "int8")
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                b = pickle.loads(pickle.dumps(a))
                b[0] = 1
                del b
                os._exit(0)
            os.waitpid(pid, 0)
        assert int(a[0]) == 1
        a.detach()
        return 0
    assert fork_call(child) == 0


def test_a_named_array_held_here_is_shared_too(project_dir: Path) -> None:
    """By name as by id: a forked child receiving the named array it inherited shares
    the mapping, found again under the key-file lock; the name's last user still
    removes it."""
    a = SharedArray(4096, "int32", name="arr", project_dir=project_dir)
    a[:] = 3
    data = pickle.dumps(a)

    def child() -> int:
        b = pickle.loads(data)
        assert _attachment(b) is _attachment(a)
        assert int(b[4095]) == 3
        b.detach()
        assert int(a[0]) == 3
        return 0
    try:
        assert fork_call(child) == 0
    finally:
        a.detach()
    assert not (project_dir / "arr.key").exists()  # the last user removed it


def test_unpickling_many_times_counts_no_user_for_good() -> None:
    """Each unpickle of an object held here counts (weakly) one more user of the shared
    mapping; a dropped one, or a detached one, counts no more: the count never grows
    with the number of unpickles, and the mapping goes with its last real user."""
    def child() -> int:
        with SharedDict() as d:
            data = pickle.dumps(d)
            att = _attachment(d)
            for i in range(300):
                e = pickle.loads(data)
                e[i] = i
                if i % 2:
                    e.detach()
                del e  # dropped without a detach: released when collected
            assert len(att.users) == att.user_count() == 1  # d's own: nothing kept
            assert len(d) == 300
        assert not att.attached and att.user_count() == 0
        from shmshare.naming.mapped import MAPPED
        assert att.shmid not in MAPPED  # its last release forgot it
        return 0
    assert fork_call(child) == 0


def test_a_segment_is_released_once_whichever_way_comes_first(project_dir: Path) -> None:
    """detach(), then collection, then exit: the release runs once (a second run would
    count its binding's use twice and detach a mapping another object still uses)."""
    from shmshare.naming import releases

    a = SharedDict(name="once", project_dir=project_dir)
    b = SharedDict(name="once", create=False, project_dir=project_dir)
    pending = len(releases._PENDING)
    a.detach()
    a.detach()
    assert len(releases._PENDING) == pending - 1
    del a
    b["still"] = "here"  # b's own mapping, untouched by a's release
    assert b["still"] == "here" and (project_dir / "once.key").exists()
    b.unlink()
    del b                # collected: released, the name's last user removes nothing more
    assert len(releases._PENDING) == pending - 2
    assert not (project_dir / "once.key").exists()
