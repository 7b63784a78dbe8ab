"""Unpickling is code execution: what shmshare refuses to read, and how to allow it."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

import shmshare
from shmshare import SharedDict, SharedList
from shmshare.naming.dirs import claim, remove_all


def test_group_writable_needs_trust(project_dir: Path) -> None:
    """An object whose mode lets others write is only opened with trust=True."""
    owner = SharedDict("shared-with-group", {"a": 1}, project_dir=project_dir, mode=0o660)
    with pytest.raises(PermissionError, match="lets other users write") as info:
        SharedDict("shared-with-group", project_dir=project_dir)
    assert isinstance(info.value, shmshare.ShmPermissionError) and "trust=True" in str(info.value)
    trusted = SharedDict("shared-with-group", project_dir=project_dir, trust=True)
    assert trusted["a"] == 1
    assert pickle.loads(pickle.dumps(trusted))["a"] == 1  # trust travels with the reference
    trusted.detach()
    owner.detach()


def test_foreign_owner_needs_trust(project_dir: Path) -> None:
    """An object now owned by another user is refused, naming that uid."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a segment to another user")
    owner = SharedList("given-away", [1], project_dir=project_dir)
    owner.segment.chown(uid=12345)
    with pytest.raises(PermissionError, match="owned by uid 12345"):
        SharedList("given-away", project_dir=project_dir, create=False)
    with pytest.raises(PermissionError, match="owned by uid 12345"):
        pickle.loads(pickle.dumps(owner))
    assert SharedList("given-away", project_dir=project_dir, trust=True).copy() == [1]
    owner.segment.chown(uid=os.geteuid())
    owner.detach()


def test_defaults_are_private(project_dir: Path) -> None:
    """Segments are created 0600 and project directories 0700."""
    d = SharedDict("private", project_dir=project_dir)
    assert d.segment.stat().mode == 0o600
    assert (project_dir.stat().st_mode & 0o777) == 0o700
    assert ((project_dir / "private.key").stat().st_mode & 0o777) == 0o600
    d.detach()


@pytest.fixture(params=[0o000, 0o022, 0o277], ids=["umask000", "umask022", "umask277"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under an unusual umask, restored afterwards."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777
            for p in [root, *root.rglob("*")] if p.is_dir()}


def test_manager_dirs_are_0700_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """Manager() makes its project dir, managers/ and its own dir 0700 under any umask."""
    root = tmp_path / "a" / "b"  # neither exists: the library creates both and below
    with shmshare.Manager(project_dir=root) as m:
        d = m.dict({"x": 1})
        modes = _modes_under(tmp_path / "a")
        assert modes and set(modes.values()) == {0o700}, modes
        del d


def test_plugin_run_dirs_are_0700_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """The pytest plugin's run directories (made by dirs.claim) are 0700 under any umask."""
    run = tmp_path / "proj" / "pytest-runs" / "run-x"
    claim(run, os.getpid())
    assert set(_modes_under(tmp_path / "proj").values()) == {0o700}
    assert (run / "owner.pid").stat().st_mode & 0o077 == 0
    remove_all(run)


def test_project_dir_made_0700_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """A project directory made by opening an object is 0700, parents included."""
    pdir = tmp_path / "new" / "proj"
    d = SharedDict("x", project_dir=pdir)
    assert set(_modes_under(tmp_path / "new").values()) == {0o700}
    d.detach()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_writable_project_dir_refused(tmp_path: Path, mode: int) -> None:
    """An existing project dir that group or others can write to is refused, with the fix."""
    pdir = tmp_path / "open"
    pdir.mkdir()
    pdir.chmod(mode)
    with pytest.raises(PermissionError, match="chmod go-w") as info:
        SharedDict("x", project_dir=pdir)
    assert isinstance(info.value, shmshare.ShmPermissionError)
    with pytest.raises(PermissionError, match="other users can create key files"):
        shmshare.Manager(project_dir=pdir)
    assert list(pdir.iterdir()) == []  # nothing was created in it
