"""Ctrl-C torture: SIGINT to the whole process group at a random moment of Pool work.

Each run starts a fresh Python process (its own session and process group)
that opens a ``shmshare.Manager`` dict, list, queue and Lock, starts three
``multiprocessing`` workers of the chosen start method which, like the main
process, hammer all four (``with d.lock:`` blocks included), and reports when
work is under way.  The torturer then sends SIGINT to the whole group --
what a terminal's Ctrl-C does -- at a random moment.  Every process catches
the KeyboardInterrupt and uses every object once more before it exits, so a
lock left held by any live process of the group hangs the run.  (Workers
are plain Processes, not a Pool: a Pool's own task and result queues take
multiprocessing locks that a Ctrl-C can leave held by a worker -- a Pool
hang of its own, seen in about 1 run in 4 here, which would hide ours.)
``--pool`` runs POOL_APP instead: a real ``multiprocessing.Pool`` whose
workers raise the Ctrl-C only inside their tasks (see there), on shmshare
objects and ``Manager`` ones alike.  Inside ``unshare --ipc`` the run also
checks that ``/proc/sysvipc/shm`` holds no segment more than before.
It counts:

* hangs: the group did not exit within ``--timeout`` seconds (it is then
  SIGKILLed, with a py-spy-free stack report: the /proc wchan of every member
  and the Python stacks faulthandler dumps on SIGUSR1);
* hangs of CPython's Pool.terminate() (gh-96995; see ``pool_terminate_hang``),
  counted apart, since they involve no lock of ours -- any other hang counts;
* failed runs: the program exited non-zero (its stderr is the report);
* leaked segments: System V segments created by any member of the group that
  still exist once every member has exited -- after a hang, once ``shmshare
  gc`` has collected what the SIGKILLed group left (counted apart);
* leftover key files in the run's project directory.

Usage::

    python benchmarks/ctrl_c_torture.py --runs 200            # every start method
    python benchmarks/ctrl_c_torture.py --runs 20 --method fork
    unshare --ipc nice -n 10 python benchmarks/ctrl_c_torture.py --pool --budget 300

The test suite runs a few runs per method (tests/test_interrupts.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

METHODS = ("fork", "spawn", "forkserver")

# The program each run executes (argv: start method, project dir).
APP = r'''
import faulthandler, multiprocessing as mp, os, signal, sys, time
import shmshare

faulthandler.register(signal.SIGUSR1, all_threads=True)  # the torturer's hang report
# Started as a background job, a process inherits SIGINT ignored and Python then
# installs no KeyboardInterrupt handler: Ctrl-C must reach us whoever started us.
signal.signal(signal.SIGINT, signal.default_int_handler)

def ops(d, lst, q, lock, i):
    pid = os.getpid()
    d[f"pid-{pid}"] = i
    with d.lock:
        d["n"] = d.get("n", 0) + 1
        d[i % 17] = list(range(i % 50))
    lst.append(i)
    if len(lst) > 200:
        with lst.lock:
            del lst[:100]
    q.put(i)
    try:
        q.get(timeout=0.01)
    except Exception:
        pass
    if lock is not None:
        with lock:
            d["locked"] = i

def worker(d, lst, q, lock, started):
    try:
        started.set()
        i = 0
        while True:
            ops(d, lst, q, lock, i)
            i += 1
    except KeyboardInterrupt:
        # Survive the Ctrl-C and use every object once more: a lock left held by
        # any live process of the group (this one included) hangs here.
        ops(d, lst, q, lock, -1)

if __name__ == "__main__":
    method, pdir, with_lock = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    ctx = mp.get_context(method)
    procs = []
    try:
        with shmshare.Manager(project_dir=pdir) as m:
            d, lst, q = m.dict(), m.list(), m.Queue()
            lock = m.Lock() if with_lock else None
            started = [ctx.Event() for _ in range(3)]
            procs = [ctx.Process(target=worker, args=(d, lst, q, lock, e)) for e in started]
            for p in procs:
                p.start()
            for e in started:
                e.wait()
            print("working", flush=True)
            try:
                i = 0
                while True:
                    ops(d, lst, q, lock, i)
                    i += 1
            except KeyboardInterrupt:
                ops(d, lst, q, lock, -1)
                for p in procs:
                    p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join()
'''


# The Pool program (argv: start method, project dir): a multiprocessing.Pool
# whose tasks, and the main process meanwhile, use shmshare objects (anonymous
# SharedDict, SharedList, SharedQueue and SharedLock, passed to the workers by
# reference) and Manager ones (dict, list, Queue, Lock).  A worker's Ctrl-C
# raises inside its task, which catches it, uses every object once more and
# returns: the worker lives on, idle.  After the Ctrl-C the main process uses
# every object once more while those workers are alive (a lock left held by a
# live, idle worker hangs here), then leaves the ``with Pool`` block
# (terminate(): the workers are killed) and uses everything once more.  In a
# worker, a Ctrl-C outside its task is ignored: the pool's own queues are
# guarded by multiprocessing locks whose Python ``__enter__`` a
# KeyboardInterrupt can leave acquired (a CPython Pool hang, seen 1 run in 3
# here, that would hide ours).
POOL_APP = r'''
import faulthandler, multiprocessing as mp, os, signal, sys
if sys.argv[4] != "control":
    import shmshare

faulthandler.register(signal.SIGUSR1, all_threads=True)  # the torturer's hang report
# Started as a background job, a process inherits SIGINT ignored and Python then
# installs no KeyboardInterrupt handler: Ctrl-C must reach us whoever started us.
signal.signal(signal.SIGINT, signal.default_int_handler)
OBJS = None
IN_TASK = False

def on_sigint(signum, frame):
    if IN_TASK:
        raise KeyboardInterrupt

class LocalQueue(list):
    # --control: no lock inside (queue.Queue's own Condition is not Ctrl-C safe).
    def put(self, x):
        self.append(x)

    def get(self, timeout=None):
        return self.pop(0)

def local_objs():
    # --control: each process's own plain objects, no lock anywhere: all that is
    # shared is the Pool's own machinery.
    import contextlib
    return ({}, [], LocalQueue(), contextlib.nullcontext()) * 2

def init(objs):
    global OBJS
    OBJS = local_objs() if objs is None else objs
    signal.signal(signal.SIGINT, on_sigint)

def ops(objs, i):
    sd, sl, sq, slock, md, ml, mq, mlock = objs
    for d, lst, q, lock in ((sd, sl, sq, slock), (md, ml, mq, mlock)):
        d[f"pid-{os.getpid()}"] = i
        with lock:
            d["n"] = d.get("n", 0) + 1
        lst.append(i)
        if len(lst) > 100:
            del lst[:50]
        q.put(i)
        try:
            q.get(timeout=0.01)
        except Exception:
            pass
    with getattr(sd, "lock", slock):   # a multiprocessing dict has no .lock
        sd[i % 7] = list(range(i % 30))
    with getattr(sl, "lock", slock):
        sl.append(-i)
        sl.pop()

def task(i):
    global IN_TASK
    IN_TASK = True
    try:
        for j in range(5):
            ops(OBJS, i * 5 + j)
    except KeyboardInterrupt:
        IN_TASK = False
        ops(OBJS, -1)
    finally:
        IN_TASK = False
    return i

if __name__ == "__main__":
    method, pdir = sys.argv[1], sys.argv[2]
    control = sys.argv[4] == "control"   # the Pool alone: no shared object at all
    ctx = mp.get_context(method)
    import contextlib
    with (contextlib.nullcontext() if control else shmshare.Manager(project_dir=pdir)) as m:
        objs = local_objs() if control else (
            shmshare.SharedDict(), shmshare.SharedList(), shmshare.SharedQueue(),
            shmshare.SharedLock(), m.dict(), m.list(), m.Queue(), m.Lock())
        try:
            with ctx.Pool(3, initializer=init, initargs=(None if control else objs,)) as pool:
                pool.map(task, range(6))
                print("working", flush=True)
                try:
                    i = 0
                    while True:
                        r = pool.map_async(task, range(12))
                        while not r.ready():
                            ops(objs, i)
                            i += 1
                except KeyboardInterrupt:
                    ops(objs, -1)    # the workers are alive (some may be restarting)
        except KeyboardInterrupt:
            pass                     # the interrupt landed in the pool's own code
        ops(objs, -2)                # the workers are gone
        for o in objs[:0 if control else 4]:
            o.detach()
'''


@dataclass
class Outcome:
    method: str
    delay: float
    hung: bool
    returncode: int | None
    leaked_segments: list[int] = field(default_factory=list)
    leftover_files: list[str] = field(default_factory=list)
    collected_by_gc: int = 0   # left by a SIGKILLed (hung) run, removed by `shmshare gc`
    hang_report: str = ""
    cpython_pool_hang: bool = False   # the hang is CPython's gh-96995 (see pool_terminate_hang)

    @property
    def hung_by_us(self) -> bool:
        """A hang that is not CPython's own Pool.terminate() race."""
        return self.hung and not self.cpython_pool_hang


def pool_terminate_hang(stacks: str) -> bool:
    """Whether faulthandler's dump of a hung run's main process is CPython gh-96995.

    ``Pool.terminate()`` (what leaving ``with Pool(...)`` does) joins the worker
    handler, SIGTERMs every worker, then joins the task handler thread.  When that
    thread is late -- it has yet to send its sentinel with ``outqueue.put(None)`` --
    and a worker was SIGTERMed inside its own ``outqueue.put(result)``, the result
    queue's lock (a POSIX semaphore, not robust) stays taken by a dead process and
    the task handler waits for it forever; so does the join.  Only the workers and
    those two threads ever take that lock, and every worker is dead by then, so the
    dump below involves no lock of ours: the task handler waiting in
    ``_handle_tasks -> put -> __enter__`` while the main thread joins it in
    ``_terminate_pool``.  Open upstream: https://github.com/python/cpython/issues/96995
    """
    threads = [t for t in re.split(r"\n\s*\n", stacks) if "(most recent call first)" in t]

    def frames(t: str) -> list[str]:
        return re.findall(r'File "[^"]*/multiprocessing/(\w+\.py)", line \d+ in (\w+)', t)

    task_handler = any(frames(t)[:3] == [("synchronize.py", "__enter__"), ("queues.py", "put"),
                                         ("pool.py", "_handle_tasks")] for t in threads)
    joining = any(("pool.py", "_terminate_pool") in frames(t)
                  and "in _wait_for_tstate_lock" in t for t in threads)
    return task_handler and joining


def _group_members(pgid: int) -> set[int]:
    members = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) == pgid:
                members.add(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return members


def _wchan(pids: set[int]) -> str:
    lines = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/wchan") as f:
                wchan = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")[:80].decode(errors="replace")
        except OSError:
            continue
        lines.append(f"{pid} wchan={wchan} {cmd}")
    return "\n".join(lines)


def _segments_of(pids: set[int]) -> list[int]:
    from shmshare import _core
    from shmshare._core import proc

    # The process table is kept for the system's life by design (one per user):
    # main() makes it before the runs, so that no run's process creates it.
    out = []
    tables = proc.table_shmids()
    for sid in _core.list_ids():
        if sid in tables:
            continue
        try:
            if _core.stat(sid).cpid in pids:
                out.append(sid)
        except OSError:
            continue
    return out


def one_run(method: str, rng: random.Random, *, timeout: float = 30.0,
            max_delay: float = 0.5, sync_lock: bool = True, pool: bool = False,
            control: bool = False) -> Outcome:
    """One start-interrupt-wait cycle; every process it starts is gone when it returns.
    ``pool``: the Pool program (POOL_APP) instead of plain Processes; ``control``:
    that program on local objects, so that only the Pool's own machinery is shared."""
    base = Path(tempfile.mkdtemp(prefix="shms-ctrlc-"))
    pdir = base / "proj"
    errlog = open(base / "stderr", "w+b")  # noqa: SIM115 - closed in the finally below
    script = base / "app.py"  # a file, not -c: spawn children import it as __mp_main__
    script.write_text(POOL_APP if pool else APP)
    proc = subprocess.Popen([sys.executable, str(script), method, str(pdir),
                             "1" if sync_lock else "0", "control" if control else "shmshare"],
                            stdout=subprocess.PIPE, stderr=errlog, start_new_session=True)
    pgid = proc.pid
    seen: set[int] = {proc.pid}
    delay = rng.uniform(0.0, max_delay)
    outcome = Outcome(method, round(delay, 3), hung=False, returncode=None)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready or not proc.stdout.readline():
            raise RuntimeError(f"the {method} app did not start working within {timeout} s")
        # A random moment of the work: the torture's whole point (not synchronisation).
        end = time.monotonic() + delay
        while time.monotonic() < end:
            seen |= _group_members(pgid)
            time.sleep(0.01)
        seen |= _group_members(pgid)
        os.killpg(pgid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen |= _group_members(pgid)
            if proc.poll() is not None and not _group_members(pgid):
                break
            time.sleep(0.05)
        else:
            outcome.hung = True
            hung = _group_members(pgid)
            for pid in hung:  # every member dumps its Python stacks to stderr
                try:
                    os.kill(pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
            time.sleep(1.0)
            errlog.seek(0)
            stacks = errlog.read().decode(errors="replace")
            outcome.hang_report = _wchan(hung) + "\n" + stacks[-6000:]
            outcome.cpython_pool_hang = pool and pool_terminate_hang(stacks)
        if not outcome.hung and proc.returncode != 0:  # its traceback is the report
            errlog.seek(0)
            outcome.hang_report = errlog.read().decode(errors="replace")[-3000:]
    finally:
        members = _group_members(pgid)
        if members:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        # The group's last members (e.g. the forkserver) may still be exiting.
        deadline = time.monotonic() + 10
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        outcome.returncode = proc.returncode
        if proc.stdout is not None:
            proc.stdout.close()
        errlog.close()
    if outcome.hung and pdir.exists():
        # The hung group was SIGKILLed: what it left is gc's to collect, as a user
        # would after a kill -9.  Only what gc cannot find counts as leaked.
        before = set(_segments_of(seen))
        subprocess.run([sys.executable, "-m", "shmshare", "gc", "--project-dir", str(pdir)],
                       capture_output=True, timeout=60, check=False)
        outcome.collected_by_gc = len(before - set(_segments_of(seen)))
    outcome.leaked_segments = _segments_of(seen)
    if pdir.exists():
        outcome.leftover_files = sorted(str(p.relative_to(pdir)) for p in pdir.rglob("*.key"))
    _remove(outcome.leaked_segments)
    shutil.rmtree(base, ignore_errors=True)
    return outcome


def _remove(shmids: list[int]) -> None:
    from shmshare import _core

    for sid in shmids:
        try:
            _core.rmid(sid)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per start method")
    ap.add_argument("--method", choices=METHODS, action="append",
                    help="start method (repeatable; default: all three)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds after SIGINT before a run counts as hung")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--no-sync-lock", action="store_true",
                    help="leave out the Manager Lock (a SharedLock primitive); the dict, "
                         "list and queue, with their object locks, remain")
    ap.add_argument("--json", action="store_true", help="print every outcome as JSON")
    ap.add_argument("--pool", action="store_true",
                    help="multiprocessing.Pool work on shmshare and Manager objects")
    ap.add_argument("--control", action="store_true",
                    help="with --pool: the same Pool program on each process's own local "
                         "objects (nothing shared but the Pool): tells a hang of CPython's "
                         "Pool from ours")
    ap.add_argument("--budget", type=float, default=None,
                    help="stop a method's runs after this many seconds (the count is printed)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    bad = 0
    from shmshare._core import proc

    proc.token()  # the process table: made here, not by a run (see _segments_of)
    before = _namespace_segments()
    for method in args.method or METHODS:
        runs = hangs = cpython_hangs = leaks = leftovers = failed = collected = 0
        started = time.monotonic()
        while runs < args.runs and (args.budget is None
                                    or time.monotonic() - started < args.budget):
            out = one_run(method, rng, timeout=args.timeout, sync_lock=not args.no_sync_lock,
                          pool=args.pool, control=args.control)
            runs += 1
            hangs += out.hung_by_us
            cpython_hangs += out.cpython_pool_hang
            failed += not out.hung and out.returncode != 0
            leaks += len(out.leaked_segments)
            leftovers += len(out.leftover_files)
            collected += out.collected_by_gc
            if (args.json or out.hung or out.returncode or out.leaked_segments
                    or out.leftover_files):
                print(json.dumps(asdict(out)), flush=True)
        bad += hangs + failed + leaks + leftovers
        print(f"{method}: {runs} runs, {hangs} hangs, {cpython_hangs} hangs of CPython's "
              f"Pool.terminate() (gh-96995), {failed} failed, {leaks} leaked segments, "
              f"{leftovers} leftover key files, {collected} segments of SIGKILLed hung runs "
              f"collected by gc ({time.monotonic() - started:.0f} s)",
              flush=True)
    # Inside `unshare --ipc` every segment of the namespace is one of ours.
    stray = sorted(_namespace_segments() - before)
    print(f"/proc/sysvipc/shm: {len(stray)} segments more than before the runs {stray}",
          flush=True)
    return 1 if bad or stray else 0


def _namespace_segments() -> set[int]:
    with open("/proc/sysvipc/shm") as f:
        return {int(line.split()[1]) for line in f.readlines()[1:]}


if __name__ == "__main__":
    sys.exit(main())
