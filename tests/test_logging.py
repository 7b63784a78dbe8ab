"""The ``shmshare`` logger: silent by default; sweeps, gc removals and lock recoveries
are logged at levels a user can filter."""

from __future__ import annotations

import logging
import os
import signal
import textwrap
import warnings
from pathlib import Path

import pytest
from helpers import fork_call, run_python

import shmshare
from shmshare.cli import main
from shmshare.naming.lifecycle import sweep


def _killed_user(project_dir: Path, name: str) -> int:
    """A named dict whose only user was SIGKILLed; that user's pid."""
    code = textwrap.dedent("""
        import os, signal, sys
        from shmshare import SharedDict
        d = SharedDict(sys.argv[2], project_dir=sys.argv[1])
        d["x"] = 1
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = run_python(code, str(project_dir), name, check=False)
    assert proc.returncode == -signal.SIGKILL
    return int(proc.stdout)


def test_silent_by_default() -> None:
    """The library adds only a NullHandler, when it first logs: nothing is printed
    unless the app asks."""
    from shmshare._log import logger

    logger.debug("first use")
    handlers = logging.getLogger("shmshare").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
    assert not [h for h in handlers if not isinstance(h, logging.NullHandler)]


@pytest.mark.own_ipc_namespace
def test_sweep_logs_each_removal_at_info(project_dir: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """The sweep on first open removes a crashed process's objects: at INFO, with why."""
    dead = _killed_user(project_dir, "crashed")
    (project_dir / "stale.key").write_text("")
    with caplog.at_level(logging.INFO, logger="shmshare"):
        sweep(project_dir)
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("shmshare", logging.INFO,
            f"removed crashed in {project_dir}: nattch 0 and not persistent (last user pid "
            f"{dead}: gone)") in messages, messages
    assert ("shmshare", logging.INFO, f"removed stale key file stale.key in {project_dir}: "
            "the key file names no segment") in messages, messages


def test_quiet_sweep_is_debug_only(project_dir: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A sweep that finds nothing says so at DEBUG, and nothing at INFO."""
    project_dir.mkdir()
    with caplog.at_level(logging.INFO, logger="shmshare"):
        sweep(project_dir)
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="shmshare"):
        sweep(project_dir)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_gc_removals_are_logged(project_dir: Path, caplog: pytest.LogCaptureFixture,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """gc logs what it removes; a dry run logs nothing (it removes nothing)."""
    _killed_user(project_dir, "crashed")
    with caplog.at_level(logging.INFO, logger="shmshare"):
        assert main(["gc", "--dry-run", "--project-dir", str(project_dir)]) == 0
        assert caplog.records == []
        assert main(["gc", "--project-dir", str(project_dir)]) == 0
    assert any(r.levelno == logging.INFO and "removed crashed" in r.getMessage()
               for r in caplog.records)
    capsys.readouterr()


def _die_holding(lock: object) -> int:
    lock.acquire()  # type: ignore[attr-defined]
    os._exit(0)


def test_lock_recovery_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Taking over a dead holder's lock logs a WARNING (besides OwnerDiedWarning)."""
    d = shmshare.SharedDict()
    try:
        assert fork_call(_die_holding, d.lock) == 0
        with caplog.at_level(logging.WARNING, logger="shmshare"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)
            with d.lock:
                pass
        (record,) = [r for r in caplog.records if r.name.startswith("shmshare")]
        assert record.levelno == logging.WARNING
        assert record.getMessage().startswith("lock recovered: a process died holding")
    finally:
        d.detach()


def _die_inside_with(sem: object) -> int:
    sem.__enter__()  # type: ignore[attr-defined]  # a held permit (with sem:), not a consumed one
    os._exit(0)


def test_permit_recovery_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Permits taken back from a dead holder are logged as a WARNING too."""
    from shmshare.objects.sync import SharedSemaphore

    sem = SharedSemaphore(1)
    try:
        assert fork_call(_die_inside_with, sem) == 0
        with caplog.at_level(logging.WARNING, logger="shmshare"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)
            assert sem.acquire(timeout=30)
            sem.release()
        want = "recovered: a process died holding 1 permit"
        assert any(r.levelno == logging.WARNING and r.getMessage().startswith(want)
                   for r in caplog.records), caplog.records
    finally:
        sem.detach()


def test_heap_growth_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A dict that outgrows its segment logs each growth at INFO, with the new count."""
    d = shmshare.SharedDict()
    try:
        with caplog.at_level(logging.INFO, logger="shmshare"):
            d.update((i, b"x" * 100) for i in range(2000))
        grew = [r.getMessage() for r in caplog.records if "grew from" in r.getMessage()]
        extents = d.stats()["extents"]
        assert extents > 1 and grew, caplog.records
        assert grew[-1].endswith(f"grew from {extents - 1} to {extents} extent(s) (at most 64)")
    finally:
        d.detach()


def test_heap_growth_is_logged_on_the_str_key_fast_path(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    """``d[str] = v`` (one C call) logs every growth too: that store never grows the
    heap itself, it leaves growing to the general path, which reports it."""
    d = shmshare.SharedDict()
    try:
        with caplog.at_level(logging.INFO, logger="shmshare"):
            for i in range(2000):
                d[f"key{i}"] = b"x" * 100
        grew = [r.getMessage() for r in caplog.records if "grew from" in r.getMessage()]
        extents = d.stats()["extents"]
        assert extents > 1, "the heap never grew: the test proves nothing"
        assert len(grew) == extents - 1, grew
        assert grew[-1].endswith(f"grew from {extents - 1} to {extents} extent(s) (at most 64)")
        assert d["key0"] == d["key1999"] == b"x" * 100
    finally:
        d.detach()


def test_core_does_not_import_the_logger() -> None:
    """The C wrappers report growth through a hook; they never import ``shmshare._log``."""
    out = run_python("import sys, shmshare._core.heap, shmshare._core.queue\n"
                     "print('shmshare._log' in sys.modules)")
    assert out.stdout.strip() == "False"


def test_logging_is_imported_only_when_shmshare_logs() -> None:
    """A process that never logs never imports logging (start-up time); the first
    record makes the logger, with its NullHandler, and a warning still prints
    nothing."""
    code = textwrap.dedent("""
        import sys
        from shmshare import SharedDict
        d = SharedDict({"a": 1})
        d.detach()
        print("logging" in sys.modules)
        from shmshare._log import logger
        logger.warning("recovered a lock")
        import logging
        print([type(h).__name__ for h in logging.getLogger("shmshare").handlers])
    """)
    proc = run_python(code)
    assert proc.stdout.split("\n")[:2] == ["False", "['NullHandler']"]
    assert proc.stderr == ""
