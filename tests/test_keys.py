"""Project directories, object names and key files."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import JOIN_TIMEOUT, children, fork_child, wait_pid

import shmshare
from shmshare.naming.keys import KeyFile, KeyRecord, key_file_path
from shmshare.naming.project_dir import default_project_dir, resolve_project_dir


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".", ".hidden", "a\0b", "x" * 201,
                                 "tab\there", "é" * 101, 42, b"bytes"])
def test_bad_names_are_refused(bad: object, project_dir: Path) -> None:
    """Path separators, '..', NUL, empty, too long or non-str names raise ValueError."""
    with pytest.raises(ValueError, match="name"):
        shmshare.Segment(bad, 4096, project_dir=project_dir)  # type: ignore[arg-type]
    assert not project_dir.exists() or not os.listdir(project_dir)


def test_good_names(project_dir: Path) -> None:
    """Unicode, dots inside and 200-byte names are accepted."""
    for name in ["plain", "with.dots-and_underscores", "ünïcødé", "x" * 200]:
        with shmshare.Segment(name, 100, project_dir=project_dir) as s:
            assert s.name == name


def test_project_dir_created_0700(tmp_path: Path) -> None:
    """A missing project directory is created with mode 0700."""
    p = resolve_project_dir(tmp_path / "new" / "proj")
    assert p.is_dir() and (p.stat().st_mode & 0o777) == 0o700


def test_symlinked_project_dir_refused(tmp_path: Path) -> None:
    """A project directory that is a symlink is refused with PermissionError."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(PermissionError, match="symlink"):
        shmshare.Segment("x", 10, project_dir=tmp_path / "link")


def test_foreign_project_dir_refused(tmp_path: Path) -> None:
    """A project directory owned by another user is refused with PermissionError."""
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 12345, 12345)
    else:
        foreign = Path("/")  # owned by root, not by us
    with pytest.raises(PermissionError, match="owned by uid"):
        shmshare.Segment("x", 10, project_dir=foreign)
    if os.geteuid() == 0:
        assert os.listdir(foreign) == []


def test_default_project_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$SHMSHARE_DIR wins, then $XDG_RUNTIME_DIR/shmshare, then /dev/shm/shmshare-<uid>
    (a tmpfs, like $XDG_RUNTIME_DIR), then /tmp/shmshare-<uid> where /dev/shm is missing."""
    from shmshare.naming import project_dir as keys

    monkeypatch.setenv("SHMSHARE_DIR", str(tmp_path / "env"))
    assert default_project_dir() == tmp_path / "env"
    monkeypatch.delenv("SHMSHARE_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_project_dir() == tmp_path / "shmshare"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    if os.path.isdir("/dev/shm"):
        assert default_project_dir() == Path(f"/dev/shm/shmshare-{os.geteuid()}")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    # The fallback's root is chosen once per process (at import): a fresh choice
    # where /dev/shm is missing falls back to /tmp, and then stays.
    monkeypatch.setattr(keys, "_FALLBACK", {})
    monkeypatch.setattr(keys, "FALLBACK_ROOTS", (str(tmp_path / "no-dev-shm"), "/tmp"))
    assert default_project_dir() == Path(f"/tmp/shmshare-{os.geteuid()}")
    monkeypatch.setattr(keys, "FALLBACK_ROOTS", (str(tmp_path), "/tmp"))
    assert default_project_dir() == Path(f"/tmp/shmshare-{os.geteuid()}")


def test_symlinked_key_file_refused(project_dir: Path) -> None:
    """A key file replaced by a symlink is refused (O_NOFOLLOW), never followed."""
    resolve_project_dir(project_dir)
    target = project_dir.parent / "target"
    target.write_text("")
    (project_dir / "evil.key").symlink_to(target)
    with pytest.raises(PermissionError, match="symlink"):
        shmshare.Segment("evil", 10, project_dir=project_dir)
    (project_dir / "evil.key").unlink()


def test_key_file_is_stable_while_segment_lives(project_dir: Path) -> None:
    """Opening and closing other handles never recreates the key file (same inode)."""
    a = shmshare.Segment("stable", 100, project_dir=project_dir)
    key_file = project_dir / "stable.key"
    ino = key_file.stat().st_ino
    for _ in range(5):
        b = shmshare.Segment("stable", project_dir=project_dir, create=False)
        assert b.key == a.key
        b.detach()
        assert key_file.stat().st_ino == ino
    a.detach()
    assert not key_file.exists()


def test_key_record_roundtrip_and_garbage() -> None:
    """Key records round-trip; garbage or out-of-range proj_ids read as None."""
    rec = KeyRecord(7, "dict", True)
    assert KeyRecord.loads(rec.dumps()) == rec
    assert KeyRecord.loads(b"not json") is None
    assert KeyRecord.loads(b'{"proj_id": 0, "kind": "x", "persist": false}') is None


def test_key_file_lock_retries_after_unlink(project_dir: Path) -> None:
    """A locker whose file was unlinked meanwhile ends up locking the current file."""
    resolve_project_dir(project_dir)
    path = project_dir / "k.key"
    got: list[tuple[int, bool]] = []

    def second_locker() -> None:
        with KeyFile.locked(path, create=True) as kf:
            assert kf is not None
            # The file it holds is linked, and it is the one the path names.
            got.append((os.fstat(kf.fd).st_nlink, os.stat(path).st_ino == kf.ino))
            kf.unlink()

    with KeyFile.locked(path, create=True) as kf:
        assert kf is not None
        t = threading.Thread(target=second_locker)
        t.start()
        # The second locker has opened this very file and waits in flock on it.
        deadline = time.monotonic() + JOIN_TIMEOUT
        while len(_fds_on(os.getpid(), path)) < 2:
            assert time.monotonic() < deadline, "the second locker never opened the file"
            time.sleep(0.001)
        kf.unlink()
    t.join(JOIN_TIMEOUT)
    # Not by inode number: the freed inode is often reused at once for the new file.
    assert got == [(1, True)]


def _hold_until_closed(read_fd: int, write_fd: int) -> int:
    os.close(write_fd)
    os.read(read_fd, 1)  # returns when the parent closes its end (or dies)
    return 0


def _fds_on(pid: int, path: Path) -> list[str]:
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == str(path):
                out.append(fd.name)
        except FileNotFoundError:
            continue  # closed while we looked
    return out


def test_forked_child_does_not_keep_key_file_flock(project_dir: Path) -> None:
    """A child forked while a key file is locked does not keep the lock once it is released
    (LOCK_UN: the parent once waited on a flock held through a re-forked worker's fd)."""
    path = key_file_path(resolve_project_dir(project_dir), "held")
    r, w = os.pipe()
    pid = None
    try:
        with KeyFile.locked(path, create=True):
            pid = fork_child(_hold_until_closed, r, w)
        assert _fds_on(pid, path), "the child should still have its copy of the descriptor"
        with KeyFile.locked(path, create=False, blocking=False) as again:
            assert again is not None, "the forked child kept the key-file flock"
            again.unlink()
    finally:
        os.close(w)
        os.close(r)
        if pid is not None:
            wait_pid(pid)


def test_execd_child_inherits_no_key_file(project_dir: Path) -> None:
    """A process exec'd while a key file is locked has no descriptor on it (O_CLOEXEC)."""
    path = key_file_path(resolve_project_dir(project_dir), "held")
    r, w = os.pipe()
    os.set_inheritable(r, True)
    pid = None
    try:
        with KeyFile.locked(path, create=True) as kf:
            assert kf is not None
            # posix_spawn, unlike subprocess, closes nothing itself: what the
            # child has is exactly what was inheritable.
            code = "import os,sys; os.write(1, b'u'); os.read(int(sys.argv[1]), 1)"
            ready_r, ready_w = os.pipe()
            os.set_inheritable(ready_w, True)
            pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code, str(r)],
                                 os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, ready_w, 1)])
            children.add(pid)
            os.close(ready_w)
            assert os.read(ready_r, 1) == b"u"
            os.close(ready_r)
            assert _fds_on(pid, path) == []
            kf.unlink()
    finally:
        os.close(w)
        os.close(r)
        if pid is not None:
            wait_pid(pid)


def test_project_dir_is_checked_again_once_it_changed(tmp_path: Path) -> None:
    """A project directory that passed once is refused as soon as it no longer would
    (made writable by others, replaced by a symlink): the check is not remembered
    past a change."""
    proj = tmp_path / "proj"
    with shmshare.Segment("x", 10, project_dir=proj) as s:
        proj.chmod(0o777)
        try:
            with pytest.raises(PermissionError, match="mode 777"):
                shmshare.Segment("x", 0, create=False, project_dir=proj)
        finally:
            proj.chmod(0o700)
        with shmshare.Segment("x", 0, create=False, project_dir=proj) as again:
            assert again.id == s.id
        real = tmp_path / "real"
        proj.rename(real)
        proj.symlink_to(real)
        try:
            with pytest.raises(PermissionError, match="symlink"):
                shmshare.Segment("x", 0, create=False, project_dir=proj)
        finally:
            proj.unlink()
            real.rename(proj)


def test_open_waits_while_another_process_holds_the_key_file(project_dir: Path) -> None:
    """Opening an existing name while another process holds its key-file lock (it is
    creating, removing or detaching it) waits for the lock, then opens."""
    with shmshare.Segment("held", 10, project_dir=project_dir) as s:
        r, w = os.pipe()
        r2, w2 = os.pipe()

        def holder() -> int:
            os.close(r)
            with KeyFile.locked(key_file_path(project_dir, "held"), create=False) as kf:
                assert kf is not None
                os.write(w, b"l")
                os.read(r2, 1)  # hold until told
            return 0
        pid = fork_child(holder)
        os.close(w)
        assert os.read(r, 1) == b"l"
        got: list[int] = []

        def opener() -> None:
            with shmshare.Segment("held", 0, create=False, project_dir=project_dir) as o:
                got.append(o.id)
        t = threading.Thread(target=opener)
        t.start()
        t.join(0.3)
        assert t.is_alive() and got == []   # still waiting for the lock
        os.write(w2, b"g")
        t.join(JOIN_TIMEOUT)
        assert got == [s.id]
        assert wait_pid(pid) == 0
        for fd in (r, r2, w2):
            os.close(fd)


@pytest.mark.parametrize("proj_id", [1, 2, 127, 128, 200, 255])
def test_key_from_the_locked_inode_is_ftok(project_dir: Path, proj_id: int) -> None:
    """The key computed from the locked key file's inode is what ftok(3) says."""
    from shmshare import _core

    resolve_project_dir(project_dir)
    path = project_dir / "k.key"
    with KeyFile.locked(path, create=True) as kf:
        assert kf is not None
        assert kf.key(proj_id) == _core.ftok(str(path), proj_id)
        kf.unlink()
