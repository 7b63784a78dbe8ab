"""The CLI for the person cleaning up a machine: read-only verbs leave no trace, output
says what it means (hex keys, ISO times, extents, orphans of dead Managers), scripts
get JSON for results and errors alike."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest
from helpers import run_python, segments_created_by, unshare_prefix

import shmshare
from shmshare import _core
from shmshare.cli import _VERBS, main


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _orphan_dict(project_dir: Path, name: str, items: int = 1) -> tuple[int, int]:
    """A named dict whose only user was SIGKILLed: (its shmid, the dead user's pid)."""
    code = textwrap.dedent("""
        import os, signal, sys
        from shmshare import SharedDict
        d = SharedDict(sys.argv[2], project_dir=sys.argv[1])
        for i in range(int(sys.argv[3])):
            d[i] = b"x" * 100
        print(d._seg.id, os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = run_python(code, str(project_dir), name, str(items), check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    shmid, pid = map(int, proc.stdout.split())
    return shmid, pid


def _kernel_view(shmid: int) -> tuple[int, int, int, int]:
    st = _core.stat(shmid)
    return st.nattch, st.lpid, st.atime, st.dtime


def test_ls_of_a_mistyped_project_dir_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --project-dir that does not exist is an error, for every verb, and stays absent."""
    typo = tmp_path / "tpyo"
    for argv in (["ls"], ["info", "x"], ["check", "x"], ["gc", "--dry-run"], ["gc"], ["rm", "x"]):
        code, out, err = cli(capsys, *argv, "--project-dir", str(typo))
        assert code == 1 and out == "" and "no project directory" in err, (argv, err)
        assert not typo.exists(), argv


@pytest.mark.own_ipc_namespace
def test_ls_info_and_dry_run_attach_nothing(project_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """ls, info and gc --dry-run leave nattch, lpid and the attach times as they were,
    so the real gc still names the dead user, not the CLI."""
    shmid, dead = _orphan_dict(project_dir, "dead")
    before = _kernel_view(shmid)
    files = sorted(project_dir.rglob("*"))
    for argv in (["ls"], ["info", "dead"], ["gc", "--dry-run"], ["--json", "gc", "--dry-run"]):
        code, _, err = cli(capsys, *argv, "--project-dir", str(project_dir))
        assert code == 0, err
        assert _kernel_view(shmid) == before, f"{argv} changed the segment's kernel state"
    assert sorted(project_dir.rglob("*")) == files
    code, out, _ = cli(capsys, "gc", "--project-dir", str(project_dir))
    assert f"removed dead: nattch 0 and not persistent (last user pid {dead}: gone)" in out
    assert str(os.getpid()) not in out


@pytest.mark.own_ipc_namespace
def test_check_attaches_but_leaves_no_user_trace(project_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """check attaches (it must, to walk the heap) but sweeps nothing, and gc afterwards
    reports the last real user, not check's pid; a real user after check counts again."""
    shmid, dead = _orphan_dict(project_dir, "dead")
    code, out, _ = cli(capsys, "check", "dead", "--project-dir", str(project_dir))
    assert code == 0 and out.startswith("dead: dict OK"), out
    assert _core.stat(shmid).lpid == os.getpid()  # the kernel saw check's detach...
    code, out, _ = cli(capsys, "gc", "--dry-run", "--project-dir", str(project_dir), "--json")
    (result,) = [r for r in json.loads(out)["results"] if r["name"] == "dead"]
    assert result["action"] == "would-remove"  # check swept nothing: it is still there
    code, out, _ = cli(capsys, "gc", "--project-dir", str(project_dir))
    assert f"last user pid {dead}: gone" in out, out  # ...but gc does not call it a user


@pytest.mark.own_ipc_namespace
def test_check_of_a_header_only_kind_verifies_and_leaves_no_trace(
        project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """For a raw segment check verifies the header (attaching), and gc still names the dead user."""
    code = textwrap.dedent("""
        import os, signal, sys
        from shmshare import Segment
        s = Segment("raw", 100, project_dir=sys.argv[1])
        print(s.id, os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    shmid, dead = map(int, run_python(code, str(project_dir), check=False).stdout.split())
    code_, out, _ = cli(capsys, "check", "raw", "--project-dir", str(project_dir))
    assert code_ == 0 and out.strip() == "raw: segment, header verified (it has no heap to check)"
    assert _core.stat(shmid).lpid == os.getpid()  # it did attach, to read the header
    _, out, _ = cli(capsys, "gc", "--project-dir", str(project_dir))
    assert f"removed raw: nattch 0 and not persistent (last user pid {dead}: gone)" in out


@pytest.mark.own_ipc_namespace
def test_gc_json_dry_run_summary_and_errors(project_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Dry runs say would-remove; gc ends with a summary; errors are JSON with --json."""
    _orphan_dict(project_dir, "dead")
    (project_dir / "stale.key").write_text("")
    code, out, _ = cli(capsys, "gc", "--dry-run", "--project-dir", str(project_dir))
    assert out.splitlines()[-1].startswith(f"gc --dry-run in {project_dir}: ")
    assert "1 would remove" in out and "1 would remove stale key" in out, out
    code, out, _ = cli(capsys, "gc", "--json", "--project-dir", str(project_dir))
    data = json.loads(out)
    assert data["summary"]["removed"] == 1 and data["summary"]["removed-stale-key"] == 1
    code, out, _ = cli(capsys, "gc", "--project-dir", str(project_dir))
    assert out.strip().splitlines()[-1] == f"gc in {project_dir}: nothing to collect"
    code, out, err = cli(capsys, "--json", "info", "nope", "--project-dir", str(project_dir))
    assert code == 1 and err == ""
    error = json.loads(out)
    assert error["verb"] == "info" and error["type"] == "SegmentNotFoundError"
    assert error["errno"] == 2 and "no object named 'nope'" in error["error"]


@pytest.mark.parametrize("verb", sorted(_VERBS))
def test_every_verb_help_has_a_plain_description(verb: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``shmshare VERB --help`` describes the verb, in plain text (no RST backticks)."""
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert len(description) > 80, out
    assert "``" not in out and ":func:" not in out, out


def test_main_help_is_plain(capsys: pytest.CaptureFixture[str]) -> None:
    """The top-level --help has a description and no RST markup either."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "See and clean" in out and "``" not in out


def test_ls_lists_a_dead_managers_objects_as_orphans(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A SIGKILLed Manager's objects, in managers/, are listed as orphans; gc removes them."""
    code = textwrap.dedent(f"""
        import os, signal, shmshare
        m = shmshare.Manager(project_dir={str(tmp_path)!r})
        m.dict(a=1)
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    pid = int(run_python(code, check=False).stdout)
    _, out, _ = cli(capsys, "ls", "--project-dir", str(tmp_path), "--json")
    rows = json.loads(out)["objects"]
    assert rows and all(r["name"].startswith("managers/") for r in rows), rows
    assert all(r["status"] == f"orphan (owner pid {pid} gone)" for r in rows), rows
    _, out, _ = cli(capsys, "ls", "--project-dir", str(tmp_path))
    assert "managers/" in out and "orphan" in out
    _, out, _ = cli(capsys, "gc", "--project-dir", str(tmp_path))
    assert "removed managers/" in out
    assert segments_created_by(pid) == []


def test_grown_objects_show_extents_and_total_bytes(project_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """ls counts the heap extents ipcs shows and explains them; check gives an object's own."""
    d = shmshare.SharedDict("big", project_dir=project_dir)
    try:
        d.update((i, b"x" * 100) for i in range(5000))
        own = d.stats()["extents"]
        assert own > 1
        _, out, _ = cli(capsys, "ls", "--project-dir", str(project_dir))
        flat = " ".join(out.split())  # the note is wrapped
        assert "heap extent segment(s) of yours" in flat and "keys below 0x01000000" in flat
        _, out, _ = cli(capsys, "ls", "--project-dir", str(project_dir), "--json")
        assert json.loads(out)["extents"]["segments"] >= own - 1  # extent 0 is the main one
        _, out, _ = cli(capsys, "check", "big", "--project-dir", str(project_dir), "--json")
        data = json.loads(out)
        assert data["extents"] == own and data["bytes_total"] > 65536
        assert data["key"] == f"{d._seg.key:#010x}"
    finally:
        d.detach()


def test_cli_reference_shows_the_real_help(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """docs/reference/cli.md quotes ``--help`` as it is (no stale text, no raw RST)."""
    reference = Path(__file__).resolve().parent.parent / "docs" / "reference" / "cli.md"
    if not reference.is_file():
        pytest.skip("no docs/ here (an installed copy without the sources)")
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["--help"])
    real = capsys.readouterr().out.strip()
    text = reference.read_text()
    quoted = text.split("$ python -m shmshare --help\n", 1)[1].split("\n```", 1)[0].strip()
    assert quoted == real
    assert "``" not in text.replace("```", "")  # RST literals, not markdown fences


def test_ls_and_info_show_a_grown_objects_extents(project_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A dict grown past its first segment: ls and info count its extents and total
    bytes from the kernel's view, attaching nothing; a small dict shows none."""
    from shmshare._core.extents import extent_candidates

    big = shmshare.SharedDict("big", project_dir=project_dir)
    small = shmshare.SharedDict("small", project_dir=project_dir)
    for i in range(4):
        big[i] = os.urandom(300_000)  # more than the first 64 KiB: extents
    extents = [_core.stat(sid) for sid in extent_candidates(big._seg.id)]
    assert extents
    main_size = _core.stat(big._seg.id).size
    views = [_kernel_view(big._seg.id)] + [_kernel_view(x.shmid) for x in extents]
    code, out, _ = cli(capsys, "ls", "--json", "--project-dir", str(project_dir))
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["objects"]}
    assert rows["big"]["extents"] == len(extents)
    assert rows["big"]["total_bytes"] == main_size + sum(x.size for x in extents)
    assert rows["small"]["extents"] == 0
    assert rows["small"]["total_bytes"] == _core.stat(small._seg.id).size
    code, out, _ = cli(capsys, "info", "big", "--json", "--project-dir", str(project_dir))
    assert code == 0
    got = json.loads(out)
    assert (got["extents"], got["extent_bytes"]) == (len(extents), sum(x.size for x in extents))
    code, out, _ = cli(capsys, "ls", "--project-dir", str(project_dir))
    assert "extents" in out.splitlines()[0] and "total_bytes" in out.splitlines()[0]
    assert views == [_kernel_view(big._seg.id)] + [_kernel_view(x.shmid) for x in extents]
    shmshare.unlink(big)
    shmshare.unlink(small)


def test_a_dead_owners_object_that_cannot_be_removed_keeps_its_key_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """gc of a dead Manager's directory: an object whose removal fails keeps its key
    file (and so the directory), so a later gc still finds it; the rest go."""
    from shmshare.errors import ShmPermissionError
    from shmshare.naming import dirs

    pdir = tmp_path / "shm"
    owned = pdir / "managers" / "manager-dead"
    dirs.claim(owned, 1, 0)
    keep = shmshare.SharedDict("stuck", project_dir=owned, persist=True)
    other = shmshare.SharedDict("free", project_dir=owned, persist=True)
    shmids = keep._seg.id, other._seg.id
    shmshare.detach(keep)
    shmshare.detach(other)
    monkeypatch.setattr(dirs, "owner_of", lambda path: (1, False))  # its owner is gone
    real = dirs.remove

    def refusing(project_dir: Path, name: str) -> int:
        if name == "stuck":
            raise ShmPermissionError(1, "refused for the test")
        return real(project_dir, name)

    monkeypatch.setattr(dirs, "remove", refusing)
    code, out, _ = cli(capsys, "gc", "--project-dir", str(pdir))
    assert code == 0 and "kept managers/manager-dead" in out and "refused" in out, out
    assert (owned / "stuck.key").exists() and not (owned / "free.key").exists()
    assert _core.stat(shmids[0]).nattch == 0
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmids[1])
    monkeypatch.setattr(dirs, "remove", real)
    code, out, _ = cli(capsys, "gc", "--project-dir", str(pdir))
    assert code == 0 and "removed managers/manager-dead" in out, out
    assert not owned.exists()
    with pytest.raises(shmshare.SegmentRemovedError):
        _core.stat(shmids[0])


def test_a_live_owner_in_another_ipc_namespace_is_not_swept(tmp_path: Path) -> None:
    """A Manager or pytest run whose directory is swept from another IPC namespace (a
    second run in `unshare --ipc` sharing /tmp/shmshare-<uid>): its liveness token
    names nothing there, which read as "dead" and removed a live run's objects."""
    import shutil
    import subprocess
    import sys

    from shmshare._core import proc
    from shmshare.naming import dirs

    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--ipc", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --ipc is not permitted here (needs CAP_SYS_ADMIN)")
    base = tmp_path / "shm" / "managers"
    owned = base / "manager-live"
    dirs.claim(owned, os.getpid(), proc.token())
    d = shmshare.SharedDict("kept", project_dir=owned, persist=True)
    code = ("import sys; from pathlib import Path; from shmshare.naming import dirs; "
            "print(dirs.owner_of(Path(sys.argv[1]))[1], len(dirs.sweep_dead_owners("
            "Path(sys.argv[2]))))")
    out = subprocess.run(["unshare", "--ipc", sys.executable, "-c", code, str(owned),
                          str(base)], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "0"]  # unknown there, so not swept
    assert (owned / "kept.key").exists()
    d["x"] = 1
    assert d["x"] == 1
    shmshare.unlink(d)
    # Here, the same owner file with a token nobody holds is dead, and swept.
    (owned / dirs.OWNER_FILE).write_text(f"1 {(os.geteuid() << 32) | (4000 << 17) | 77} "
                                         f"{dirs.IPC_NAMESPACE}")
    assert dirs.owner_of(owned) == (1, False)
    assert dirs.sweep_dead_owners(base) == [owned] and not owned.exists()


@pytest.mark.own_ipc_namespace
def test_a_marked_test_runs_alone_in_an_ipc_namespace_of_its_own() -> None:
    """The tests above watch segments that no process is attached to; a gc run by a
    test beside them would change what they watch, so each runs in pytest again, in
    an IPC namespace of its own (tests/conftest.py)."""
    outer = os.environ.get("SHMSHARE_TEST_OWN_IPCNS")
    if outer is None:
        assert unshare_prefix() is None, "a marked test ran beside the others"
        pytest.skip("no IPC namespace of its own can be made here (unshare refused)")
    assert os.stat("/proc/self/ns/ipc").st_ino != int(outer)
