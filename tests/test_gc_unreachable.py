"""gc finds this user's named segments whose key file is gone (naming/unreachable.py).

Deleting a project directory while an object lives in it (a persistent one,
or one whose users were killed) used to leave a segment no name reaches and
no gc could find: it starts from key files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import fork_child, own_ipc_namespace, run_python, wait_child

import shmshare
from shmshare import SegmentRemovedError, SharedDict, _core
from shmshare.cli import main
from shmshare.naming.header import HEADER_SIZE, Header

_MAKE = textwrap.dedent("""
    import os, signal, sys
    import shmshare
    d = shmshare.SharedDict(sys.argv[2], project_dir=sys.argv[1], persist=sys.argv[3] == "1")
    d["x"] = list(range(1000))
    print(os.getpid(), flush=True)
    if sys.argv[4] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
""")


def _make(pdir: Path, name: str, *, persist: bool, kill: bool) -> int:
    """Make a named SharedDict in a child; return its main shmid."""
    proc = run_python(_MAKE, str(pdir), name, "1" if persist else "0",
                      "kill" if kill else "exit", check=False)
    assert proc.returncode == (-signal.SIGKILL if kill else 0), proc.stderr
    header_ids = [sid for sid in _core.list_ids() if _header_name(sid) == name
                  and _core.stat(sid).cpid == int(proc.stdout)]
    assert len(header_ids) == 1, header_ids
    return header_ids[0]


def _header_name(shmid: int) -> str | None:
    try:
        st = _core.stat(shmid)
        if st.uid != os.geteuid() or st.size < HEADER_SIZE or st.key == 0:
            return None
        att = _core.shmat(shmid, HEADER_SIZE, readonly=True)
    except Exception:
        return None
    try:
        view = att.memoryview()
        try:
            h = Header.read(view)
        except Exception:
            return None
        finally:
            view.release()
        return h.name if h is not None else None
    finally:
        att.detach()


def _gc(capsys: pytest.CaptureFixture[str], pdir: Path, *extra: str) -> dict:
    pdir.mkdir(mode=0o700, exist_ok=True)
    assert main(["gc", "--json", "--project-dir", str(pdir), *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _exists(shmid: int) -> bool:
    try:
        _core.stat(shmid)
        return True
    except SegmentRemovedError:
        return False


def _actions(data: dict, shmid: int) -> list[str]:
    return [r["action"] for r in data["results"] if f"(shmid {shmid})" in r["name"]]


def test_header_records_the_key_file_path(project_dir: Path) -> None:
    from shmshare import Segment
    seg = Segment("p", 100, project_dir=project_dir)
    try:
        att = _core.shmat(seg.id, HEADER_SIZE, readonly=True)
        view = att.memoryview()
        header = Header.read(view)
        view.release()
        att.detach()
        assert header is not None
        assert header.key_path == str(project_dir.absolute() / "p.key")
        assert header.mntns == os.stat("/proc/self/ns/mnt").st_ino
    finally:
        seg.unlink()
        seg.detach()


@pytest.mark.parametrize("persist,kill", [(False, True), (True, False)])
def test_deleted_directory_leaves_nothing_gc_cannot_find(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], persist: bool, kill: bool) -> None:
    """A killed object's, or a persistent object's, directory deleted: gc removes it,
    from any project directory (persistent: only when asked, the directory may have
    moved)."""
    pdir = tmp_path / "doomed"
    shmid = _make(pdir, "lost", persist=persist, kill=kill)
    shutil.rmtree(pdir)
    elsewhere = tmp_path / "other"
    data = _gc(capsys, elsewhere, "--dry-run")
    assert _actions(data, shmid) == [] and _exists(shmid)   # a dry run attaches nothing
    data = _gc(capsys, elsewhere)
    if persist:
        assert _actions(data, shmid) == ["kept"] and _exists(shmid)
        reason = next(r["reason"] for r in data["results"] if f"(shmid {shmid})" in r["name"])
        assert "--unreachable" in reason and str(pdir) in reason
        data = _gc(capsys, elsewhere, "--unreachable")
    assert _actions(data, shmid) == ["removed"]
    assert not _exists(shmid)


def test_persistent_object_whose_key_file_alone_was_deleted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdir = tmp_path / "proj"
    shmid = _make(pdir, "keyless", persist=True, kill=False)
    (pdir / "keyless.key").unlink()
    data = _gc(capsys, tmp_path / "other")
    assert _actions(data, shmid) == ["removed"] and not _exists(shmid)


def test_reachable_objects_are_left_alone(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A persistent object whose key file exists, in a directory gc was not given,
    and one in a moved directory (ftok follows the inode) stay, and still open."""
    import shmshare
    here, there = tmp_path / "here", tmp_path / "there"
    a = _make(here, "a", persist=True, kill=False)
    b = _make(there, "b", persist=True, kill=False)
    moved = tmp_path / "moved"
    there.rename(moved)
    data = _gc(capsys, tmp_path / "other")
    assert _actions(data, a) == [] and _exists(a)
    assert _actions(data, b) == ["kept"] and _exists(b)
    for pdir, name in ((here, "a"), (moved, "b")):
        d = shmshare.SharedDict(name, project_dir=pdir, create=False)
        assert d["x"] == list(range(1000))
        d.unlink()
        d.detach()
    assert not _exists(a) and not _exists(b)


def test_segments_that_are_not_shmshare_objects_are_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plain segment of this user at a key, nattch 0 (another program's): gc
    neither removes it nor writes into it."""
    key = 0x5F000000 | (os.getpid() & 0xFFFF)
    shmid = _core.shmget(key, 2 * HEADER_SIZE, _core.IPC_CREAT | _core.IPC_EXCL | 0o600)
    try:
        att = _core.shmat(shmid, 2 * HEADER_SIZE)
        view = att.memoryview()
        view[:] = b"\x5a" * len(view)
        view.release()
        att.detach()
        _gc(capsys, tmp_path / "other")
        assert _exists(shmid)
        att = _core.shmat(shmid, 2 * HEADER_SIZE)
        view = att.memoryview()
        assert bytes(view) == b"\x5a" * len(view)
        view.release()
        att.detach()
    finally:
        _core.rmid(shmid)


def test_anonymous_creator_killed_before_marking_its_segment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A creator SIGKILLed between an anonymous object's shmget and its IPC_RMID left
    a segment with no name, no header and nobody attached, that nothing could
    tell from another program's: now its key says it is an anonymous creation of
    shmshare's, and gc removes it once its creator is gone."""
    code = textwrap.dedent("""
        import os, signal
        import shmshare
        from shmshare import _core
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)   # right after the shmget
        _core.shmat = die
        print(os.getpid(), flush=True)
        shmshare.SharedDict()
    """)
    before = set(_core.list_ids())
    proc = run_python(code, check=False)
    assert proc.returncode == -signal.SIGKILL
    left = [sid for sid in set(_core.list_ids()) - before
            if _core.stat(sid).cpid == int(proc.stdout)]
    assert len(left) == 1
    st = _core.stat(left[0])
    assert st.nattch == 0 and not st.dest and st.key != 0
    data = _gc(capsys, tmp_path / "other")
    assert [r["action"] for r in data["results"] if f"shmid {left[0]}" in r["name"]] == \
        ["removed"]
    assert not _exists(left[0])


def test_anonymous_creation_outlives_a_gc_that_cannot_see_its_creator(tmp_path: Path) -> None:
    """A gc in a child PID namespace (same IPC namespace) sees a creator outside it as
    pid 0, so a pid check called it dead and removed its segment between its shmget and
    its shmat: the creation failed.  No liveness is asked now: a headerless anonymous
    segment nobody attached is gc's to take, and a creator that loses it makes another.
    (In a forked child with an IPC namespace of its own: a gc another test runs beside
    this one would take that segment first.)"""
    exe = shutil.which("unshare")
    if exe is None or subprocess.run([exe, "--pid", "--fork", "--kill-child", "true"],
                                     capture_output=True, timeout=30).returncode != 0:
        pytest.skip("unshare --pid --fork is not available here (needs root or user namespaces)")

    def scenario() -> int:
        if not own_ipc_namespace():
            return 77
        real_shmat = _core.shmat
        swept: list[str] = []

        def gc_first(shmid: int, *args: object, **kwargs: object) -> object:
            if not swept:  # once: between this creation's shmget and its shmat
                out = subprocess.run([exe, "--pid", "--fork", "--kill-child", sys.executable,
                                      "-m", "shmshare", "gc", "--json", "--project-dir",
                                      str(tmp_path)], capture_output=True,
                                     text=True, timeout=120, cwd="/")
                assert out.returncode == 0, out.stderr
                swept.append(out.stdout)
            return real_shmat(shmid, *args, **kwargs)

        _core.shmat = gc_first
        try:
            d = SharedDict()
        finally:
            _core.shmat = real_shmat
        taken = [r for r in json.loads(swept[0])["results"]
                 if r["name"].startswith("anonymous segment") and r["action"] == "removed"]
        assert taken, swept[0]  # gc did take the creation's first segment
        d["k"] = "v"
        assert d["k"] == "v"
        d.detach()
        return 0
    code = wait_child(fork_child(scenario))
    if code == 77:
        pytest.skip("no IPC namespace of its own can be made here (unshare refused)")
    assert code == 0, "the scenario failed (its traceback is above)"


def test_named_keys_never_fall_in_the_anonymous_range() -> None:
    """gc takes a headerless, unattached segment of the anonymous range without asking
    about its creator, so a named creation never uses the proj_id whose keys are there."""
    from shmshare.naming.attach import _proj_ids
    from shmshare.naming.header import ANON_KEY_BASE

    anon = ANON_KEY_BASE >> 24
    for first in (1, 7, anon, 255):
        ids = list(_proj_ids(first))
        assert anon not in ids and len(ids) == len(set(ids)) == 254
        assert ids[0] == (first if first != anon else 1)


@pytest.mark.parametrize("when", ["before its shmat", "before its header"])
def test_named_creation_that_loses_its_segment_makes_another(
        project_dir: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """Under its key file's lock a headerless, unattached segment is a dead creator's,
    and is removed without asking about pids; the one live creator it can be is that
    of another key file whose ftok key collides.  Such a creator, whose segment is
    removed before it attaches it or before its header is written, makes another:
    the name opens afterwards, from another process too."""
    from shmshare.naming import attach

    real_shmat, real_write = _core.shmat, attach._write_header
    taken: list[int] = []

    def take_then_shmat(shmid: int, *args: object, **kwargs: object) -> object:
        if not taken:
            taken.append(shmid)
            _core.rmid(shmid)  # what the colliding opener does
        return real_shmat(shmid, *args, **kwargs)

    def take_then_write(att: object, header: object) -> None:
        if not taken:
            taken.append(att.shmid)  # type: ignore[attr-defined]
            _core.rmid(att.shmid)  # type: ignore[attr-defined]
        real_write(att, header)  # type: ignore[arg-type]

    if when == "before its shmat":
        monkeypatch.setattr(_core, "shmat", take_then_shmat)
    else:
        monkeypatch.setattr(attach, "_write_header", take_then_write)
    d = SharedDict("lost", create=True, project_dir=project_dir)
    monkeypatch.undo()
    assert taken and shmshare.segment_of(d).id != taken[0]
    d["k"] = "v"
    run_python("import shmshare, sys; d = shmshare.SharedDict('lost', create=False, "
               "project_dir=sys.argv[1]); assert d['k'] == 'v'", str(project_dir))
    d.unlink()
    d.detach()
