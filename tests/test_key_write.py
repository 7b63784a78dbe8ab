"""Key files are written in place at a fixed size, and a write cut by SIGKILL is harmless."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import fork_call

import shmshare
from shmshare.naming import keys
from shmshare.naming.lifecycle import sweep


def _killed_while_writing(pdir: Path, how: str) -> None:
    """In a child: create a named dict, SIGKILLed in the middle of its key-file write."""
    original = keys.KeyFile.write

    def write(self: keys.KeyFile, record: keys.KeyRecord) -> None:
        if how == "torn":  # a part of the record reached the file
            os.pwrite(self.fd, record.dumps()[:20], 0)
        elif how == "written":  # the whole record, then killed before shmget
            original(self, record)
        os.kill(os.getpid(), signal.SIGKILL)

    keys.KeyFile.write = write  # type: ignore[method-assign]
    shmshare.SharedDict("victim", project_dir=pdir)


@pytest.mark.parametrize("how", ["empty", "torn", "written"])
def test_key_file_write_killed_leaves_a_name_that_opens(project_dir: Path, how: str) -> None:
    """After the kill the name opens again (create or open), and works."""
    project_dir.mkdir()
    assert fork_call(_killed_while_writing, project_dir, how) == -signal.SIGKILL
    assert (project_dir / "victim.key").exists()
    with pytest.raises(FileNotFoundError):
        shmshare.SharedDict("victim", project_dir=project_dir, create=False)
    d = shmshare.SharedDict("victim", project_dir=project_dir)
    try:
        d["a"] = 1
        again: Any = shmshare.SharedDict("victim", project_dir=project_dir, create=False)
        assert again["a"] == 1
        again.detach()
    finally:
        d.unlink()
        d.detach()
    assert not (project_dir / "victim.key").exists()


@pytest.mark.parametrize("how", ["empty", "torn", "written"])
def test_key_file_write_killed_leaves_a_stale_file_gc_removes(project_dir: Path,
                                                              how: str) -> None:
    """Or gc finds the key file stale and removes it."""
    project_dir.mkdir()
    assert fork_call(_killed_while_writing, project_dir, how) == -signal.SIGKILL
    results = sweep(project_dir)
    assert [(r.name, r.action) for r in results] == [("victim", "removed-stale-key")]
    assert not (project_dir / "victim.key").exists()


def test_key_file_is_one_fixed_size_record(project_dir: Path) -> None:
    """The record is padded to RECORD_SIZE, and a longer old file is cut to it."""
    d = shmshare.SharedDict("rec", project_dir=project_dir)
    path = project_dir / "rec.key"
    try:
        assert path.stat().st_size == keys.RECORD_SIZE
        with keys.KeyFile.locked(path, create=False) as kf:
            assert kf is not None
            record = kf.read()
            assert record is not None and record.kind == "dict"
    finally:
        d.unlink()
        d.detach()
    path.write_bytes(b"x" * 1000)
    with keys.KeyFile.locked(path, create=False) as kf:
        assert kf is not None
        assert kf.read() is None  # not a record: stale
        kf.write(keys.KeyRecord(3, "dict", False))
        assert kf.read() == keys.KeyRecord(3, "dict", False)
    assert path.stat().st_size == keys.RECORD_SIZE
    path.unlink()


def test_old_unpadded_record_is_read(project_dir: Path) -> None:
    """A key file written by an earlier version (no padding) still reads."""
    project_dir.mkdir()
    path = project_dir / "old.key"
    path.write_bytes(keys.KeyRecord(5, "dict", True).dumps())
    with keys.KeyFile.locked(path, create=False) as kf:
        assert kf is not None
        assert kf.read() == keys.KeyRecord(5, "dict", True)
    path.unlink()
