"""Segments across real processes: names, anonymity, collisions, nattch lifecycle, gc."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import JOIN_TIMEOUT, fork_call, mp_run, run_python, wait_pid

import shmshare
from shmshare import _core
from shmshare.naming import keys
from shmshare.naming.lifecycle import sweep
from shmshare.naming.project_dir import resolve_project_dir


def test_create_open_exists_notfound(project_dir: Path) -> None:
    """create=None opens or creates; True insists on creating; False on opening."""
    with pytest.raises(shmshare.SegmentNotFoundError):
        shmshare.Segment("a", 100, project_dir=project_dir, create=False)
    a = shmshare.Segment("a", 100, project_dir=project_dir, create=True)
    with pytest.raises(shmshare.SegmentExistsError):
        shmshare.Segment("a", 100, project_dir=project_dir, create=True)
    b = shmshare.Segment("a", project_dir=project_dir)  # opens
    assert (b.id, b.key, b.size) == (a.id, a.key, 100)
    b.detach()
    a.detach()


def test_size_errors(project_dir: Path) -> None:
    """Creating with size 0, or opening with more than exists, is a clear ValueError."""
    with pytest.raises(ValueError, match="size must be > 0"):
        shmshare.Segment("z", 0, project_dir=project_dir)
    assert not (project_dir / "z.key").exists()  # bad input leaves nothing behind
    with (shmshare.Segment("z", 100, project_dir=project_dir),
          pytest.raises(ValueError, match="exists with 100 bytes")):
        shmshare.Segment("z", 200, project_dir=project_dir)


def test_size_over_shmmax_names_the_limit(project_dir: Path) -> None:
    """A request over shmmax (or the machine's memory) fails clearly and leaves nothing."""
    with pytest.raises((shmshare.ShmValueError, shmshare.ShmLimitError)) as info:
        shmshare.Segment("huge", 1 << 62, project_dir=project_dir)
    assert "shmmax" in str(info.value) or "memory" in str(info.value) or "shmall" in str(
        info.value)
    assert not (project_dir / "huge.key").exists()


def test_unrelated_processes_share_by_name(project_dir: Path) -> None:
    """The seeds' shm_server/shm_client, done right: two subprocesses, one named segment."""
    server = textwrap.dedent("""
        import sys, time
        from shmshare import Segment
        s = Segment("alarm", 64, project_dir=sys.argv[1], create=True)
        print("ready", flush=True)
        line = sys.stdin.readline()            # wait until the client is done
        print(bytes(s.buf[:len(line.strip())]).decode(), flush=True)
        s.detach()
    """)
    client = textwrap.dedent("""
        import sys
        from shmshare import Segment
        with Segment("alarm", project_dir=sys.argv[1], create=False) as s:
            s.buf[:7] = b"ALARM!1"
            print(s.stat().nattch)
    """)
    with subprocess.Popen([sys.executable, "-c", server, str(project_dir)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as srv:
        try:
            assert srv.stdout is not None and srv.stdin is not None
            assert srv.stdout.readline().strip() == "ready"
            out = run_python(client, str(project_dir))
            assert out.stdout.strip() == "2"
            srv.stdin.write("xxxxxxx\n")
            srv.stdin.flush()
            assert srv.stdout.readline().strip() == "ALARM!1"
            assert srv.wait(JOIN_TIMEOUT) == 0
        finally:
            srv.kill()
    assert not (project_dir / "alarm.key").exists()  # last detach removed everything


def test_anonymous_with_forked_child() -> None:
    """IPC_PRIVATE as in the seeds: the child writes, the parent reads after it exits."""
    seg = shmshare.Segment(None, 3333)
    assert seg.key == 0 and seg.stat().dest  # marked for removal from the start

    def child() -> int:
        seg.buf[:5] = b"hello"
        return 0

    assert fork_call(child) == 0
    assert bytes(seg.buf[:5]) == b"hello"
    shmid = seg.id
    seg.detach()
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)  # gone with its last user


def _anon_child(seg: shmshare.Segment) -> None:
    seg.buf[0] = seg.buf[0] + 1


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_anonymous_pickled_to_children(method: str) -> None:
    """An anonymous segment passes by reference to children of every start method."""
    seg = shmshare.Segment(None, 10)
    assert len(pickle.dumps(seg)) < 200
    assert mp_run(method, _anon_child, seg) == 0
    assert seg.buf[0] == 1
    seg.detach()


def test_anonymous_dies_with_sigkilled_owner() -> None:
    """A SIGKILLed creator of an anonymous segment leaves nothing behind."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        s = shmshare.Segment(None, 4096)
        os.write(w, str(s.id).encode())
        os.kill(os.getpid(), signal.SIGKILL)
    shmid = int(os.read(r, 32))
    os.close(r)
    os.close(w)
    wait_pid(pid)
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)


def _attach_and_check(project_dir: str, expect: int) -> None:
    s = shmshare.Segment("life", project_dir=project_dir, create=False)
    assert s.stat().nattch == expect
    s.buf[0] = 99
    s.detach()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_nattch_lifecycle_with_children(method: str, project_dir: Path) -> None:
    """Children attach and detach; the segment survives them and dies with the last user."""
    s = shmshare.Segment("life", 100, project_dir=project_dir)
    expect = 3 if method == "fork" else 2  # a fork child also inherits the parent's mapping
    assert mp_run(method, _attach_and_check, str(project_dir), expect) == 0
    assert s.stat().nattch == 1 and s.buf[0] == 99
    assert (project_dir / "life.key").exists()
    shmid = s.id
    s.detach()
    assert not (project_dir / "life.key").exists()
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)


def _outlive_parent(project_dir: str, go_r: int) -> None:
    s = shmshare.Segment("relay", project_dir=project_dir, create=False)
    os.read(go_r, 1)  # wait until the parent has detached
    assert s.stat().nattch == 2  # ours + the mapping inherited at fork
    s.buf[0] = 7
    # leaving: the multiprocessing exit hook detaches both, and removes it


def test_fork_child_that_outlives_parent_removes(project_dir: Path) -> None:
    """A multiprocessing fork child that is the last user removes the segment at exit."""
    s = shmshare.Segment("relay", 10, project_dir=project_dir)
    shmid = s.id
    r, w = os.pipe()
    import multiprocessing as mp

    p = mp.get_context("fork").Process(target=_outlive_parent, args=(str(project_dir), r))
    p.start()
    del s  # the parent lets go first (GC detaches; a child still uses it, so it stays)
    import gc

    gc.collect()
    assert _core.stat(shmid).nattch >= 1
    os.write(w, b"x")
    p.join(JOIN_TIMEOUT)
    os.close(r)
    os.close(w)
    assert p.exitcode == 0
    assert not (project_dir / "relay.key").exists()
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)


_HELD_IN_DETACH = """
import os, sys
import shmshare
inside, go = int(sys.argv[2]), int(sys.argv[3])
c = shmshare.Segment("both", project_dir=sys.argv[1], create=False)
c._on_release(lambda: (os.write(inside, b"i"), os.read(go, 1)))
c.detach()
"""


def test_two_last_users_detaching_at_once_remove_it(project_dir: Path) -> None:
    """Two processes detach at once, each while the other is still attached: the
    segment is removed, not left with nattch 0.  The other process is held inside
    its detach (a release hook waits) while this one detaches: deciding "someone
    else will remove it" before one's own shmdt made both leave it (a leak, seen
    about once in 50 rounds of four processes detaching together)."""
    s = shmshare.Segment("both", 10, project_dir=project_dir)
    shmid = s.id
    inside_r, inside_w = os.pipe()
    go_r, go_w = os.pipe()
    other = subprocess.Popen([sys.executable, "-c", _HELD_IN_DETACH, str(project_dir),
                              str(inside_w), str(go_r)], pass_fds=(inside_w, go_r))
    try:
        assert os.read(inside_r, 1) == b"i"  # it is inside its detach, still attached
        s.detach()
        assert _core.stat(shmid).nattch == 1  # the other's: it stays for now
        os.write(go_w, b"g")
        assert other.wait(JOIN_TIMEOUT) == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
        for fd in (inside_r, inside_w, go_r, go_w):
            os.close(fd)
    assert not (project_dir / "both.key").exists()
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)


_ATTACHED_UNTIL_TOLD = """
import os, sys
import shmshare
c = shmshare.Segment("busy", project_dir=sys.argv[1], create=False)
os.write(int(sys.argv[2]), b"a")
os.read(int(sys.argv[3]), 1)
c.detach()
"""


def test_a_detach_that_leaves_others_attached_takes_no_key_file_lock(
        project_dir: Path) -> None:
    """Not the last: the detach decides so after its shmdt without the key file's lock
    (whoever brings nattch to 0 sees it after its own shmdt, and removes under the
    lock), so a process holding that lock -- stopped, say -- does not hold it up."""
    import fcntl
    import threading

    s = shmshare.Segment("busy", 10, project_dir=project_dir)
    shmid = s.id
    up_r, up_w = os.pipe()
    go_r, go_w = os.pipe()
    other = subprocess.Popen([sys.executable, "-c", _ATTACHED_UNTIL_TOLD, str(project_dir),
                              str(up_w), str(go_r)], pass_fds=(up_w, go_r))
    lock_fd = os.open(project_dir / "busy.key", os.O_RDONLY)
    try:
        assert os.read(up_r, 1) == b"a"  # attached
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # as a stopped holder would
        t = threading.Thread(target=s.detach)
        t.start()
        t.join(JOIN_TIMEOUT)
        assert not t.is_alive()
        assert _core.stat(shmid).nattch == 1  # the other's
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.write(go_w, b"g")  # the last detach removes it
        assert other.wait(JOIN_TIMEOUT) == 0
    finally:
        os.close(lock_fd)
        if other.poll() is None:
            other.kill()
            other.wait()
        for fd in (up_r, up_w, go_r, go_w):
            os.close(fd)
    assert not (project_dir / "busy.key").exists()
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)


def test_persist_survives_and_remove(project_dir: Path) -> None:
    """persist=True outlives its last detach until remove(); remove frees the name at once."""
    s = shmshare.Segment("keep", 100, project_dir=project_dir, persist=True)
    s.buf[:3] = b"abc"
    s.detach()
    t = shmshare.Segment("keep", project_dir=project_dir, create=False)
    assert bytes(t.buf[:3]) == b"abc" and t.persist
    t.remove()
    assert not (project_dir / "keep.key").exists()
    fresh = shmshare.Segment("keep", 100, project_dir=project_dir, create=True)
    assert fresh.id != t.id
    assert bytes(t.buf[:3]) == b"abc"  # still attached: keeps access after removal
    t.detach()
    fresh.detach()


def test_forced_ftok_collision(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two key files whose ftok keys collide get distinct segments via another proj_id."""
    real_key = keys.KeyFile.key

    def colliding_key(self: keys.KeyFile, proj_id: int) -> int:
        real_key(self, proj_id)  # still validates proj_id
        return (proj_id << 24) | 0x00C011  # as if every key file had the same inode bits

    monkeypatch.setattr(keys.KeyFile, "key", colliding_key)
    a = shmshare.Segment("first", 100, project_dir=project_dir)
    b = shmshare.Segment("second", 100, project_dir=project_dir)
    assert a.key != b.key and a.header.proj_id == 1 and b.header.proj_id == 2
    a.buf[0], b.buf[0] = 1, 2
    a2 = shmshare.Segment("first", project_dir=project_dir, create=False)
    b2 = shmshare.Segment("second", project_dir=project_dir, create=False)
    assert (a2.id, a2.buf[0], b2.id, b2.buf[0]) == (a.id, 1, b.id, 2)
    # A key file that claims another object's proj_id is not fooled: identity is checked.
    resolve_project_dir(project_dir)
    (project_dir / "third.key").write_bytes(keys.KeyRecord(1, "segment", False).dumps())
    with pytest.raises(shmshare.SegmentNotFoundError):
        shmshare.Segment("third", project_dir=project_dir, create=False)
    c = shmshare.Segment("third", 100, project_dir=project_dir)
    assert c.id not in (a.id, b.id) and c.header.proj_id == 3
    for s in (a, b, a2, b2, c):
        s.detach()


def test_wrong_kind_is_type_error(project_dir: Path) -> None:
    """Opening an object as the wrong kind raises TypeError naming both kinds."""
    s = shmshare.Segment._open("dict", "typed", 100, create=None, project_dir=project_dir,
                               persist=False, mode=0o600)
    with pytest.raises(TypeError, match="is a dict, not a segment"):
        shmshare.Segment("typed", project_dir=project_dir)
    s.detach()


def test_buffer_error_on_detach_with_live_view(project_dir: Path) -> None:
    """detach() with a live memoryview or numpy array raises BufferError, never crashes."""
    np = pytest.importorskip("numpy")
    s = shmshare.Segment("views", 4096, project_dir=project_dir)
    arr = np.frombuffer(s.buf, dtype=np.uint8)
    view = s.buf[10:20]
    with pytest.raises(BufferError):
        s.detach()
    del arr
    with pytest.raises(BufferError):
        s.detach()
    view.release()
    s.detach()
    assert not s.attached


def test_gc_of_segment_with_live_view_defers_detach(project_dir: Path) -> None:
    """Dropping a Segment whose view is alive removes the name but keeps the view usable."""
    s = shmshare.Segment("deferred", 100, project_dir=project_dir)
    shmid = s.id
    view = s.buf
    del s
    import gc

    gc.collect()
    assert not (project_dir / "deferred.key").exists()
    view[0] = 5  # still mapped: no crash
    assert view[0] == 5 and _core.stat(shmid).dest
    view.release()
    gc.collect()
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)


@pytest.mark.own_ipc_namespace
def test_sigkilled_attacher_then_gc(project_dir: Path) -> None:
    """A SIGKILLed last user leaves an orphan (nattch 0) that gc finds and removes."""
    code = textwrap.dedent("""
        import os, signal, sys
        from shmshare import Segment
        s = Segment("crashy", 100, project_dir=sys.argv[1])
        print(s.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = run_python(code, str(project_dir), check=False)
    assert proc.returncode == -signal.SIGKILL
    shmid = int(proc.stdout)
    st = _core.stat(shmid)
    assert st.nattch == 0 and not st.dest
    dry = sweep(project_dir, dry_run=True)
    assert [(r.name, r.action) for r in dry] == [("crashy", "would-remove")]
    after = _core.stat(shmid)
    assert (after.nattch, after.lpid) == (0, st.lpid)  # a dry run removed and attached nothing
    done = sweep(project_dir)
    assert [(r.name, r.action) for r in done] == [("crashy", "removed")]
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)
    assert not (project_dir / "crashy.key").exists()


def test_opening_a_project_dir_sweeps_orphans(project_dir: Path) -> None:
    """The first open of a project dir in a process removes its orphans."""
    code = textwrap.dedent("""
        import os, signal, sys
        from shmshare import Segment
        s = Segment("orphan", 100, project_dir=sys.argv[1])
        print(s.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    shmid = int(run_python(code, str(project_dir), check=False).stdout)
    run_python("import sys; from shmshare import Segment; "
               "Segment('other', 10, project_dir=sys.argv[1]).detach()", str(project_dir))
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)


def test_sweep_keeps_live_and_persistent(project_dir: Path) -> None:
    """gc never touches segments in use or created with persist=True."""
    live = shmshare.Segment("live", 10, project_dir=project_dir)
    keep = shmshare.Segment("kept", 10, project_dir=project_dir, persist=True)
    keep.detach()
    assert sweep(project_dir) == []
    live.detach()
    shmshare.Segment("kept", project_dir=project_dir).remove()


def test_stale_key_file_is_recovered(project_dir: Path) -> None:
    """A key file whose segment vanished (ipcrm) is reused on create and swept by gc."""
    s = shmshare.Segment("stale", 10, project_dir=project_dir, persist=True)
    _core.rmid(s.id)
    s.detach()
    assert (project_dir / "stale.key").exists()
    with pytest.raises(shmshare.SegmentNotFoundError, match="stale"):
        shmshare.Segment("stale", project_dir=project_dir, create=False)
    t = shmshare.Segment("stale", 10, project_dir=project_dir)
    t.detach()
    assert not (project_dir / "stale.key").exists()


def test_crashed_creator_before_magic_is_reclaimed(project_dir: Path) -> None:
    """A creator killed after shmget but before writing its header leaves nothing for long."""
    code = textwrap.dedent("""
        import os, signal, sys
        from shmshare import Segment
        def init(att, offset, size):
            print("created", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)   # die before the magic is written
        Segment._open("segment", "halfmade", 100, create=None, project_dir=sys.argv[1],
                      persist=False, mode=0o600, init=init)
    """)
    proc = run_python(code, str(project_dir), check=False)
    assert proc.stdout.strip() == "created"
    s = shmshare.Segment("halfmade", 10, project_dir=project_dir)  # reclaims, then creates
    assert s.header is not None and s.header.proj_id == 1
    s.detach()


def test_raw_key_interop(project_dir: Path) -> None:
    """from_key attaches a segment made by another program, with no header; never auto-removed."""
    key = 0x0012ABCD
    shmid = _core.shmget(key, 3333, _core.IPC_CREAT | _core.IPC_EXCL | 0o600)
    try:
        s = shmshare.Segment.from_key(key)
        assert s.size == 3333 and s.id == shmid and s.header is None
        s.buf[0] = 9
        clone = pickle.loads(pickle.dumps(s))
        assert clone.buf[0] == 9
        clone.detach()
        s.detach()
        assert _core.stat(shmid).nattch == 0  # still there: not ours to remove
        with shmshare.Segment.from_key(key, create=False) as t:
            t.remove()
    finally:
        try:
            _core.rmid(shmid)
        except shmshare.SegmentRemovedError:
            pass


def test_named_pickles_by_reference(project_dir: Path) -> None:
    """A named segment pickles to a small reference and reopens by name."""
    s = shmshare.Segment("ref", 1 << 20, project_dir=project_dir)
    data = pickle.dumps(s)
    assert len(data) < 300
    t = pickle.loads(data)
    assert t.id == s.id and t.size == 1 << 20
    t.detach()
    s.detach()
    with pytest.raises(ValueError, match="detached"):
        pickle.dumps(s)


def test_group_mode(project_dir: Path) -> None:
    """mode= sets the segment's permission bits; chmod changes them later."""
    with shmshare.Segment("grp", 10, project_dir=project_dir, mode=0o660) as s:
        assert s.stat().mode == 0o660
        s.chmod(0o600)
        assert s.stat().mode == 0o600


def test_repr_and_context_manager(project_dir: Path) -> None:
    """repr names the object; leaving the with block detaches."""
    with shmshare.Segment("r", 10, project_dir=project_dir) as s:
        assert "'r'" in repr(s) and "10 bytes" in repr(s)
    assert "detached" in repr(s)
    assert fork_call(lambda: 0) == 0


def test_recreated_key_file_with_reused_inode_is_not_removed(project_dir: Path) -> None:
    """A key file deleted by hand and created again for a new object (tmpfs reuses the
    inode at once): the old object's last detach leaves the new one's key file alone."""
    project_dir.mkdir(mode=0o700)
    old = shmshare.SharedDict("n", project_dir=project_dir)
    (project_dir / "n.key").unlink()           # e.g. a tmp cleaner
    new = shmshare.SharedDict("n", project_dir=project_dir)
    new["y"] = 2
    old.detach()                               # its key file is gone: nothing to remove
    assert (project_dir / "n.key").exists()
    again = shmshare.SharedDict("n", project_dir=project_dir, create=False)
    assert dict(again) == {"y": 2}
    again.detach()
    new.detach()
    assert not (project_dir / "n.key").exists()
