"""Asynchronous exceptions (Ctrl-C, a signal handler that raises) never leave a lock held.

CPython runs signal handlers at function entry, after calls and on backward
jumps, i.e. at almost any point of shmshare's Python code.  These tests raise
from a SIGALRM handler at random moments inside every public method, then
check that no lock is held -- by this thread, or according to the lock word
in shared memory -- and that another process can take each lock at once.
"""

from __future__ import annotations

import importlib.util
import random
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import START_METHODS, fork_call

from shmshare import (
    SharedArray,
    SharedDict,
    SharedList,
    SharedNamespace,
    SharedQueue,
    SharedSet,
    SharedValue,
    check,
    detach,
    lock_of,
)

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 11), reason=(
        "CPython 3.10 checks for signals before almost every bytecode, even between a "
        "with block's end and its __exit__ call: the guarantee needs 3.11+")),
    # A list change interrupted after its redo record was written is finished by the
    # next access, which says so with OwnerDiedWarning (see test_shared_list).
    pytest.mark.filterwarnings("ignore::shmshare.OwnerDiedWarning"),
]

ROUNDS = 400  # interrupted calls per object type (all of them together: a few seconds)
OPEN_ROUNDS = 1500  # interrupted opens by name (about 1 in 100 once left a mapping behind)


class Interrupted(BaseException):
    """What the test's signal handler raises (BaseException: nothing may swallow it)."""


def _raise(signum: int, frame: object) -> None:
    raise Interrupted


@pytest.fixture
def interrupter() -> Iterator[Callable[[Callable[[], Any], float], bool]]:
    """``hit(op, delay)``: run ``op`` with SIGALRM raising Interrupted after ``delay`` s;
    True if it was interrupted."""
    old = signal.signal(signal.SIGALRM, _raise)

    def hit(op: Callable[[], Any], delay: float) -> bool:
        # The interrupt may also land inside a finalizer that runs meanwhile (ours or
        # pytest's), which CPython reports as unraisable and abandons: that report is
        # of the test's own exception, so it is dropped; any other is passed on.
        pytests_hook = sys.unraisablehook

        def hook(info: Any) -> None:
            if not isinstance(info.exc_value, Interrupted):
                pytests_hook(info)

        sys.unraisablehook = hook
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, delay)
                op()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Interrupted:
            return True
        finally:
            sys.unraisablehook = pytests_hook
        return False

    try:
        yield hit
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _dict_ops(d: SharedDict) -> list[Callable[[], Any]]:
    def locked_update() -> None:
        with d.lock:
            d["a"] = d.get("a", 0) + 1
            d.update({"b": 2, "c": 3})

    return [lambda: d.__setitem__("k", list(range(50))), lambda: d.get("k"),
            lambda: d.update({i: i for i in range(20)}), lambda: d.pop("k", None),
            lambda: d.setdefault("s", 1), lambda: list(d.items()), lambda: len(d),
            lambda: d.popitem() if d else None, lambda: d.copy(), locked_update,
            lambda: "k" in d, lambda: d.clear() if len(d) > 100 else None]


def _list_ops(lst: SharedList) -> list[Callable[[], Any]]:
    def nested() -> None:
        with lst.lock, lst.lock:
            lst.append(len(lst))

    return [lambda: lst.append(1), lambda: lst.extend(range(10)), lambda: lst.insert(0, "x"),
            lambda: lst.pop() if len(lst) else None, lambda: lst[0:5], lambda: lst.copy(),
            lambda: lst.reverse(), lambda: lst.sort(key=str), lambda: lst.count(1),
            lambda: lst.remove(1) if 1 in lst else None, nested,
            lambda: lst.__setitem__(0, "y") if len(lst) else None,
            lambda: lst.__delitem__(slice(0, 3)), lambda: lst.clear() if len(lst) > 200 else None]


def _queue_ops(q: SharedQueue) -> list[Callable[[], Any]]:
    def get() -> None:
        try:
            q.get_nowait()
        except Exception:  # queue.Empty
            pass

    return [lambda: q.put(b"x" * 100) if q.qsize() < 50 else None, get, q.qsize, q.empty,
            lambda: q.put_nowait(1) if q.qsize() < 50 else None]


def _set_ops(s: SharedSet) -> list[Callable[[], Any]]:
    return [lambda: s.add(random.random()), lambda: s.discard(1), lambda: s.update(range(5)),
            lambda: s.pop() if len(s) else None, lambda: s.copy(), lambda: s.union({1}),
            lambda: s.symmetric_difference_update({1, 2}), lambda: s.intersection_update(s)]


def _small_ops(ns: SharedNamespace, v: SharedValue) -> list[Callable[[], Any]]:
    return [lambda: setattr(ns, "x", 1), lambda: getattr(ns, "x", None),
            lambda: v.set(v.get() + 1), v.get]


def _array_ops(a: SharedArray) -> list[Callable[[], Any]]:
    def bump() -> None:
        with a.lock:
            a[0] = a[0] + 1

    def nested() -> None:
        with a.lock, a.lock:
            pass

    # (Not acquire() then release(): an exception between two calls of the caller's
    # own code is the caller's, as with threading.Lock; ``with`` is what is promised.)
    return [bump, nested, lambda: a[1:3]]


def _take_and_release(locks: list[Any]) -> int:
    for lock in locks:
        if not lock.acquire(timeout=10):
            return 1
        lock.release()
    return 0


def _assert_all_free(objs: list[Any]) -> None:
    for obj in objs:
        assert not lock_of(obj).held(), f"{obj!r}: this thread still holds its lock"
    # Another process takes every lock at once (a leaked lock would time out).
    assert fork_call(_take_and_release, [lock_of(obj) for obj in objs]) == 0, "a lock was held"
    for obj in objs:
        assert lock_of(obj)._guard.owner_tid() == 0, f"{obj!r}: the lock word names a holder"


def test_interrupts_inside_every_method_leave_no_lock_held(
        interrupter: Callable[[Callable[[], Any], float], bool]) -> None:
    """A signal handler raising at random moments inside every public method of every
    object type never leaves a lock held, and the objects stay usable and consistent."""
    d, lst, q = SharedDict(), SharedList(), SharedQueue()
    s, ns, v = SharedSet(), SharedNamespace(), SharedValue("i", 0)
    a = SharedArray(4, "int64")
    objs: list[Any] = [d, lst, q, s, ns, v, a]
    groups = [_dict_ops(d), _list_ops(lst), _queue_ops(q), _set_ops(s), _small_ops(ns, v),
              _array_ops(a)]
    rng = random.Random(1234)
    try:
        for ops in groups:
            hits = sum(interrupter(rng.choice(ops), rng.uniform(1e-6, 6e-5))
                       for _ in range(ROUNDS))
            assert hits >= ROUNDS // 20, "too few calls were interrupted to prove anything"
        _assert_all_free(objs)
        for obj in (d, lst, q, s, ns, v):
            check(obj)
    finally:
        for obj in objs:
            detach(obj)


def test_interrupt_right_after_the_lock_is_taken(
        interrupter: Callable[[Callable[[], Any], float], bool]) -> None:
    """Interrupts landing on each bytecode of ``with obj.lock:`` entry and exit (swept by
    a growing delay) never leave it held."""
    d = SharedDict()

    def block() -> None:
        with d.lock:
            pass

    try:
        for i in range(600):
            interrupter(block, 1e-6 + i * 2e-7)
        _assert_all_free([d])
    finally:
        d.detach()


def _torture_module() -> Any:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "ctrl_c_torture.py"
    spec = importlib.util.spec_from_file_location("ctrl_c_torture", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("method", START_METHODS)
def test_ctrl_c_torture(method: str) -> None:
    """SIGINT to a whole process group at random moments of multi-process work on a
    Manager dict, list and queue: every process still uses every object afterwards and
    exits (no lock left held), and no segment or key file is left behind.  A few runs
    per start method; benchmarks/ctrl_c_torture.py --runs 200 is the long version."""
    torture = _torture_module()
    rng = random.Random(f"ctrl-c-{method}")
    for _ in range(2):
        out = torture.one_run(method, rng, timeout=30.0)
        assert not out.hung, out.hang_report
        assert out.returncode == 0, out.hang_report
        assert out.leaked_segments == [] and out.leftover_files == [], out


@pytest.mark.slow
@pytest.mark.parametrize("method", START_METHODS)
def test_ctrl_c_torture_pool(method: str) -> None:
    """The same for multiprocessing.Pool tasks on shmshare and Manager dicts, lists,
    queues and locks: no hang (a lock left held by a live, idle worker would hang the
    main process's use of it), no failure, no leak.  --pool --runs 200 is the long one."""
    torture = _torture_module()
    rng = random.Random(f"ctrl-c-pool-{method}")
    for _ in range(2):
        out = torture.one_run(method, rng, timeout=30.0, pool=True)
        # A hang of CPython's own Pool.terminate() (gh-96995, see pool_terminate_hang)
        # is told apart by its stacks: it involves no lock of ours, only the leak checks.
        assert not out.hung_by_us, out.hang_report
        assert out.cpython_pool_hang or out.returncode == 0, out.hang_report
        assert out.leaked_segments == [] and out.leftover_files == [], out


# The main process's faulthandler dump of a hung Pool run (forkserver, this suite,
# 2026-12-02): every worker had been SIGTERMed, one of them inside its result put.
_GH96995_DUMP = """\
Thread 0x00007eff281656c0 (most recent call first):
  File "/usr/lib/python3.11/multiprocessing/synchronize.py", line 95 in __enter__
  File "/usr/lib/python3.11/multiprocessing/queues.py", line 376 in put
  File "/usr/lib/python3.11/multiprocessing/pool.py", line 562 in _handle_tasks
  File "/usr/lib/python3.11/threading.py", line 982 in run
  File "/usr/lib/python3.11/threading.py", line 1045 in _bootstrap_inner
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Current thread 0x00007eff29a1cb80 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 1139 in _wait_for_tstate_lock
  File "/usr/lib/python3.11/threading.py", line 1119 in join
  File "/usr/lib/python3.11/multiprocessing/pool.py", line 720 in _terminate_pool
  File "/usr/lib/python3.11/multiprocessing/util.py", line 224 in __call__
  File "/usr/lib/python3.11/multiprocessing/pool.py", line 657 in terminate
  File "/usr/lib/python3.11/multiprocessing/pool.py", line 739 in __exit__
  File "/tmp/shms-ctrlc-4yvzghje/app.py", line 79 in <module>
"""


def test_pool_terminate_hang_is_told_by_its_stacks() -> None:
    """Only CPython's gh-96995 dump is excused: the task handler waiting for the result
    queue's lock while terminate() joins it.  The same Pool stuck anywhere else, or a
    thread waiting in one of our locks, still counts as a hang."""
    torture = _torture_module()
    assert torture.pool_terminate_hang(_GH96995_DUMP)
    ours = _GH96995_DUMP.replace(
        'File "/usr/lib/python3.11/multiprocessing/synchronize.py", line 95 in __enter__',
        'File "/site-packages/shmshare/objects/shared_object.py", line 90 in __enter__')
    assert not torture.pool_terminate_hang(ours)
    elsewhere = _GH96995_DUMP.replace("in _terminate_pool", "in _help_stuff_finish")
    assert not torture.pool_terminate_hang(elsewhere)
    assert not torture.pool_terminate_hang("")


@pytest.mark.parametrize("kind", ["array", "dict"])
def test_lock_of_detached_object_refuses(kind: str) -> None:
    """Using the lock of a detached object raises ValueError (it once read unmapped memory)."""
    obj: Any = SharedArray(4, "int64") if kind == "array" else SharedDict()
    lock = obj.lock
    obj.detach()
    with pytest.raises(ValueError, match="detached"), lock:
        pass
    with pytest.raises(ValueError, match="detached"):
        lock.acquire(timeout=0)
    assert not lock.held()
def _key_file_free(path: Path) -> int:
    import fcntl
    import os
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
    finally:
        os.close(fd)
    return 0


def _mappings_of(shmid: int) -> int:
    """How many mappings of System V segment ``shmid`` this process has (its inode
    in /proc/self/maps is the shmid)."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps
                   if "/SYSV" in line and int(line.split()[4]) == shmid)


def _interrupted_opens(pdir: Path, shmid: int) -> int:
    """In a forked child: open and detach the name ``held`` OPEN_ROUNDS times, each under
    an interrupt at a random moment; 0 if no key-file descriptor stayed open and no
    mapping of the segment ``shmid`` stayed attached."""
    import gc
    import os

    path = pdir / "held.key"
    rng = random.Random(99)
    hits = 0
    inherited = _mappings_of(shmid)  # the parent's, mapped in this child too
    signal.signal(signal.SIGALRM, _raise)
    for _ in range(OPEN_ROUNDS):
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-6, 1.5e-4))
                SharedDict("held", project_dir=pdir, create=False).detach()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Interrupted:
            hits += 1
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    gc.collect()  # objects whose open was interrupted midway are released now
    if hits < OPEN_ROUNDS // 20:
        return 2  # too few opens were interrupted to prove anything
    open_fds = [fd for fd in os.listdir("/proc/self/fd")
                if os.path.realpath(f"/proc/self/fd/{fd}") == str(path)]
    if open_fds:
        return 3
    return 4 if _mappings_of(shmid) != inherited else 0


def test_interrupted_opens_by_name_leave_the_key_file_free(tmp_path: Path) -> None:
    """Interrupts at random moments of opening an existing name (the C fast path and
    the Python around it) never leave its key file locked, or open, in the process,
    nor its segment mapped: the mapping is owned from the shmat on (the C call that
    attaches is the allocator of the object whose destructor detaches)."""
    pdir = tmp_path / "proj"
    d = SharedDict("held", project_dir=pdir)
    try:
        got = fork_call(_interrupted_opens, pdir, d.segment.id)
        assert got != 3, "a key-file descriptor stayed open"
        assert got != 4, "a mapping of the segment stayed attached after its open was interrupted"
        assert got == 0, "too few opens were interrupted to prove anything"
        assert fork_call(_key_file_free, pdir / "held.key") == 0, "the key file stayed locked"
    finally:
        d.unlink()
        d.detach()
