"""The process table: liveness the kernel reports (robust mutexes), not pids."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import warnings

import pytest
from helpers import JOIN_TIMEOUT, fork_child, run_python, wait_child

import shmshare
from shmshare._core import proc

TOKEN = "from shmshare._core import proc; print(proc.token(), flush=True)"


def test_own_token_alive_and_stable() -> None:
    """This process's token is alive and the same on every call."""
    assert proc.token() == proc.token()
    assert proc.alive(proc.token())
    assert not proc.alive(0)


def test_exited_process_is_dead() -> None:
    """A process that exited normally, or by os._exit, is dead at once."""
    for code in (TOKEN, TOKEN + "; import os; os._exit(0)"):
        tok = int(run_python(code).stdout)
        assert tok != proc.token()
        assert not proc.alive(tok)


def test_forked_child_gets_own_token_and_dies() -> None:
    """A forked child registers again (the parent's slot is not its own) and is
    seen dead once SIGKILLed."""
    r, w = os.pipe()
    hang_r, hang_w = os.pipe()

    def child() -> int:
        os.write(w, str(proc.token()).encode() + b"\n")
        os.read(hang_r, 1)
        return 0

    pid = fork_child(child)
    tok = int(os.read(r, 64))
    try:
        assert tok != proc.token() and proc.alive(tok)
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_child(pid)
    assert not proc.alive(tok)
    assert proc.alive(proc.token())
    for fd in (r, w, hang_r, hang_w):
        os.close(fd)


def _next_pid_is(pid: int) -> bool:
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
    except OSError:
        return False
    return True


def test_reused_pid_does_not_hide_a_dead_process() -> None:
    """A dead process stays dead when a new, live process gets its very pid."""
    r, w = os.pipe()
    pid_a = fork_child(lambda: os.write(w, str(proc.token()).encode() + b"\n") and 0)
    tok_a = int(os.read(r, 64))
    assert wait_child(pid_a) == 0
    hang_r, hang_w = os.pipe()

    def child_b() -> int:
        proc.token()
        os.write(w, b"1")
        os.read(hang_r, 1)
        return 0

    for _ in range(5):
        if not _next_pid_is(pid_a):
            pytest.skip("cannot set /proc/sys/kernel/ns_last_pid (needs CAP_SYS_ADMIN)")
        pid_b = fork_child(child_b)
        assert os.read(r, 1) == b"1"
        try:
            if pid_b == pid_a:
                assert not proc.alive(tok_a)
                break
        finally:
            os.kill(pid_b, signal.SIGKILL)
            wait_child(pid_b)
    else:
        pytest.skip("another process took the pid every time (busy machine)")
    for fd in (r, w, hang_r, hang_w):
        os.close(fd)


HOLD = """
import sys, shmshare
lock = shmshare.SharedLock(name="held", project_dir=sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def _unshare() -> str | None:
    exe = shutil.which("unshare")
    if exe is None:
        return None
    ok = subprocess.run([exe, "--pid", "--fork", "--kill-child", "true"], capture_output=True,
                        timeout=JOIN_TIMEOUT)
    return exe if ok.returncode == 0 else None


def test_holder_in_other_pid_namespace_killed_is_recovered(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Lock holder in another PID namespace (same IPC namespace), SIGKILLed while
    holding it, is recovered by a process outside that namespace."""
    exe = _unshare()
    if exe is None:
        pytest.skip("unshare --pid --fork is not available here (needs root or user namespaces)")
    pdir = tmp_path / "shm"
    lock = shmshare.SharedLock(name="held", project_dir=pdir)
    holder = subprocess.Popen([exe, "--pid", "--fork", "--kill-child", sys.executable, "-c",
                               HOLD, str(pdir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        assert not lock.acquire(timeout=0.05)
    finally:
        holder.kill()  # --kill-child: the holder in the namespace dies with unshare
        holder.wait(JOIN_TIMEOUT)
        holder.stdin.close()  # type: ignore[union-attr]
        holder.stdout.close()  # type: ignore[union-attr]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lock.acquire(timeout=JOIN_TIMEOUT)
    assert any(issubclass(c.category, shmshare.OwnerDiedWarning) for c in caught)
    assert lock.recoveries == 1
    lock.release()
    lock.unlink()
    lock.detach()
