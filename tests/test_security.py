"""Unpickling is code execution: what shmshare refuses to read, and how to allow it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

import shmshare
from shmshare import SharedDict, SharedList


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
    owner = SharedList([1], name="given-away", project_dir=project_dir)
    owner.segment.chown(uid=12345)
    with pytest.raises(PermissionError, match="owned by uid 12345"):
        SharedList(name="given-away", project_dir=project_dir, create=False)
    with pytest.raises(PermissionError, match="owned by uid 12345"):
        pickle.loads(pickle.dumps(owner))
    assert SharedList(name="given-away", project_dir=project_dir, trust=True).copy() == [1]
    owner.segment.chown(uid=os.geteuid())
    owner.detach()


def test_defaults_are_private(project_dir: Path) -> None:
    """Segments are created 0600 and project directories 0700."""
    d = SharedDict("private", project_dir=project_dir)
    assert d.segment.stat().mode == 0o600
    assert (project_dir.stat().st_mode & 0o777) == 0o700
    assert ((project_dir / "private.key").stat().st_mode & 0o777) == 0o600
    d.detach()
