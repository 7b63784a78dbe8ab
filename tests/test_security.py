"""Unpickling is code execution: what shmshare refuses to read, and how to allow it."""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import children, is_process_table, wait_pid

import shmshare
from shmshare import SharedDict, SharedList, _core
from shmshare._core.heap import Heap
from shmshare.naming.dirs import claim, remove_all
from shmshare.naming.header import FLAG_HEAP, FLAG_PERSIST, HEADER_SIZE, Header
from shmshare.naming.keys import KeyFile, KeyRecord, key_file_path
from shmshare.naming.lifecycle import sweep
from shmshare.naming.project_dir import resolve_project_dir


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
    claim(run, os.getpid(), _core.proc.token())
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


# -- another user's segments -----------------------------------------------------------------
#
# The test process is root; each side runs in a forked child that setuid()s to
# its own unprivileged uid (root itself may remove anything, which would hide
# the EPERM a real victim gets).

VICTIM, ATTACKER = 54321, 54322
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to run processes as two other users")


_AS_USER_PIDS: set[int] = set()  # this test's as_user children: victim_dir's cleanup


def as_user(uid: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a forked child with uid and gid ``uid``; its return value."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                out: Any = ("ok", fn(*args))
            except BaseException as exc:
                out = ("raised", f"{type(exc).__name__}: {exc}")
            os.write(w, pickle.dumps(out))
            code = 0
        finally:
            os._exit(code)
    children.add(pid)
    _AS_USER_PIDS.add(pid)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert wait_pid(pid) == 0
    status, value = pickle.loads(data)
    if status != "ok":
        raise AssertionError(f"uid {uid} child raised {value}")
    return value


@pytest.fixture
def victim_dir() -> Iterator[Path]:
    """A project directory owned by VICTIM (outside root's private pytest tmp dir)."""
    base = Path(tempfile.mkdtemp(prefix="shms-victim-"))
    os.chmod(base, 0o755)
    pdir = base / "proj"
    pdir.mkdir(mode=0o700)
    os.chown(pdir, VICTIM, VICTIM)
    _AS_USER_PIDS.clear()
    try:
        yield pdir
    finally:
        # Whatever either user left (root may remove it) -- made by this test's own
        # children: another xdist worker's test of the same users runs meanwhile.  Not
        # a user's process table, which that other test's processes may be using.
        for sid in _core.list_ids():
            try:
                st = _core.stat(sid)
                if (st.cpid in _AS_USER_PIDS and not is_process_table(st.key)
                        and (st.cuid in (VICTIM, ATTACKER) or st.uid in (VICTIM, ATTACKER))):
                    _core.rmid(sid)
            except OSError:
                continue
        _AS_USER_PIDS.clear()
        shutil.rmtree(base)


def _stale_key_file(pdir: Path, name: str) -> tuple[int, int, int]:
    """(victim) A key file naming a segment that is gone; its ftok key, dev, inode."""
    path = key_file_path(resolve_project_dir(pdir), name)
    with KeyFile.locked(path, create=True) as kf:
        assert kf is not None
        kf.write(KeyRecord(1, "dict", False))
        return _core.ftok(str(path), 1), kf.dev, kf.ino


def _plant(key: int, name: str, dev: int, ino: int, persist: bool) -> int:
    """(attacker) A world-readable heap segment at the victim's key, with a header
    that names the victim's key file: everything find_existing verifies matches."""
    size = 64 * 1024
    sid = _core.shmget(key, HEADER_SIZE + size, _core.IPC_CREAT | _core.IPC_EXCL | 0o666)
    att = _core.shmat(sid, HEADER_SIZE + size)
    Heap.create(att, HEADER_SIZE, size).close()
    view = att.memoryview()
    flags = FLAG_HEAP | (FLAG_PERSIST if persist else 0)
    Header(kind="dict", name=name, payload_size=size, flags=flags, proj_id=1, dev=dev,
           ino=ino).write(view)
    view.release()
    att.detach()
    return sid


def _victim_meets_planted(pdir: Path, name: str, foreign: int) -> dict[str, Any]:
    """(victim) Open, gc and open again in a directory holding a planted segment;
    record every heap the victim's process opened."""
    opened: list[int] = []
    real_open = Heap.open.__func__  # type: ignore[attr-defined]

    def spy(cls: type[Heap], att: _core.Attachment, offset: int, size: int) -> Heap:
        opened.append(att.shmid)
        return real_open(cls, att, offset, size)  # type: ignore[no-any-return]

    Heap.open = classmethod(spy)  # type: ignore[method-assign,assignment]
    out: dict[str, Any] = {}
    precious = SharedDict("precious", {"v": 1}, project_dir=pdir, persist=True)
    precious.detach()
    for step in ("first-open", "trust-open", "gc", "second-open"):
        try:
            if step == "gc":
                out[step] = [(r.name, r.action, r.reason) for r in sweep(pdir)]
            elif step == "trust-open":
                SharedDict(name, project_dir=pdir, create=False)
                out[step] = "opened"
            else:
                d = SharedDict("other" + step, project_dir=pdir)
                d.detach()
                out[step] = "ok"
        except Exception as exc:
            out[step] = f"{type(exc).__name__}: {exc}"
        gc.collect()  # the refused open's segment is released now
    again = SharedDict("precious", project_dir=pdir, create=False)
    out["precious"] = dict(again)
    again.unlink()
    out["heap-opened-on-foreign"] = foreign in opened
    return out


@needs_root
@pytest.mark.parametrize("persist", [False, True], ids=["orphan-looking", "persistent"])
def test_planted_segment_runs_no_heap_logic(victim_dir: Path, persist: bool) -> None:
    """A segment another user planted at a victim's key is never opened as a heap,
    never makes first-open or gc fail, and is left alone (reported by gc)."""
    key, dev, ino = as_user(VICTIM, _stale_key_file, victim_dir, "bait")
    foreign = as_user(ATTACKER, _plant, key, "bait", dev, ino, persist)
    out = as_user(VICTIM, _victim_meets_planted, victim_dir, "bait", foreign)
    assert out["heap-opened-on-foreign"] is False, out
    assert out["first-open"] == out["second-open"] == "ok", out
    assert "owned by uid 54322" in out["trust-open"] and "trust=True" in out["trust-open"], out
    assert out["gc"] == [("bait", "kept", "owned by uid 54322 (created by uid 54322), not by "
                                          "you: left alone")], out
    assert out["precious"] == {"v": 1}
    assert _core.stat(foreign).cuid == ATTACKER  # still there: not the victim's to remove


# -- two IPC namespaces, one project directory (containers sharing a volume) ------------------

_OTHER_NAMESPACE = r"""
import json, sys
from pathlib import Path
import shmshare
from shmshare.naming.lifecycle import sweep
pdir = Path(sys.argv[1])
out = {}
d = shmshare.SharedDict("theirs", {"b": 2}, project_dir=pdir)  # the first open sweeps
out["gc"] = [(r.name, r.action, r.reason) for r in sweep(pdir)]
try:
    shmshare.SharedDict("ours", project_dir=pdir)
    out["open-ours"] = "opened"
except Exception as exc:
    out["open-ours"] = f"{type(exc).__name__}: {exc}"
d.detach()
print(json.dumps(out))
"""


def _unshare_ipc_works() -> bool:
    try:
        return subprocess.run(["unshare", "--ipc", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_ipc_works(),
                    reason="cannot make an IPC namespace here (unshare --ipc needs root or "
                           "user namespaces)")
def test_other_ipc_namespace_leaves_our_key_files_alone(project_dir: Path) -> None:
    """A process in another IPC namespace sharing the project dir (containers with a shared
    volume) neither deletes our live key files as stale nor takes over our names."""
    ours = SharedDict("ours", {"a": 1}, project_dir=project_dir)
    proc = subprocess.run(["unshare", "--ipc", sys.executable, "-c", _OTHER_NAMESPACE,
                           str(project_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (project_dir / "ours.key").exists(), out
    assert out["gc"] == [["ours", "kept", out["gc"][0][2]]], out
    assert "another IPC namespace" in out["gc"][0][2]
    assert "another IPC namespace" in out["open-ours"], out
    assert not (project_dir / "theirs.key").exists()  # their last detach removed it there
    again = SharedDict("ours", project_dir=project_dir, create=False)
    assert again["a"] == 1
    assert sweep(project_dir) == []  # and ours is untouched by our own gc too
    again.detach()
    ours.detach()
