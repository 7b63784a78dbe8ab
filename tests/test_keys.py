"""Project directories, object names and key files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import shmshare
from shmshare.naming.keys import KeyFile, KeyRecord, default_project_dir, resolve_project_dir


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
    """$SHMSHARE_DIR wins, then $XDG_RUNTIME_DIR/shmshare, then /tmp/shmshare-<uid>."""
    monkeypatch.setenv("SHMSHARE_DIR", str(tmp_path / "env"))
    assert default_project_dir() == tmp_path / "env"
    monkeypatch.delenv("SHMSHARE_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_project_dir() == tmp_path / "shmshare"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
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
    with KeyFile.locked(path, create=True) as kf:
        assert kf is not None
        first = kf.ino
        kf.unlink()
    with KeyFile.locked(path, create=True) as kf:
        assert (kf is not None and kf.ino != first) or kf is not None
        kf.unlink()
