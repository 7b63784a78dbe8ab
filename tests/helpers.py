"""Process helpers for the tests: every child is reaped, every wait is bounded."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import select
import shutil
import signal
import subprocess
import sys

START_METHODS = ["fork", "spawn", "forkserver"]
JOIN_TIMEOUT = 60  # seconds

children: set[int] = set()  # pids forked by the helpers (the leak check looks at them too)


def run_python(code: str, *args: str, timeout: float = JOIN_TIMEOUT,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in an unrelated Python process (not a fork of this one)."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def fork_child(fn, *args) -> int:  # type: ignore[no-untyped-def]
    """Run ``fn(*args)`` in an os.fork() child that always leaves with os._exit; its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            r = fn(*args)
            code = r if isinstance(r, int) else 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    children.add(pid)
    return pid


def own_ipc_namespace() -> str:
    """Move this (single-threaded, forked) process into an IPC namespace of its own:
    no other test's segments in it, and none of its own left when it exits.
    Returns how ("ipc", "user+ipc"), or "" if neither is permitted here."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newipc, clone_newuser = 0x08000000, 0x10000000
    if libc.unshare(clone_newipc) == 0:
        return "ipc"
    if libc.unshare(clone_newuser | clone_newipc) == 0:
        return "user+ipc"
    return ""


def unshare_prefix() -> list[str] | None:
    """The command prefix that runs a program in an IPC namespace of its own:
    ``unshare --ipc``, or with a user namespace where that is refused; None
    where neither is permitted (or there is no unshare)."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    for prefix in ([exe, "--ipc"], [exe, "--user", "--map-root-user", "--ipc"]):
        if subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0:
            return prefix
    return None


def fork_call(fn, *args, timeout: float = JOIN_TIMEOUT) -> int:  # type: ignore[no-untyped-def]
    """Run ``fn(*args)`` in a forked child (see fork_child) and return its exit code."""
    return wait_pid(fork_child(fn, *args), timeout)



def wait_pid(pid: int, timeout: float = JOIN_TIMEOUT) -> int:
    """Reap ``pid`` within ``timeout`` seconds (SIGKILL it past that); its exit code."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not finish within {timeout} s")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


wait_child = wait_pid


def mp_run(method: str, target, *args, timeout: float = JOIN_TIMEOUT) -> int:  # type: ignore[no-untyped-def]
    """Run ``target(*args)`` in a multiprocessing Process of start ``method``; its exitcode."""
    p = mp.get_context(method).Process(target=target, args=args)
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        raise AssertionError(f"{method} child did not finish within {timeout} s")
    return p.exitcode  # type: ignore[return-value]


def segments_created_by(*pids: int) -> list[int]:
    """Ids of the segments that still exist and were created by one of ``pids``.

    Tests run in parallel (xdist), so "no segment left" must be asked about
    specific creators, never as a before/after difference of the whole system.
    """
    from shmshare import _core

    found = []
    for sid in _core.list_ids():
        try:
            if _core.stat(sid).cpid in pids:
                found.append(sid)
        except OSError:
            continue
    return found


def is_process_table(key: int) -> bool:
    """A per-user process table's key (_core/proc.py): one per uid, made by whichever
    process of that uid needs it first (a test's child run as another user, say), and
    kept for good, by design -- as .ci/run's leak check knows."""
    from shmshare._core import proc

    return key >> 24 == proc._KEY_BASE >> 24


def _hold_lock(obj, go: int, held: int, go_w: int) -> None:  # type: ignore[no-untyped-def]
    import shmshare

    os.close(go_w)  # the parent's alone: a parent that died reads as b"", and we leave
    with shmshare.lock_of(obj):  # (a namespace's ``lock`` is an attribute of the user's)
        os.write(held, b"held")
        os.read(go, 1)  # until told


@contextlib.contextmanager
def lock_held_elsewhere(obj):  # type: ignore[no-untyped-def]
    """``obj.lock`` held by a forked child from the start of the block; the function
    yielded lets it go (and reaps the child, which must exit 0); the block's end does."""
    go_r, go_w = os.pipe()
    held_r, held_w = os.pipe()
    pid = 0

    def release() -> None:
        nonlocal pid
        if pid:
            os.write(go_w, b"x")
            code, pid = wait_pid(pid), 0
            assert code == 0

    try:
        pid = fork_child(_hold_lock, obj, go_r, held_w, go_w)
        os.close(held_w)  # the child's alone now: a child that died reads as b""
        held_w = -1
        assert os.read(held_r, 4) == b"held", "the child could not take the lock"
        yield release
        release()
    finally:
        if pid:
            os.write(go_w, b"x")
            wait_pid(pid)
        for fd in (go_r, go_w, held_r, held_w):
            if fd >= 0:
                os.close(fd)
