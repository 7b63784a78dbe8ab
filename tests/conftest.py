"""Fixtures shared by the whole suite: per-test project directories, heaps on anonymous
segments, and leak checks that fail any test leaving a segment behind."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import children, is_process_table, unshare_prefix

from shmshare import _core
from shmshare._core import proc
from shmshare._core.heap import Heap
from shmshare.naming.keys import KeyFile, key_file_path, list_names
from shmshare.naming.lifecycle import destroy, find_existing
from shmshare.pytest_plugin import run_shared_dict

pytest_plugins = ["pytester", "redis_server"]  # redis_server: the Redis store fixtures

proc.token()  # attach the per-user process table now, so the leak check knows its id

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def _cwd_outside_the_package() -> Iterator[None]:
    """Run every test (and every child it starts) from tests/, not the checkout root.

    ``python -c`` and ``python -m`` put the working directory first on sys.path;
    from the root, the checkout's ``shmshare/`` (sources without the compiled
    core) would shadow the installed wheel that .ci/run tests.
    """
    before = os.getcwd()
    os.chdir(TESTS)
    yield
    os.chdir(before)


# Tests marked ``own_ipc_namespace`` watch what happens to a segment nobody is attached
# to (its shm_lpid, whom gc names as its last user).  Every gc inspects all such
# segments of the user, so a gc that another worker runs beside them changes what
# they watch.  Each runs alone instead: pytest again, on that one test, in an IPC
# namespace of its own (``unshare --ipc``, or with a user namespace where that is
# refused).  Where neither is permitted it runs here, beside the others, as before.
_INNER = "SHMSHARE_TEST_OWN_IPCNS"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):  # type: ignore[no-untyped-def]
    if os.environ.get(_INNER) or pyfuncitem.get_closest_marker("own_ipc_namespace") is None:
        return None
    import subprocess

    config = pyfuncitem.config
    if _PREFIX not in config.stash:
        config.stash[_PREFIX] = unshare_prefix()
    prefix = config.stash[_PREFIX]
    if prefix is None:
        return None  # run here, beside the other tests
    test = f"{pyfuncitem.path}::{pyfuncitem.nodeid.split('::', 1)[1]}"
    env = {**os.environ, _INNER: str(os.stat("/proc/self/ns/ipc").st_ino)}
    env.pop(_TIMES, None)  # the run's books are this process's, not the inner run's
    out = subprocess.run([*prefix, sys.executable, "-m", "pytest", test, "-q", "-rs",
                          "-p", "no:xdist", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, env=env, cwd=TESTS, timeout=600)
    if out.returncode != 0:
        pytest.fail(f"{test}, run alone in an IPC namespace of its own, failed "
                    f"(exit {out.returncode}):\n{out.stdout}\n{out.stderr}", pytrace=False)
    skipped = [line for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    if skipped:  # skipped inside: say so here too, with its reason
        pytest.skip(f"in an IPC namespace of its own: {skipped[0]}")
    return True


_PREFIX = pytest.StashKey["list[str] | None"]()


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


def _ours() -> set[int]:
    """Segments created by this process or by children it forked through helpers."""
    me = {os.getpid()} | children
    out = set()
    tables = proc.table_shmids()  # the per-user process table lives for good
    for sid in _core.list_ids():
        if sid in tables:
            continue
        try:
            st = _core.stat(sid)
        except OSError:
            continue
        if st.cpid in me and not is_process_table(st.key):
            out.add(sid)
    return out



@pytest.fixture(autouse=True)
def _no_segment_leak(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test after which a segment it (or its forked children) created still exists."""
    before = _ours()
    _log_time(request.node.nodeid, "start")
    yield
    _log_time(request.node.nodeid, "end")
    gc.collect()
    leaked = _ours() - before
    for sid in leaked:  # clean up so that one failure does not cascade
        with contextlib.suppress(OSError):
            _core.rmid(sid)
    assert not leaked, f"test leaked segments: {sorted(leaked)}"


class HeapFactory:
    """Makes heaps on anonymous segments and tears all of them down."""

    def __init__(self) -> None:
        self.made: list[tuple[Heap, _core.Attachment]] = []

    def __call__(self, size: int = 1 << 20, *, anonymous: bool = True,
                 mode: int = 0o600) -> Heap:
        total = size + 4096
        sid = _core.shmget(_core.IPC_PRIVATE, total, _core.IPC_CREAT | 0o600)
        att = _core.shmat(sid, total)
        _core.rmid(sid)
        heap = Heap.create(att, 4096, size, mode=mode, anonymous=anonymous)
        self.made.append((heap, att))
        return heap

    def close_all(self) -> None:
        for heap, att in self.made:
            if heap._h is not None:
                heap.destroy_extents()
                heap.close()
            att.detach()
        self.made.clear()


@pytest.fixture
def make_heap() -> Iterator[HeapFactory]:
    f = HeapFactory()
    try:
        yield f
    finally:
        f.close_all()


@pytest.fixture
def heap(make_heap: HeapFactory) -> Heap:
    return make_heap()


def record_torture(shared_dict, shared_lock, kills: int, ops: int, lost: int) -> None:  # type: ignore[no-untyped-def]
    """Add one crash-torture test's counts to the run-wide totals (all xdist workers)."""
    with shared_lock:
        totals = shared_dict.get("crash-torture", {"tests": 0, "kills": 0, "ops": 0, "lost": 0})
        for k, v in (("tests", 1), ("kills", kills), ("ops", ops), ("lost", lost)):
            totals[k] += v
        shared_dict["crash-torture"] = totals


def pytest_terminal_summary(terminalreporter, config) -> None:  # type: ignore[no-untyped-def]
    """Print the crash-torture totals the workers gathered (shmshare's own plugin at work)."""
    d = run_shared_dict(config)
    if d is None:
        return
    with d:
        t = d.get("crash-torture")
    if t:
        terminalreporter.write_line(
            f"crash torture: {t['kills']} SIGKILLs in {t['tests']} tests, {t['ops']} "
            f"acknowledged operations, lost {t['lost']}")


# Run-wide: segments left when the run ends, with the tests that were running
# when each was made.  The per-test check above sees only segments whose
# creator it knows (this process and children forked through helpers); one
# made by a spawned, forkserver or subprocess child escapes it, and then this
# report names the suspects.  It only reports: .ci/run fails on any leak.
_TIMES = "SHMSHARE_TEST_TIMES"  # file of "time start|end nodeid" lines, all workers


def _log_time(nodeid: str, what: str) -> None:
    path = os.environ.get(_TIMES)
    if path:
        with open(path, "a") as f:  # O_APPEND: lines of two workers never mix
            f.write(f"{time.time():.3f} {what} {nodeid}\n")


def _segments_now() -> set[int]:
    """The segments that exist, but for process tables (kept for good, by design)."""
    out = set()
    for sid in _core.list_ids():
        try:
            if not is_process_table(_core.stat(sid).key):
                out.add(sid)
        except OSError:
            continue
    return out


def _drop_test_users_tables(before: set[int]) -> None:
    """Remove the process tables this run's children made for the other users they
    ran as (tests/test_security.py), once nothing uses them: only the run knows that
    every worker is done."""
    for sid in set(_core.list_ids()) - before:
        with contextlib.suppress(OSError):
            st = _core.stat(sid)
            if is_process_table(st.key) and st.uid != os.geteuid() and st.nattch == 0:
                _core.rmid(sid)


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller keeps the books
    fd, path = tempfile.mkstemp(prefix="shmshare-test-times-")
    os.close(fd)
    os.environ[_TIMES] = path  # inherited by the workers, started after this
    config.stash[_BEFORE] = (_segments_now(), path)
    config.stash[_ALL_BEFORE] = set(_core.list_ids())


_BEFORE = pytest.StashKey[tuple[set[int], str]]()
_ALL_BEFORE = pytest.StashKey[set[int]]()


def _suspects(path: str, made: float) -> list[str]:
    """Tests running within a second of ``made`` (ctime has one-second resolution)."""
    spans: dict[str, list[float]] = {}
    with open(path) as f:
        for line in f:
            t, what, nodeid = line.rstrip("\n").split(" ", 2)
            span = spans.setdefault(nodeid, [float(t), float("inf")])
            if what == "end":
                span[1] = float(t)
    return [n for n, (a, b) in spans.items() if a - 1 <= made <= b + 1]


def _what(shmid: int, size: int) -> str:
    """The object a leftover segment holds, from its identity header."""
    from shmshare.naming.header import Header

    try:
        att = _core.shmat(shmid, size, readonly=True)
    except OSError as exc:
        return f"(not readable: {exc})"
    try:
        view = att.memoryview()
        try:
            h = Header.read(view)
        finally:
            view.release()
    finally:
        att.detach()
    if h is None:
        return "(no shmshare header)"
    return f"{h.kind} {h.name or '(anonymous)'!r} (key file inode {h.ino})"


def _leak_report(config) -> list[str]:  # type: ignore[no-untyped-def]
    if _BEFORE not in config.stash:
        return []
    before, path = config.stash[_BEFORE]
    lines = []
    for sid in sorted(_segments_now() - before):
        try:
            st = _core.stat(sid)
        except OSError:
            continue
        who = ", ".join(_suspects(path, st.ctime)) or "no test (a fixture or the run itself)"
        lines.append(f"shmid {sid} key {st.key:#010x} {_what(sid, st.size)}, {st.size} "
                     f"bytes nattch {st.nattch} "
                     f"made {time.strftime('%H:%M:%S', time.localtime(st.ctime))} by pid "
                     f"{st.cpid}, while running: {who}")
    return lines


@pytest.hookimpl(trylast=True)  # after the pytest plugin removed the run's own objects
def pytest_unconfigure(config) -> None:  # type: ignore[no-untyped-def]
    if _BEFORE not in config.stash:
        return
    gc.collect()
    _drop_test_users_tables(config.stash[_ALL_BEFORE])
    try:
        lines = _leak_report(config)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(config.stash[_BEFORE][1])
    for line in lines:
        print(f"LEFT BEHIND: {line}", file=sys.stderr)
