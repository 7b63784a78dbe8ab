"""The cells of benchmarks/run.py: one measurable path of one library each.

A cell is a callable returning one measurement (ns per operation, or µs /
ms for the paths named so), cheap enough to run once per round.  Cells are
named ``"<library> | <path>"``; report.py pairs them into comparisons.
:class:`Suite` builds every store once, before the rounds, and removes
everything (segments, key files, the redis server) after them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import multiprocessing as mp
import os
import pickle
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import shmshare

ROOT = Path(__file__).resolve().parent.parent
VALUE = 1234567890123  # a small value: an int that pickles to 15 bytes
BIG = 10 << 20  # the large value: 10 MiB of bytes
KEYS = [f"key{i}" for i in range(1000)]
# Other keys users index by: ints, and tuples (a grid's cells), 1,000 each.
OTHER_KEYS = {"int key": list(range(1000)), "tuple key": [(i, "cell") for i in range(1000)]}
WRITES_PER_S = 10_000  # the other process's write rate, for the cache cell


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform_machine()


def platform_machine() -> str:
    return os.uname().machine


def _sum_shared_array(task: tuple[Any, int, int, int]) -> float:
    a, _, lo, hi = task
    return float(a[lo:hi].sum())


def _sum_shared_memory(task: tuple[str, int, int, int]) -> float:
    from multiprocessing import shared_memory

    import numpy as np

    name, n, lo, hi = task
    shm = shared_memory.SharedMemory(name)
    try:
        view = np.ndarray((n,), "float64", buffer=shm.buf)
        total = float(view[lo:hi].sum())
        del view
        return total
    finally:
        shm.close()


class Timed:
    """ns per operation of ``body(n)``, with n fixed at the first call so that one
    call takes about ``target_s`` (the first call is a warm-up, not counted)."""

    def __init__(self, body: Callable[[int], Any], target_s: float, max_n: int = 1 << 22
                 ) -> None:
        self.body, self.target_s, self.max_n, self.n = body, target_s, max_n, 0

    def calibrate(self) -> None:
        n = 1
        while True:
            t0 = time.perf_counter_ns()
            self.body(n)
            dt = time.perf_counter_ns() - t0
            if dt >= self.target_s * 1e8 or n >= self.max_n:  # a tenth of the target
                break
            n *= 4
        self.n = max(1, min(self.max_n, int(n * self.target_s * 1e9 / max(dt, 1))))

    def __call__(self) -> float:
        if not self.n:
            self.calibrate()
        t0 = time.perf_counter_ns()
        self.body(self.n)
        return (time.perf_counter_ns() - t0) / self.n


_UNREGISTER = resource_tracker.unregister  # before a peer's import patches it


def _each(op: Callable[[], Any]) -> Callable[[int], None]:
    """A cell's body: ``op`` n times, each result dropped before the next is made.
    (A list of n 10 MiB results would need fresh pages for most of them, and time
    the page faults instead of the path.)"""
    def body(n: int) -> None:
        for _ in range(n):
            op()
    return body


def _unlink(shm: Any) -> None:
    """Close and unlink a SharedMemory this suite made, and make sure the resource
    tracker forgets it: UltraDict's import patches the tracker's unregister to skip
    shared_memory, which left the tracker warning of two 'leaked' segments at exit."""
    shm.close()
    shm.unlink()
    if resource_tracker.unregister is not _UNREGISTER:
        _UNREGISTER(shm._name, "shared_memory")


def _setter(a: Any) -> Callable[[int], None]:
    """``a[i] = v`` n times, as a loop writes it (the statement, not a method call)."""
    def sets(n: int) -> None:
        for i in range(n):
            a[i & 511] = 1.5
    return sets


def mapping_cells(get: Callable[[Any], Any], set_: Callable[[Any, Any], Any],
                  target_s: float, keys: list[Any] = KEYS) -> tuple[Timed, Timed]:
    order = [keys[(i * 7919) % len(keys)] for i in range(4096)]

    def sets(n: int) -> None:
        for i in range(n):
            set_(order[i & 4095], VALUE)

    def gets(n: int) -> None:
        for i in range(n):
            get(order[i & 4095])

    for k in keys:
        set_(k, VALUE)
    return Timed(sets, target_s), Timed(gets, target_s)


def _per(items: int, timed: Timed) -> Callable[[], float]:
    """ns per item of a cell whose one operation handles ``items`` items."""
    return lambda: timed() / items


def _plus_one(n: int) -> int:
    return n + 1


def apply_cell(apply: Callable[[Any, Callable[[int], int]], Any], target_s: float) -> Timed:
    """ns of one atomic read-modify-write, ``apply(key, _plus_one)``, over 1,000 keys."""
    order = [KEYS[(i * 7919) % len(KEYS)] for i in range(4096)]

    def applies(n: int) -> None:
        for i in range(n):
            apply(order[i & 4095], _plus_one)
    return Timed(applies, target_s)


def changed_get_cell(get: Callable[[str], Any], set_: Callable[[str, Any], Any], key: str,
                     target_s: float) -> Callable[[], float]:
    """ns of ``get(key)`` right after ``set_(key, VALUE)`` changed the key: a loop of
    set then get, minus the same loop of the set alone, measured back to back.  The
    same cell serves shmshare and its floor, so both pay the same loop and call forms;
    nothing is kept (a result kept per iteration would charge its allocation, and the
    garbage collector's visits to it, to the get)."""
    def pair(n: int) -> None:
        for _ in range(n):
            set_(key, VALUE)
            get(key)

    def only(n: int) -> None:
        for _ in range(n):
            set_(key, VALUE)

    # Five short alternations, their median difference: a burst of load from other
    # processes then spoils one difference, not the cell.
    timed_pair, timed_only = Timed(pair, target_s / 5), Timed(only, target_s / 5)
    return lambda: max(statistics.median(timed_pair() - timed_only() for _ in range(5)), 1.0)


class _Writer:
    """A forked process writing keys no cell reads, at WRITES_PER_S, until stopped."""

    def __init__(self, d: Any) -> None:
        r, w = os.pipe()
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - child
            code = 0
            try:
                os.close(w)
                os.close(ready_r)
                os.write(ready_w, b"x")
                t0, i = time.monotonic(), 0
                while True:
                    d[f"writer{i % 64}"] = i
                    i += 1
                    if i % 20 == 0:
                        if select.select([r], [], [], 0)[0]:
                            break
                        ahead = t0 + i / WRITES_PER_S - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(r)
        os.close(ready_w)
        self.stop_w = w
        os.read(ready_r, 1)
        os.close(ready_r)

    def stop(self) -> None:
        os.close(self.stop_w)
        _, status = os.waitpid(self.pid, 0)
        if status:
            raise RuntimeError(f"the writer process failed ({status})")


def _env() -> dict[str, str]:
    # Start-up as a user has it: with .pyc files (this machine may disable them).
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def import_ms(statement: str) -> float:
    """What ``statement`` imports, in ms, in a fresh interpreter (-X importtime): the
    cumulative times of the top-level imports after the interpreter's own (site)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                          capture_output=True, text=True, timeout=60, cwd="/", env=_env())
    total, after_site = 0, False
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)  # top level only
        if m and after_site:
            total += int(m.group(1))
        elif m and m.group(2) == "site":
            after_site = True
    if proc.returncode or not after_site:
        raise RuntimeError(f"{statement!r} failed: {proc.stderr[-200:]}")
    return total / 1000


def fs_type(path: str) -> str:
    """The file system type of the mount that holds ``path`` (/proc/self/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mnt, fstype = line.split()[:3]
            inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, kind = mnt, fstype
    return kind


def default_dir_text() -> str:
    """The default project directory and its file system; /tmp's too."""
    from shmshare.naming.project_dir import default_project_dir

    pdir = str(default_project_dir())
    return f"{pdir} ({fs_type(pdir)}); /tmp is {fs_type('/tmp')}"


_ATTACH_CHILD = textwrap.dedent("""
    import sys, time
    from multiprocessing import resource_tracker, shared_memory
    from shmshare import SharedDict   # imported, like shared_memory: the attach only
    resource_tracker.register = lambda *a: None   # the attach only, not the tracker
    def ours():
        t0 = time.perf_counter()
        d = SharedDict(sys.argv[1], create=False)
        return time.perf_counter() - t0, d.detach
    def theirs():
        t0 = time.perf_counter()
        s = shared_memory.SharedMemory(sys.argv[2])
        return time.perf_counter() - t0, s.close
    # Whichever attach runs first in a fresh process also pays for warming what
    # both use (the interpreter's and the kernel's first-call paths): the order
    # alternates from one child to the next (argv[3]).
    first, second = (ours, theirs) if sys.argv[3] == "0" else (theirs, ours)
    (a, close_a), (b, close_b) = first(), second()
    close_a(); close_b()
    t_ours, t_theirs = (a, b) if first is ours else (b, a)
    print(t_ours * 1e6, t_theirs * 1e6)
""")


def _die_with_parent() -> None:
    """In a server's child before exec: the kernel sends it SIGTERM when the run dies
    (PR_SET_PDEATHSIG), so a run killed before its cleanup leaves no server behind."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Suite:
    """Every cell of the run, with the stores they use; a context manager."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.t = 0.05 if quick else 0.2
        self.cells: dict[str, Callable[[], float]] = {}
        self.missing: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.leaks: list[str] = []
        self._cleanup: list[Callable[[], Any]] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="shmshare-bench-"))
        self._tag = f"shmbench{os.getpid()}"

    # -- lifecycle ----------------------------------------------------------------
    def __enter__(self) -> Suite:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for fn in reversed(self._cleanup):
            try:
                fn()
            except Exception as e:
                self.leaks.append(f"cleanup failed: {type(e).__name__}: {e}")
        self._cleanup.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def versions(self) -> dict[str, str]:
        out = {"shmshare": shmshare.__version__}
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            if rev:
                out["shmshare"] += f" (git {rev})"
        for dist in ("UltraDict", "atomics", "shared-memory-dict", "redis", "numpy",
                     "matplotlib", "pytest"):
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "not installed"
        if self._redis_server():
            out["redis-server"] = subprocess.run(
                [self._redis_server(), "--version"], capture_output=True, text=True,
                timeout=10).stdout.split(" v=")[-1].split()[0]
        return out

    def _build(self) -> None:
        self._dicts()
        self._large()
        self._named()
        self._startup()
        self._objects()
        self._arrays()
        self._peers()

    # -- small values: set, cached get, get after a change, get beside a writer -----
    def _dicts(self) -> None:
        floor: dict[str, bytes] = {}

        def floor_get(k: str) -> Any:
            return pickle.loads(floor[k])

        def floor_set(k: str, v: Any) -> None:
            floor[k] = pickle.dumps(v, 5)
        s, g = mapping_cells(floor_get, floor_set, self.t)
        self.cells["floor | set"], self.cells["floor | get"] = s, g
        d = shmshare.SharedDict()
        self._cleanup.append(d.detach)
        s, g = mapping_cells(d.__getitem__, d.__setitem__, self.t)
        self.cells["shmshare | set"], self.cells["shmshare | get"] = s, g

        # The key changes by this process's set: a set by another process each
        # time would need a handshake per get, costing more than the get.
        key = KEYS[0]
        self.cells["floor | get after that key changed"] = changed_get_cell(
            floor_get, floor_set, key, self.t)
        self.cells["shmshare | get after that key changed"] = changed_get_cell(
            d.__getitem__, d.__setitem__, key, self.t)

        def beside_writer() -> float:
            writer = _Writer(d)
            try:
                return g()
            finally:
                writer.stop()
        self.cells["shmshare | get while another process writes other keys"] = beside_writer

        # Each in a dict of its own, of 1,000 keys as the one above: a dict three
        # times as large would time another heap (more extents, other blocks).
        for what, keys in OTHER_KEYS.items():
            other: dict[Any, bytes] = {}
            s, g = mapping_cells(lambda k, f=other: pickle.loads(f[k]),
                                 lambda k, v, f=other: f.__setitem__(k, pickle.dumps(v, 5)),
                                 self.t, keys)
            self.cells[f"floor | set, {what}"], self.cells[f"floor | get, {what}"] = s, g
            od = shmshare.SharedDict()
            self._cleanup.append(od.detach)
            s, g = mapping_cells(od.__getitem__, od.__setitem__, self.t, keys)
            self.cells[f"shmshare | set, {what}"], self.cells[f"shmshare | get, {what}"] = s, g

        # d.apply(k, f), an atomic read-modify-write, against its floor: the same on a
        # local dict of pickles under a threading.Lock.
        lock = threading.Lock()
        counters: dict[str, bytes] = {k: pickle.dumps(0, 5) for k in KEYS}
        cd = shmshare.SharedDict({k: 0 for k in KEYS})
        self._cleanup.append(cd.detach)

        def floor_apply(k: str, f: Callable[[int], int]) -> None:
            with lock:
                counters[k] = pickle.dumps(f(pickle.loads(counters[k])), 5)
        self.cells["floor | apply"] = apply_cell(floor_apply, self.t)
        self.cells["shmshare | apply"] = apply_cell(cd.apply, self.t)

        # len(), and a whole dict of 1,000 int keys read back (per item), against
        # the same on a local dict of pickles.
        ints = {i: pickle.dumps(i, 5) for i in range(1000)}
        di = shmshare.SharedDict({i: i for i in range(1000)})
        self._cleanup.append(di.detach)
        def floor_pop_set(n: int) -> None:
            for i in range(n):
                k = i % 1000
                pickle.loads(ints.pop(k))
                ints[k] = pickle.dumps(k, 5)

        def pop_set(n: int) -> None:
            for i in range(n):
                k = i % 1000
                di.pop(k)
                di[k] = k
        self.cells["floor | pop + set"] = Timed(floor_pop_set, self.t)
        self.cells["shmshare | pop + set"] = Timed(pop_set, self.t)
        self.cells["floor | len"] = Timed(lambda n: [len(ints) for _ in range(n)], self.t)
        self.cells["shmshare | len"] = Timed(lambda n: [len(di) for _ in range(n)], self.t)
        self.cells["floor | items, per item"] = _per(1000, Timed(
            lambda n: [[(k, pickle.loads(v)) for k, v in ints.items()] for _ in range(n)],
            self.t))
        self.cells["shmshare | items, per item"] = _per(1000, Timed(
            lambda n: [list(di.items()) for _ in range(n)], self.t))

    # -- a 10 MiB value: bytes, and a numpy array ------------------------------------
    def _large(self) -> None:
        import numpy as np

        t = self.t * 2
        d = shmshare.SharedDict()
        self._cleanup.append(d.detach)
        arr = np.frombuffer(os.urandom(BIG), dtype="f8").copy()
        for what, value in (("10 MiB", os.urandom(BIG)), ("10 MiB numpy array", arr)):
            pickled = pickle.dumps(value, 5)
            dest = bytearray(len(pickled))

            def dumps_memcpy(n: int, value: Any = value, dest: bytearray = dest) -> None:
                for _ in range(n):
                    dest[:] = pickle.dumps(value, 5)
            self.cells[f"floor | {what} loads (µs)"] = _us(Timed(
                _each(lambda p=pickled: pickle.loads(p)), t, 64))
            self.cells[f"floor | {what} dumps + memcpy (µs)"] = _us(Timed(dumps_memcpy, t, 64))
            key = f"big {what}"
            d[key] = value
            self.cells[f"shmshare | {what} get (µs)"] = _us(Timed(
                _each(lambda k=key: d[k]), t, 64))
            self.cells[f"shmshare | {what} set (µs)"] = _us(Timed(
                _each(lambda k=key, v=value: d.__setitem__(k, v)), t, 64))
        lst = shmshare.SharedList([os.urandom(BIG)])
        self._cleanup.append(lst.detach)
        self.cells["shmshare | 10 MiB SharedList lst[i] (µs)"] = _us(Timed(
            _each(lambda: lst[0]), t, 64))
        item = os.urandom(BIG)
        self.cells["shmshare | 10 MiB SharedList lst[i] = v (µs)"] = _us(Timed(
            _each(lambda: lst.__setitem__(0, item)), t, 64))
        q = shmshare.SharedQueue()
        self._cleanup.append(q.detach)
        self.cells["floor | 10 MiB numpy array dumps + loads (µs)"] = _us(Timed(
            _each(lambda: pickle.loads(pickle.dumps(arr, 5))), t, 64))
        self.cells["shmshare | 10 MiB numpy array queue put + get (µs)"] = _us(Timed(
            _each(lambda: (q.put(arr), q.get())), t, 64))

    # -- named objects: create + destroy, attach by name from another process -------
    def _named(self) -> None:
        counter = iter(range(1 << 30))
        tmpfs = Path("/dev/shm") if os.path.isdir("/dev/shm") else None
        dirs = {"default project dir": None}
        for where, root in (("tmpfs project dir", tmpfs), ("project dir under /tmp", "/tmp")):
            if root is not None:
                pdir = Path(tempfile.mkdtemp(prefix="shmshare-bench-", dir=root))
                self._cleanup.append(lambda p=pdir: shutil.rmtree(p, ignore_errors=True))
                dirs[where] = pdir
        n = 20 if self.quick else 60
        for where, pdir in dirs.items():
            def create_destroy(pdir: Path | None = pdir) -> float:
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    d = shmshare.SharedDict(f"{self._tag}c{next(counter)}", create=True,
                                            project_dir=pdir)
                    d.unlink()
                    d.detach()
                return (time.perf_counter_ns() - t0) / n / 1e3
            self.cells[f"shmshare | create + destroy, {where} (µs)"] = create_destroy

        from multiprocessing import shared_memory
        name = f"{self._tag}att"
        d = shmshare.SharedDict(name, create=True)
        self._cleanup.append(d.detach)
        self._cleanup.append(d.unlink)
        shm = shared_memory.SharedMemory(f"{self._tag}shm", create=True, size=64 << 10)
        self._cleanup.append(lambda: _unlink(shm))
        pending: dict[str, float] = {}
        children = iter(range(1 << 30))

        def attach(which: str) -> float:
            # One child measures both attaches; the other cell of the pair reads it.
            if which not in pending:
                out = subprocess.run([sys.executable, "-c", _ATTACH_CHILD, name, shm.name,
                                      str(next(children) % 2)],
                                     capture_output=True, text=True, timeout=60,
                                     cwd="/", check=True).stdout  # the installed shmshare
                a, b = map(float, out.split())
                pending.clear()
                pending.update(ours=a, theirs=b)
            return pending.pop(which)
        self.cells["shmshare | attach by name, first time, another process (µs)"] = (
            lambda: attach("ours"))
        self.cells["shared_memory | attach by name, first time, another process (µs)"] = (
            lambda: attach("theirs"))

    # -- start-up ---------------------------------------------------------------------
    def _startup(self) -> None:
        statements = {"shmshare | import (ms)": "import shmshare",
                      "shmshare | from shmshare import SharedDict (ms)":
                          "from shmshare import SharedDict",
                      "multiprocessing.managers | import (ms)":
                          "import multiprocessing.managers"}
        for cell, statement in statements.items():
            import_ms(statement)  # writes the .pyc files once
            self.cells[cell] = lambda statement=statement: import_ms(statement)
        proj = self._tmp / "unrelated"
        proj.mkdir()
        (proj / "test_nothing.py").write_text("def test_nothing():\n    pass\n")

        # A project dir of its own: on a shared machine other runs' directories
        # would make the plugin's end-of-run sweep look at them.
        pytest_env = {**_env(), "SHMSHARE_DIR": str(self._tmp / "pytest-proj")}

        def pytest_ms(*extra: str) -> float:
            # CPU time (user + system) of the pytest process: on a shared machine its
            # wall time mostly measures the other jobs.
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p",
                            "no:cacheprovider", *extra], cwd=proj, capture_output=True,
                           timeout=120, check=True, env=pytest_env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1e3
        def plugin_imports_ms() -> float:
            # CPU-bound and far steadier than the wall-clock difference: what the
            # outermost imports of shmshare modules cost during `pytest --co`.
            proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pytest", "--co",
                                   "-q", "-p", "no:cacheprovider"], cwd=proj,
                                  capture_output=True, text=True, timeout=120,
                                  env=pytest_env)
            total, inside = 0, []  # depths of the shmshare imports we are inside
            for line in reversed(proc.stderr.splitlines()):  # parents come after children
                m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
                if not m:
                    continue
                depth = len(m.group(2))
                while inside and inside[-1] >= depth:
                    inside.pop()
                if not inside and m.group(3).split(".")[0] == "shmshare":
                    total += int(m.group(1))
                    inside.append(depth)
            return total / 1000
        self.cells["pytest --co, imports of shmshare (ms)"] = plugin_imports_ms
        self.cells["pytest --co, shmshare plugin loaded (CPU ms)"] = pytest_ms
        self.cells["pytest --co, -p no:shmshare (CPU ms)"] = (
            lambda: pytest_ms("-p", "no:shmshare"))

    # -- arrays (element access) ---------------------------------------------------------
    # -- the other objects' paths: their floors and multiprocessing's peers ------------
    def _objects(self) -> None:
        def loop(op: Callable[[int], Any]) -> Timed:
            def body(n: int) -> None:
                for i in range(n):
                    op(i)
            return Timed(body, self.t)

        v, mv = shmshare.SharedValue("q", 0), mp.Value("q", 0)
        for name, val in (("shmshare | SharedValue", v), ("multiprocessing.Value |", mv)):
            lock = val.get_lock()

            def locked_add(i: int, val: Any = val, lock: Any = lock) -> None:
                with lock:
                    val.value += 1
            self.cells[f"{name} .value"] = loop(lambda i, val=val: val.value)
            self.cells[f"{name} .value = v"] = loop(lambda i, val=val: setattr(val, "value", i))
            self.cells[f"{name} locked +="] = loop(locked_add)
        lst, local = shmshare.SharedList(range(1000)), [pickle.dumps(i, 5) for i in range(1000)]
        self.cells["shmshare | SharedList lst[i] = v"] = loop(
            lambda i: lst.__setitem__(i % 1000, VALUE))
        self.cells["floor | list lst[i] = v"] = loop(
            lambda i: local.__setitem__(i % 1000, pickle.dumps(VALUE, 5)))
        s, local_set = shmshare.SharedSet(), set()
        self.cells["shmshare | SharedSet add"] = loop(lambda i: s.add(i % 1000))
        self.cells["floor | set add"] = loop(lambda i: local_set.add(pickle.dumps(i % 1000, 5)))
        ns = shmshare.SharedNamespace(x=VALUE)
        self.cells["shmshare | SharedNamespace ns.x"] = loop(lambda i: ns.x)
        self.cells["shmshare | SharedNamespace ns.x = v"] = loop(
            lambda i: setattr(ns, "x", VALUE))
        sem, msem = shmshare.SharedSemaphore(2), mp.Semaphore(2)
        for name, sm in (("shmshare | SharedSemaphore", sem),
                         ("multiprocessing.Semaphore |", msem)):
            self.cells[f"{name} acquire + release"] = loop(
                lambda i, sm=sm: (sm.acquire(), sm.release()))
        for obj in (v, lst, s, sem):
            self._cleanup.append(obj.detach)
        self._cleanup.append(lambda: shmshare.detach(ns))

    def _arrays(self) -> None:
        if importlib.util.find_spec("numpy") is None:
            self.missing["SharedArray"] = "numpy is not installed"
            return
        import numpy as np

        a = shmshare.SharedArray(1000, "float64")
        self._cleanup.append(a.detach)
        local = np.zeros(1000)
        mpa = mp.Array("d", 1000)
        self.cells["shmshare | SharedArray a[i]"] = Timed(
            lambda n: [a[i & 511] for i in range(n)], self.t)
        self.cells["numpy | a[i]"] = Timed(lambda n: [local[i & 511] for i in range(n)],
                                           self.t)
        self.cells["multiprocessing.Array | a[i]"] = Timed(
            lambda n: [mpa[i & 511] for i in range(n)], self.t)
        from shmshare.objects.typed_array import SharedTypedArray  # Manager().Array's

        typed = SharedTypedArray("d", 1000)
        self._cleanup.append(typed.detach)
        self.cells["shmshare | Manager().Array a[i]"] = Timed(
            lambda n: [typed[i & 511] for i in range(n)], self.t)
        for label, target in (("shmshare | SharedArray", a), ("numpy |", local),
                              ("shmshare | Manager().Array", typed),
                              ("multiprocessing.Array |", mpa)):
            self.cells[f"{label} a[i] = v"] = Timed(_setter(target), self.t)
        self._array_pool(np)

    def _array_pool(self, np: Any) -> None:
        """A fork Pool(2) sums 8 row blocks of a 256 MiB array: a SharedArray passed by
        reference (each task attaches it; rows taken as ``a[lo:hi]``) against
        ``shared_memory`` opened by name in each task.  The pool lives for all rounds.
        A round times 5 maps and reports their mean: one map takes about 20 ms, and on
        a machine of two cores one scheduling hiccup would decide a round of one."""
        from multiprocessing import shared_memory

        n = 256 * (1 << 20) // 8
        a = shmshare.SharedArray(n, "float64")
        a[0:n] = 1.0
        shm = shared_memory.SharedMemory(f"{self._tag}pool", create=True, size=n * 8)
        np.ndarray((n,), "float64", buffer=shm.buf).fill(1.0)
        pool = mp.get_context("fork").Pool(2)
        self._cleanup += [a.detach, lambda: _unlink(shm), pool.join, pool.terminate]
        blocks = [(i * n // 8, (i + 1) * n // 8) for i in range(8)]
        size = "256 MiB"

        reps = 2 if self.quick else 5

        def run(fn: Callable[[Any], float], handle: Any) -> float:
            t0 = time.perf_counter_ns()
            for _ in range(reps):
                total = sum(pool.map(fn, [(handle, n, lo, hi) for lo, hi in blocks]))
                assert total == n, total
            return (time.perf_counter_ns() - t0) / 1e6 / reps
        self.cells[f"shmshare | Pool(2) sums 8 slices of {size} (ms)"] = (
            lambda: run(_sum_shared_array, a))
        self.cells[f"shared_memory | Pool(2) sums 8 slices of {size} (ms)"] = (
            lambda: run(_sum_shared_memory, shm.name))

    # -- peers ----------------------------------------------------------------------------
    def _peers(self) -> None:
        manager = mp.Manager()
        self._cleanup.append(manager.shutdown)
        md = manager.dict()
        s, g = mapping_cells(md.__getitem__, md.__setitem__, self.t / 4)
        self.cells["Manager | set"], self.cells["Manager | get"] = s, g

        if importlib.util.find_spec("UltraDict") is None:
            self.missing["UltraDict"] = "not installed"
        else:
            from UltraDict import UltraDict
            shared = importlib.util.find_spec("atomics") is not None
            u = UltraDict(name=f"{self._tag}u", create=True, shared_lock=shared,
                          buffer_size=1 << 20, full_dump_size=1 << 20)
            self._cleanup.append(u.unlink)
            s, g = mapping_cells(u.__getitem__, u.__setitem__, self.t)
            self.cells["UltraDict | set"], self.cells["UltraDict | get"] = s, g
            counter = iter(range(1 << 30))
            n = 20 if self.quick else 60

            def ultra_create_destroy() -> float:
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    x = UltraDict(name=f"{self._tag}uc{next(counter)}", create=True,
                                  shared_lock=shared)
                    x.unlink()
                return (time.perf_counter_ns() - t0) / n / 1e3
            self.cells["UltraDict | create + destroy (µs)"] = ultra_create_destroy

        if importlib.util.find_spec("shared_memory_dict") is None:
            self.missing["shared-memory-dict"] = "not installed"
        else:
            from shared_memory_dict import SharedMemoryDict
            smd = SharedMemoryDict(name=f"{self._tag}smd", size=1 << 20)

            def smd_close() -> None:
                smd.shm.unlink()
                smd.cleanup()
            self._cleanup.append(smd_close)
            s, g = mapping_cells(smd.__getitem__, smd.__setitem__, self.t / 4)
            self.cells["shared-memory-dict | set"] = s
            self.cells["shared-memory-dict | get"] = g

        server = self._redis_server()
        if importlib.util.find_spec("redis") is None or server is None:
            self.missing["redis"] = ("not installed (redis-py)" if server else
                                     "not installed (no redis-server executable)")
        else:
            import redis
            port = self._start_redis(server)
            r = redis.Redis(host="127.0.0.1", port=port)
            self._cleanup.append(r.close)
            p = self._tag + ":"
            s, g = mapping_cells(lambda k: pickle.loads(r.get(p + k)),  # type: ignore[arg-type]
                                 lambda k, v: r.set(p + k, pickle.dumps(v, 5)), self.t / 4)
            self.cells["redis | set"], self.cells["redis | get"] = s, g

    @staticmethod
    def _redis_server() -> str | None:
        return shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)

    def _start_redis(self, server: str) -> int:
        import redis
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", str(self._tmp)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)

        def stop() -> None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._cleanup.append(stop)
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping():
                    return port
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)


def _us(timed: Timed) -> Callable[[], float]:
    return lambda: timed() / 1e3
