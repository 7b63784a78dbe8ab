"""``python -m shmshare`` and the ``shmshare`` script: ls, info, rm, gc, with and without --json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from helpers import run_python

import shmshare
from shmshare import _core
from shmshare.cli import main


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _orphan(project_dir: Path, name: str) -> int:
    code = textwrap.dedent("""
        import os, signal, sys
        from shmshare import Segment
        s = Segment(sys.argv[2], 100, project_dir=sys.argv[1])
        print(s.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = run_python(code, str(project_dir), name, check=False)
    assert proc.returncode == -signal.SIGKILL
    return int(proc.stdout)


def test_ls_table_and_json(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ls shows every object with key, shmid, owner, perms, bytes, nattch, status."""
    with shmshare.Segment("alpha", 3333, project_dir=project_dir) as a:
        code, out, _ = cli(capsys, "ls", "--project-dir", str(project_dir))
        assert code == 0
        header, row = out.split("\n\n")[0].splitlines()  # then, maybe, the extents
        for col in ["name", "key", "shmid", "owner", "perms", "bytes", "nattch", "status",
                    "creator_alive"]:
            assert col in header
        assert row.split()[:2] == ["alpha", "segment"] and str(a.id) in row and "in use" in row
        code, out, _ = cli(capsys, "ls", "--project-dir", str(project_dir), "--json")
        data = json.loads(out)
        (obj,) = data["objects"]
        assert obj["name"] == "alpha" and obj["shmid"] == a.id and obj["key"] == f"{a.key:#010x}"
        assert obj["bytes"] == 3333 and obj["nattch"] == 1 and obj["perms"] == "600"
        assert obj["status"] == "in use" and obj["creator_alive"] is True


def test_ls_empty(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ls of an empty project directory says so."""
    project_dir.mkdir()
    code, out, _ = cli(capsys, "ls", "--project-dir", str(project_dir))
    assert code == 0 and "no objects" in out
    code, out, _ = cli(capsys, "--json", "ls", "--project-dir", str(project_dir))
    assert json.loads(out)["objects"] == []


def test_info(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """info shows header, kind, sizes and kernel state; --json gives the same as a dict."""
    with shmshare.Segment("beta", 100, project_dir=project_dir, persist=True) as b:
        code, out, _ = cli(capsys, "info", "beta", "--project-dir", str(project_dir))
        assert code == 0 and "kind" in out and "persist" in out and str(b.id) in out
        code, out, _ = cli(capsys, "info", "beta", "--project-dir", str(project_dir), "--json")
        data = json.loads(out)
        assert data["kind"] == "segment" and data["payload_bytes"] == 100
        assert data["persist"] is True and data["nattch"] == 1 and data["shmid"] == b.id
        assert data["key"] == f"{b.key:#010x}" and data["creator_pid"] == os.getpid()
        assert datetime.fromisoformat(data["changed"]).tzinfo is not None
        assert 0 <= data["age_seconds"] < 3600
    code, out, _ = cli(capsys, "rm", "beta", "--project-dir", str(project_dir))
    assert code == 0


def test_rm(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rm removes at once; attached processes keep access; --json reports them."""
    s = shmshare.Segment("gamma", 100, project_dir=project_dir)
    code, out, _ = cli(capsys, "rm", "gamma", "--project-dir", str(project_dir), "--json")
    assert code == 0 and json.loads(out) == {"removed": "gamma", "still_attached": 1}
    assert s.stat().dest and not (project_dir / "gamma.key").exists()
    s.buf[0] = 1  # still usable
    s.detach()
    shmshare.Segment("delta", 10, project_dir=project_dir, persist=True).detach()
    code, out, _ = cli(capsys, "rm", "delta", "--project-dir", str(project_dir))
    assert code == 0 and out.strip() == "removed delta"


def test_rm_several(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rm takes several names: each is removed, and one that cannot be is an error line
    (exit 1) that does not stop the others; --json reports all three outcomes."""
    for name in ("a1", "a2", "a3"):
        shmshare.Segment(name, 10, project_dir=project_dir, persist=True).detach()
    held = shmshare.Segment("a4", 10, project_dir=project_dir, persist=True)
    code, out, err = cli(capsys, "rm", "a1", "nope", "a2", "a1", "--project-dir",
                         str(project_dir))
    assert code == 1 and out.splitlines() == ["removed a1", "removed a2"]
    assert err.strip() == f"shmshare rm: error: no object named 'nope' in '{project_dir}'"
    code, out, _ = cli(capsys, "rm", "a3", "a4", "--project-dir", str(project_dir))
    assert code == 0 and out.splitlines() == [
        "removed a3", "removed a4 (1 attached process(es) keep access until they detach)"]
    held.detach()
    shmshare.Segment("a5", 10, project_dir=project_dir, persist=True).detach()
    code, out, _ = cli(capsys, "rm", "a5", "gone", "--json", "--project-dir", str(project_dir))
    data = json.loads(out)
    assert code == 1 and data["removed"] == ["a5"] and data["still_attached"] == {"a5": 0}
    assert list(data["errors"]) == ["gone"] and "no object named 'gone'" in data["errors"]["gone"]
    assert not list(project_dir.glob("*.key"))


def test_gc_dry_run_and_real(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gc --dry-run lists orphans without removing; gc removes them; both in JSON too."""
    shmid = _orphan(project_dir, "dead")
    code, out, _ = cli(capsys, "gc", "--dry-run", "--project-dir", str(project_dir))
    assert code == 0 and out.startswith("would remove dead:")
    code, out, _ = cli(capsys, "ls", "--project-dir", str(project_dir), "--json")
    assert json.loads(out)["objects"][0]["status"] == "orphan"
    code, out, _ = cli(capsys, "gc", "--dry-run", "--json", "--project-dir", str(project_dir))
    data = json.loads(out)
    assert data["dry_run"] is True and data["results"][0]["action"] == "would-remove"
    assert _core.stat(shmid).nattch == 0
    code, out, _ = cli(capsys, "gc", "--project-dir", str(project_dir), "--json")
    assert json.loads(out)["results"][0]["name"] == "dead"
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmid)
    code, out, _ = cli(capsys, "gc", "--project-dir", str(project_dir))
    assert code == 0 and "nothing to collect" in out


def test_errors_are_one_line(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing name or a bad name is one clear line on stderr and exit code 1."""
    project_dir.mkdir()
    for verb in ("info", "rm"):
        code, out, err = cli(capsys, verb, "nope", "--project-dir", str(project_dir))
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
        assert "no object named 'nope'" in err
    code, _, err = cli(capsys, "info", "../etc", "--project-dir", str(project_dir))
    assert code == 1 and "invalid object name" in err


def test_module_and_console_script(project_dir: Path) -> None:
    """python -m shmshare works as a real process; usage errors exit 2."""
    project_dir.mkdir()
    proc = subprocess.run([sys.executable, "-m", "shmshare", "ls", "--project-dir",
                           str(project_dir), "--json"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["objects"] == []
    proc = subprocess.run([sys.executable, "-m", "shmshare", "frobnicate"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "shmshare", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == f"shmshare {shmshare.__version__}"


def test_check(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check verifies a heap object's invariants; a plain segment's header; errors are one line."""
    d = shmshare.SharedDict("checked", {"a": 1}, project_dir=project_dir)
    code, out, _ = cli(capsys, "check", "checked", "--project-dir", str(project_dir))
    assert code == 0 and out.startswith("checked: dict OK — 1 entries")
    code, out, _ = cli(capsys, "check", "checked", "--project-dir", str(project_dir), "--json")
    data = json.loads(out)
    assert data["ok"] is True and data["entries"] == 1 and data["kind"] == "dict"
    with shmshare.Segment("plain", 10, project_dir=project_dir):
        code, out, _ = cli(capsys, "check", "plain", "--project-dir", str(project_dir))
        assert code == 0 and "header verified" in out
    code, _, err = cli(capsys, "check", "missing", "--project-dir", str(project_dir))
    assert code == 1 and "no object named 'missing'" in err
    d.detach()


def test_check_covers_every_heap_kind(project_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Queues and sync objects have heaps too: check verifies them, not just their header."""
    from shmshare.objects.queue import SharedQueue
    from shmshare.objects.sync import SharedLock

    q = SharedQueue(name="q", project_dir=project_dir)
    q.put("item")
    lock = SharedLock(name="l", project_dir=project_dir)
    try:
        for name, kind in (("q", "queue"), ("l", "mlock")):
            code, out, _ = cli(capsys, "check", name, "--project-dir", str(project_dir))
            assert code == 0 and out.startswith(f"{name}: {kind} OK"), out
    finally:
        q.detach()
        lock.detach()


def _damage_one_hash(d: shmshare.SharedDict, entry: int) -> None:
    """Flip one bit of a dict entry's stored hash: the key hides from lookups, and
    check() names the entry (tests/test_heap_damage.py has the layout)."""
    import struct

    from shmshare.naming.header import HEADER_SIZE

    mv = d._seg._attachment().memoryview()
    at = HEADER_SIZE + (d._heap.root_ref() & ((1 << 48) - 1)) + 64 + 24 * entry
    struct.pack_into("=Q", mv, at, struct.unpack_from("=Q", mv, at)[0] ^ 1)
    mv.release()


def test_check_every_object(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check with no name checks everything ls lists: each object a line, a damaged
    one an error line that does not stop the others (exit 1), a stale key file
    skipped with the reason, a summary last; --json reports all of it."""
    good = shmshare.SharedDict("good", {"a": 1}, project_dir=project_dir)
    bad = shmshare.SharedDict("bad", {f"k{i}": i for i in range(10)}, project_dir=project_dir)
    plain = shmshare.Segment("plain", 10, project_dir=project_dir)
    try:
        (project_dir / "stale.key").write_text("")
        with shmshare.Manager(project_dir=project_dir) as m:
            held = m.dict({"x": 1})
            code, out, err = cli(capsys, "check", "--project-dir", str(project_dir))
            assert code == 0, err
            lines = out.splitlines()
            assert lines[0].startswith("bad: dict OK — 10 entries"), out
            assert lines[1].startswith("good: dict OK — 1 entries"), out
            assert any(line.startswith("managers/") and ": dict OK — 1 entries" in line
                       for line in lines), out
            assert "plain: segment, header verified" in out
            assert "skipped stale: stale key file (gc removes it)" in out
            assert lines[-1] == f"check in {project_dir}: 4 OK, 1 skipped"
            _damage_one_hash(bad, 3)
            code, out, err = cli(capsys, "check", "--project-dir", str(project_dir))
            assert code == 1 and "bad: dict OK" not in out and "good: dict OK" in out
            assert err.strip() == ("shmshare check: error: SharedDict 'bad': dict: stored "
                                   "hash differs from the key's hash (entry 3)")
            assert out.splitlines()[-1] == (f"check in {project_dir}: 3 OK, 1 failed, "
                                            "1 skipped")
            code, out, _ = cli(capsys, "check", "--json", "--project-dir", str(project_dir))
            data = json.loads(out)
            assert code == 1 and data["project_dir"] == str(project_dir)
            names = {c["name"] for c in data["checked"]}
            assert {"good", "plain"} <= names and len(names) == 3
            assert all(c["ok"] for c in data["checked"])
            assert list(data["errors"]) == ["bad"] and "entry 3" in data["errors"]["bad"]
            assert data["skipped"] == {"stale": "stale key file (gc removes it)"}
            del held
    finally:
        for obj in (good, bad, plain):
            obj.unlink()
            obj.detach()
    (project_dir / "stale.key").unlink()
    code, out, _ = cli(capsys, "check", "--project-dir", str(project_dir))
    assert code == 0 and out.strip() == f"check in {project_dir}: nothing to check"


def test_check_several(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check NAME NAME...: each named object checked; a missing one is an error line
    (exit 1), the others still checked; one name keeps its one-object output."""
    a = shmshare.SharedDict("a", {"x": 1}, project_dir=project_dir)
    b = shmshare.SharedList([1, 2], name="b", project_dir=project_dir)
    try:
        code, out, err = cli(capsys, "check", "a", "nope", "b", "a", "--project-dir",
                             str(project_dir))
        assert code == 1 and [line.split(" OK")[0] for line in out.splitlines()] == [
            "a: dict", "b: list", f"check in {project_dir}: 2"], out
        assert err.strip() == (f"shmshare check: error: no object named 'nope' in "
                               f"'{project_dir}'")
        code, out, _ = cli(capsys, "check", "a", "--json", "--project-dir", str(project_dir))
        assert json.loads(out)["name"] == "a"  # one name: the one-object JSON, as before
    finally:
        a.detach()
        b.detach()
