"""The cffi wrappers: every shmget flag, every shmid_ds field, IPC_SET, SHM_LOCK, limits."""

from __future__ import annotations

import errno
import os
import time

import pytest
from helpers import fork_call

import shmshare
from shmshare import _core


@pytest.fixture
def private_segment():  # type: ignore[no-untyped-def]
    """An IPC_PRIVATE segment of odd size (3333 bytes), removed at the end."""
    shmid = _core.shmget(_core.IPC_PRIVATE, 3333, _core.IPC_CREAT | 0o600)
    yield shmid
    try:
        _core.rmid(shmid)
    except shmshare.SegmentRemovedError:
        pass


def test_stat_has_every_field(private_segment: int) -> None:
    """IPC_STAT returns size, key, mode, ids, pids, nattch, times and dest state."""
    st = _core.stat(private_segment)
    assert st.size == 3333 and st.key == 0 and st.mode == 0o600
    assert st.uid == os.geteuid() and st.cuid == os.geteuid()
    assert st.gid == os.getegid() and st.cgid == os.getegid()
    assert st.cpid == os.getpid() and st.lpid == 0 and st.nattch == 0
    assert st.atime == 0 and st.dtime == 0 and abs(st.ctime - time.time()) < 60
    assert not st.dest and not st.locked
    att = _core.shmat(private_segment, 3333)
    st2 = _core.stat(private_segment)
    assert st2.nattch == 1 and st2.lpid == os.getpid() and st2.atime > 0
    _core.rmid(private_segment)
    assert _core.stat(private_segment).dest  # marked, still attached
    att.detach()
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(private_segment)


def test_readonly_attach(private_segment: int) -> None:
    """SHM_RDONLY gives a read-only view that sees the writer's data."""
    rw = _core.shmat(private_segment, 3333)
    ro = _core.shmat(private_segment, 3333, readonly=True)
    v = rw.memoryview()
    v[0:3] = b"abc"
    r = ro.memoryview()
    assert r.readonly and bytes(r[0:3]) == b"abc"
    with pytest.raises(TypeError):
        r[0:1] = b"x"
    v.release()
    r.release()
    rw.detach()
    ro.detach()


def test_ipc_set_mode_uid_gid(private_segment: int) -> None:
    """IPC_SET changes the mode bits and, for root, the owner."""
    _core.set_attrs(private_segment, mode=0o640)
    assert _core.stat(private_segment).mode == 0o640
    if os.geteuid() == 0:
        _core.set_attrs(private_segment, uid=12345, gid=54321)
        st = _core.stat(private_segment)
        assert (st.uid, st.gid, st.cuid) == (12345, 54321, 0)


def test_shm_lock_unlock(private_segment: int) -> None:
    """SHM_LOCK pins the segment (root or enough RLIMIT_MEMLOCK) and SHM_UNLOCK unpins it."""
    try:
        _core.memlock(private_segment, True)
    except shmshare.ShmPermissionError:
        pytest.skip("no CAP_IPC_LOCK here")
    assert _core.stat(private_segment).locked
    _core.memlock(private_segment, False)
    assert not _core.stat(private_segment).locked


def test_flags_hugetlb_and_noreserve() -> None:
    """SHM_NORESERVE works; SHM_HUGETLB either works or fails with a clear error."""
    shmid = _core.shmget(_core.IPC_PRIVATE, 4096, _core.IPC_CREAT | _core.SHM_NORESERVE | 0o600)
    _core.rmid(shmid)
    try:
        shmid = _core.shmget(_core.IPC_PRIVATE, 2 << 20,
                             _core.IPC_CREAT | _core.SHM_HUGETLB | 0o600)
    except (shmshare.ShmLimitError, shmshare.ShmPermissionError, shmshare.ShmValueError) as exc:
        assert exc.errno in (errno.ENOMEM, errno.EPERM, errno.EINVAL, errno.ENOSPC)
    else:
        _core.rmid(shmid)


def test_limits() -> None:
    """IPC_INFO/SHM_INFO give positive limits and a page size."""
    lim = _core.limits()
    assert lim.shmmax > 0 and lim.shmmni > 0 and lim.shmall > 0 and lim.page_size >= 4096
    assert lim.used_ids >= 0


def test_ftok_is_stable_and_uses_proj_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ftok depends on the file's inode and proj_id, not on its content or name."""
    f = tmp_path / "k"
    f.write_text("x")
    k1 = _core.ftok(str(f), 1)
    assert _core.ftok(str(f), 1) == k1
    assert _core.ftok(str(f), 2) != k1
    assert (k1 >> 24) & 0xFF == 1 and (k1 & 0xFFFF) == os.stat(f).st_ino & 0xFFFF
    os.link(f, tmp_path / "other-name")
    assert _core.ftok(str(tmp_path / "other-name"), 1) == k1
    with pytest.raises(shmshare.SegmentNotFoundError):
        _core.ftok(str(tmp_path / "missing"), 1)
    with pytest.raises(shmshare.ShmValueError):
        _core.ftok(str(f), 0)


def test_list_ids_sees_new_segment(private_segment: int) -> None:
    """SHM_STAT_ANY enumeration includes a freshly created segment."""
    assert private_segment in _core.list_ids()


def test_robust_mutex_survives_dead_owner(private_segment: int) -> None:
    """A forked child takes the lock and dies; the parent is told and can go on."""
    att = _core.shmat(private_segment, 3333)
    m = _core.RobustMutex(att, 64)
    m.initialize()

    def die_holding(mutex: _core.RobustMutex) -> int:
        mutex.acquire()
        os._exit(0)

    assert fork_call(die_holding, m) == 0
    assert m.acquire(timeout=5) is True  # EOWNERDEAD: previous owner died
    m.mark_consistent()
    m.release()
    assert m.acquire(timeout=5) is False  # healthy again
    with pytest.raises(RuntimeError, match="already holds"):
        m.acquire(timeout=0)
    m.release()
    del m
    att.detach()


def test_robust_mutex_timeout(private_segment: int) -> None:
    """A held lock times out with LockTimeoutError instead of hanging."""
    att = _core.shmat(private_segment, 3333)
    m = _core.RobustMutex(att, 0)
    m.initialize()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        m.acquire()
        os.write(w, b"x")
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(r, 1) == b"x"
        with pytest.raises(shmshare.LockTimeoutError):
            m.acquire(timeout=0.05)
        with pytest.raises(TimeoutError):
            m.acquire(timeout=0)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    assert m.acquire(timeout=5) is True  # the killed holder is detected
    m.mark_consistent()
    m.release()
    del m
    att.detach()


def test_detach_with_live_view_raises_buffer_error(private_segment: int) -> None:
    """shmdt is refused while a memoryview or a slice of it lives."""
    att = _core.shmat(private_segment, 3333)
    v = att.memoryview()
    s = v[10:20]
    v.release()
    with pytest.raises(BufferError, match="still use its memory"):
        att.detach()
    assert att.attached
    s.release()
    att.detach()
    assert not att.attached
