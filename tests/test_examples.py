"""Run every script of ``examples/`` (and the ``examples/pytest_xdist`` suite) as users would.

Each example runs in a fresh interpreter with ``SHMSHARE_DIR`` and ``TMPDIR`` pointing
into the test's own ``tmp_path``, so that named objects never touch the user's default
project directory.  A test fails if the example exits non-zero, does not print its
expected result, or leaves anything behind:

* a System V segment created by *any* process of the run — the example, its pool
  workers, the client it spawned, pytest-xdist workers.  Every Python process of the
  run records its pid (a ``sitecustomize`` hook put on ``PYTHONPATH``, which also
  covers ``os.fork`` children); afterwards no segment in ``/proc/sysvipc/shm`` may
  have one of those pids as its creator;
* an object or key file in the project directory (``python -m shmshare ls``);
* a file or directory in its ``TMPDIR``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shmshare
from shmshare import _core

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# Where the shmshare under test comes from: the checkout (editable install) or
# site-packages (the installed wheel, under .ci/run).  Examples run with it first
# on the path, and never from the checkout's directory: there, ``python -m``
# would import the checkout's sources, which hold no compiled core.
TESTED = Path(shmshare.__file__).resolve().parent.parent
TIMEOUT = 120  # seconds per example

# What each example must print (a line containing this text); a new example without an
# entry here fails test_every_example_is_tested.
EXPECTED = {
    "quickstart.py": "1100 words counted",
    "segment_by_name.py": "after the last detach, the project directory holds: []",
    "pool_counters.py": "OK: 4 workers, 400 tasks: hits=400, total=79800",
    "producer_consumer.py": "OK: 3 producers x 200 items -> 4 consumers: 600 received once each",
    "numpy_pipeline.py": "OK: 4 workers processed 48 frames of 64x64 in place",
    "shm_server.py": "OK: the client answered all 5 messages",
    "alarm_records.py": "OK: the reader saw",
}
ARGS = {"shm_server.py": ["--spawn-client"]}
NOT_RUN_ALONE = {"shm_client.py"}  # started by shm_server.py --spawn-client

# Runs in every Python process of an example run: note its pid, and its forks' pids.
_PID_HOOK = """\
import os

_pid_dir = os.environ.get("SHMSHARE_EXAMPLE_PIDS")
if _pid_dir:
    def _note_pid():
        open(os.path.join(_pid_dir, str(os.getpid())), "w").close()

    _note_pid()
    os.register_at_fork(after_in_child=_note_pid)
"""


def discovered() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in NOT_RUN_ALONE)


def segments_created_by(pids: set[int]) -> list[tuple[int, int, int]]:
    """(shmid, key, cpid) of every existing segment whose creator is in ``pids``."""
    found = []
    with open("/proc/sysvipc/shm") as f:
        next(f)  # the column titles
        for line in f:
            fields = line.split()
            key, shmid, cpid = int(fields[0]), int(fields[1]), int(fields[4])
            if cpid in pids:
                found.append((shmid, key, cpid))
    return found


def isolated_env(tmp_path: Path) -> tuple[dict[str, str], Path, Path, Path]:
    """(environment, project dir, TMPDIR, pid dir) for runs isolated in ``tmp_path``."""
    project_dir = tmp_path / "proj"
    tmpdir = tmp_path / "tmp"
    pid_dir = tmp_path / "pids"
    hook_dir = tmp_path / "hook"
    for d in (tmpdir, pid_dir, hook_dir):
        d.mkdir()
    (hook_dir / "sitecustomize.py").write_text(_PID_HOOK)
    env = dict(os.environ)
    env.update(
        SHMSHARE_DIR=str(project_dir),
        TMPDIR=str(tmpdir),
        SHMSHARE_EXAMPLE_PIDS=str(pid_dir),
        # The hook first, then the shmshare under test (before any other copy).
        PYTHONPATH=os.pathsep.join(filter(None, [str(hook_dir), str(TESTED),
                                                 os.environ.get("PYTHONPATH")])),
    )
    env.pop("PYTEST_XDIST_WORKER", None)  # the inner pytest run is a run of its own
    env.pop("PYTEST_XDIST_TESTRUNUID", None)
    return env, project_dir, tmpdir, pid_dir


def run_isolated(argv: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str],
                                                            list[str]]:
    """Run ``argv`` (a Python command line) isolated in ``tmp_path``; (result, leftovers)."""
    env, project_dir, tmpdir, pid_dir = isolated_env(tmp_path)
    try:
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    finally:
        leftovers = collect_leftovers(project_dir, tmpdir, pid_dir)
    return proc, leftovers


def collect_leftovers(project_dir: Path, tmpdir: Path, pid_dir: Path) -> list[str]:
    """Everything the run left behind; segments found are removed (no cascade of failures)."""
    left = []
    pids = {int(p.name) for p in pid_dir.iterdir()}
    assert pids, "the pid hook did not run: leak check impossible"
    segments = segments_created_by(pids)
    if project_dir.exists():
        ls = subprocess.run([sys.executable, "-m", "shmshare", "ls", "--project-dir",
                             str(project_dir), "--json"], cwd=project_dir, capture_output=True,
                            text=True, timeout=60, check=True)
        left += [f"object {o['name']!r} in the project directory"
                 for o in json.loads(ls.stdout)["objects"]]
        left += [f"key file {p.relative_to(project_dir)}" for p in project_dir.rglob("*.key")]
    for shmid, key, cpid in segments:
        left.append(f"segment shmid {shmid} key {key:#x} created by pid {cpid}")
        with contextlib.suppress(OSError):
            _core.rmid(shmid)
    # pytest keeps its basetemp directories (pytest-of-<user>) on purpose.
    left += [f"{p.name} in TMPDIR" for p in tmpdir.iterdir()
             if not p.name.startswith("pytest-of-")]
    return left


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def test_every_example_is_tested() -> None:
    assert discovered() == sorted(EXPECTED), "examples and EXPECTED disagree"
    assert (EXAMPLES / "shm_client.py").exists()


@pytest.mark.parametrize("example", discovered())
def test_example(example: str, tmp_path: Path) -> None:
    proc, leftovers = run_isolated(
        [sys.executable, str(EXAMPLES / example), *ARGS.get(example, [])], tmp_path)
    assert proc.returncode == 0, _explain(proc)
    assert any(EXPECTED[example] in line for line in proc.stdout.splitlines()), _explain(proc)
    assert not leftovers, f"{example} left behind: {leftovers}\n{_explain(proc)}"


def test_pytest_xdist_example(tmp_path: Path) -> None:
    proc, leftovers = run_isolated(
        [sys.executable, "-m", "pytest", str(EXAMPLES / "pytest_xdist"), "-n", "2",
         "-p", "no:cacheprovider", "-v"], tmp_path)
    assert proc.returncode == 0, _explain(proc)
    out = proc.stdout
    assert "[gw0]" in out and "[gw1]" in out, "xdist did not run 2 workers\n" + out
    assert " passed" in out and " failed" not in out, out
    assert "expensive setup ran 1 time(s) for" in out, out
    assert not leftovers, f"the pytest_xdist example left behind: {leftovers}\n{out}"


def test_leak_check_catches_leaks(tmp_path: Path) -> None:
    """The leak check itself: a run that leaks (a forked child too) must be caught."""
    leaky = (
        "import os, shmshare\n"
        "from shmshare import _core\n"
        "d = shmshare.SharedDict('kept', persist=True)\n"  # outlives the process
        "d['x'] = 1\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    _core.shmget(_core.IPC_PRIVATE, 4096, _core.IPC_CREAT | 0o600)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "open(os.path.join(os.environ['TMPDIR'], 'forgotten'), 'w').close()\n"
        "print('leaked')\n"
    )
    proc, leftovers = run_isolated([sys.executable, "-c", leaky], tmp_path)
    assert proc.returncode == 0, _explain(proc)
    text = "\n".join(leftovers)
    assert sum(line.startswith("segment ") for line in leftovers) == 2, text
    assert "object 'kept' in the project directory" in text, text
    assert "forgotten in TMPDIR" in text, text
    # collect_leftovers removed the segments; the key file goes with the directory.
    assert not segments_created_by({int(p.name) for p in (tmp_path / "pids").iterdir()})


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P is new in Python 3.11")
def test_server_and_client_run_under_safe_path(tmp_path: Path) -> None:
    """Under ``python -P`` (script directory not on sys.path) the client still finds the server."""
    alone = subprocess.run([sys.executable, "-P", str(EXAMPLES / "shm_client.py"), "--help"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert alone.returncode == 0 and "usage:" in alone.stdout, _explain(alone)
    proc, leftovers = run_isolated(
        [sys.executable, "-P", str(EXAMPLES / "shm_server.py"), "--spawn-client"], tmp_path)
    assert proc.returncode == 0, _explain(proc)
    assert EXPECTED["shm_server.py"] in proc.stdout, _explain(proc)
    assert not leftovers, f"left behind: {leftovers}\n{_explain(proc)}"


def test_server_stops_when_its_client_fails(tmp_path: Path) -> None:
    """A client that dies before replying ends the server's wait, not its 600 s timeout."""
    failing = tmp_path / "failing_client.py"
    failing.write_text("raise SystemExit(3)\n")
    # TIMEOUT (120 s) bounds the run: a server waiting out --timeout 600 fails this test.
    proc, leftovers = run_isolated(
        [sys.executable, str(EXAMPLES / "shm_server.py"), "--spawn-client", "--client",
         str(failing), "--timeout", "600"], tmp_path)
    assert proc.returncode == 1, _explain(proc)
    assert "FAILED: the client exited with status 3 before replying to message 0" in proc.stdout
    assert not leftovers, f"left behind: {leftovers}\n{_explain(proc)}"
