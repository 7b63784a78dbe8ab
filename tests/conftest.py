"""Fixtures shared by the whole suite: per-test project directories, leak checks,
and process helpers that always reap their children."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shmshare import _core
from shmshare.keys import KeyFile, key_file_path, list_names
from shmshare.lifecycle import destroy, find_existing


def _leftovers(project_dir: Path) -> list[str]:
    """Remove and report every segment still named in ``project_dir``."""
    left = []
    for name in list_names(project_dir):
        with KeyFile.locked(key_file_path(project_dir, name), create=False) as kf:
            record = kf.read() if kf else None
            found = find_existing(kf, record, name) if kf and record else None
            if found is not None:
                left.append(f"{name} (shmid {found.shmid}, nattch "
                            f"{found.stat_before.nattch})")
                destroy(found)
                found.attachment.detach()
            if kf is not None:
                kf.unlink()
    return left


@pytest.fixture
def project_dir(tmp_path: Path) -> Iterator[Path]:
    """A project directory of this test's own; fails the test if segments remain in it."""
    pdir = tmp_path / "shm"
    yield pdir
    gc.collect()
    if pdir.exists():
        left = _leftovers(pdir)
        assert not left, f"test left segments behind: {left}"


@pytest.fixture(autouse=True)
def _no_segment_leak() -> Iterator[None]:
    """Fail a test that leaves a segment this very process created and did not mark removed."""
    before = set(_core.list_ids())
    yield
    gc.collect()
    me = os.getpid()
    leaked = []
    for shmid in set(_core.list_ids()) - before:
        try:
            st = _core.stat(shmid)
        except OSError:
            continue
        if st.cpid == me and not st.dest:
            leaked.append(f"shmid {shmid} key {st.key:#x} nattch {st.nattch}")
            _core.rmid(shmid)
    assert not leaked, f"test leaked segments: {leaked}"
