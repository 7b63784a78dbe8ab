"""shmshare against its peers: one command, one process tree, a markdown report and a PNG.

Run:  python benchmarks/compare.py [--quick] [--out DIR]

Measures, on this machine and in this run, the same workloads against:

- a local dict of pickled values (the floor: the cost of any design that
  stores serialized values, with no sharing at all);
- ``shmshare.SharedDict``;
- ``multiprocessing.Manager().dict()``;
- and, only when they are importable or available: UltraDict,
  shared-memory-dict, and redis-py talking to a ``redis-server`` that this
  script starts on a free loopback port (and always stops).

Workloads: single-process ``set`` and ``get`` of an 8-byte int and of a
100-character str at a few keyspace sizes (ns/op, best of several runs); a
mix of 80 % get / 20 % set on 1,000 shared keys by 2 and 4 spawned
processes (total ops/s); and a contended counter increment, each process
using the library's own cross-process locking (total increments/s, and the
final count checked to be exact).

Each library is measured in a process of its own (spawned in turn, never two
at a time), so that one library's imports and side effects cannot touch
another's numbers.  Peers that are missing are reported as not installed.

Writes ``DIR/benchmarks-compare.md`` and ``DIR/img/compare.png`` (DIR is
``docs/`` by default) and prints the same tables.  Exit status: 0 when every
correctness check that applies passed and nothing was left behind (no shared
memory segment, no server); 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import importlib.util
import multiprocessing as mp
import os
import pickle
import platform
import queue
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This checkout's shmshare, not whichever copy happens to be installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FLOOR = "local dict of pickles (floor)"
SHM = "shmshare.SharedDict"
MGR = "multiprocessing.Manager().dict()"
ULTRA = "UltraDict"
ULTRA_NL = "UltraDict, shared_lock=False (single process only)"
SMD = "shared-memory-dict"
REDIS = "redis-py + redis-server"
LIBRARIES = [FLOOR, SHM, MGR, ULTRA, ULTRA_NL, SMD, REDIS]
SHORT = {FLOOR: "floor", SHM: "shmshare", MGR: "Manager", ULTRA: "UltraDict",
         ULTRA_NL: "UltraDict, shared_lock=False", SMD: "shared-memory-dict", REDIS: "redis"}
# Measured in one process only: no lock across processes, so writers would corrupt it.
SINGLE_ONLY = {FLOOR, ULTRA_NL}

INT_VALUE = 1234567890123                    # fits in 8 bytes
STR_VALUE = ("shmshare benchmark value " * 4)[:100]
MIX_KEYS = 1_000
GET_SHARE = 0.8
COUNTER = "counter"


@dataclass
class Config:
    quick: bool
    sizes: list[int]
    target_s: float          # time of one timed run of a single-process workload
    repeat: int              # timed runs; the best is kept
    procs: list[int]
    mix_s: float             # duration of the multi-process mix, per process count
    count_s: float           # duration of the counter phase
    lib_timeout: float       # a library's whole run, after which it is stopped
    ultra_buffer: int = 1 << 20

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(True, [100, 10_000], 0.04, 2, [2, 4], 0.5, 0.5, 120.0)
        return cls(False, [100, 10_000, 100_000], 0.25, 5, [2, 4], 2.0, 2.0, 600.0)


# -- one adapter per library ---------------------------------------------------------------
#
# Every store offers the same small interface: ``get(k)``, ``set(k, v)``,
# ``load(mapping)`` (bulk fill, not timed), ``incr(key)`` (the locked
# increment), ``handle()`` (what a spawned process needs to open it),
# ``close()`` (a process lets go) and ``destroy()`` (the creator removes it).


class FloorStore:
    lock_desc = "—"
    locked_counter = False

    def __init__(self) -> None:
        self.d: dict[str, bytes] = {}

    def set(self, k: str, v: Any) -> None:
        self.d[k] = pickle.dumps(v, 5)

    def get(self, k: str) -> Any:
        return pickle.loads(self.d[k])

    def load(self, items: dict[str, Any]) -> None:
        for k, v in items.items():
            self.set(k, v)

    def close(self) -> None:
        self.d.clear()

    destroy = close


class ShmStore:
    lock_desc = "`with d.lock: d[k] += 1`"
    locked_counter = True

    def __init__(self, d: Any = None) -> None:
        import shmshare
        self.d = shmshare.SharedDict() if d is None else d
        self.set = self.d.__setitem__
        self.get = self.d.__getitem__

    def load(self, items: dict[str, Any]) -> None:
        self.d.update(items)

    def incr(self, k: str) -> None:
        with self.d.lock:
            self.d[k] += 1

    def handle(self) -> Any:
        return self.d                       # pickles by reference

    @classmethod
    def attach(cls, handle: Any) -> ShmStore:
        return cls(handle)

    def close(self) -> None:
        self.d.detach()                     # anonymous: gone with its last user

    destroy = close


class ManagerStore:
    lock_desc = "`with manager.Lock(): d[k] += 1`"
    locked_counter = True

    def __init__(self, handle: Any = None) -> None:
        self.manager = None
        if handle is None:
            self.manager = mp.Manager()
            handle = (self.manager.dict(), self.manager.Lock())
        self.d, self.lock = handle
        self.set = self.d.__setitem__
        self.get = self.d.__getitem__

    def load(self, items: dict[str, Any]) -> None:
        self.d.update(items)

    def incr(self, k: str) -> None:
        with self.lock:
            self.d[k] += 1

    def handle(self) -> Any:
        return (self.d, self.lock)

    @classmethod
    def attach(cls, handle: Any) -> ManagerStore:
        return cls(handle)

    def close(self) -> None:
        pass

    def destroy(self) -> None:
        if self.manager is not None:
            self.manager.shutdown()


def _have_atomics() -> bool:
    return importlib.util.find_spec("atomics") is not None


class UltraStore:
    """UltraDict with ``shared_lock=True`` (its cross-process lock, which needs the
    ``atomics`` package) and a fixed-size full-dump segment, so that every
    segment it makes carries this run's name and is removed by ``unlink()``."""

    def __init__(self, name: str, capacity: int = 0, create: bool = True,
                 shared: bool | None = None) -> None:
        from UltraDict import UltraDict
        self.name = name
        self.shared = _have_atomics() if shared is None else shared
        if create:
            self.d = UltraDict(name=name, create=True, shared_lock=self.shared,
                               buffer_size=Config.ultra_buffer,
                               full_dump_size=max(capacity, 1 << 16))
        else:
            self.d = UltraDict(name=name, create=False)
        self.set = self.d.__setitem__
        self.get = self.d.__getitem__
        self.locked_counter = self.shared
        self.lock_desc = ("`with d.lock: d[k] += 1` (shared_lock=True)" if self.shared else
                          "none across processes (`shared_lock=True` needs `atomics`): "
                          "`with d.lock: d[k] += 1`, exactness not checked")

    def load(self, items: dict[str, Any]) -> None:
        self.d.update(items)

    def incr(self, k: str) -> None:
        with self.d.lock:
            self.d[k] += 1

    def handle(self) -> Any:
        return self.name

    @classmethod
    def attach(cls, handle: Any) -> UltraStore:
        return cls(handle, create=False)

    def close(self) -> None:
        self.d.close()

    def destroy(self) -> None:
        self.d.unlink()


class SmdStore:
    """shared-memory-dict: one fixed-size POSIX segment holding the pickle of the
    whole dict; every get unpickles it all and every set rewrites it all."""

    lock_desc = "none (it has no cross-process lock): `d[k] = d[k] + 1`"
    locked_counter = False

    def __init__(self, name: str, capacity: int) -> None:
        from shared_memory_dict import SharedMemoryDict
        self.name, self.capacity = name, capacity
        self.d = SharedMemoryDict(name=name, size=capacity)
        self.set = self.d.__setitem__
        self.get = self.d.__getitem__

    def load(self, items: dict[str, Any]) -> None:
        self.d.update(items)

    def incr(self, k: str) -> None:
        self.d[k] = self.d[k] + 1

    def handle(self) -> Any:
        return (self.name, self.capacity)

    @classmethod
    def attach(cls, handle: Any) -> SmdStore:
        return cls(*handle)

    def close(self) -> None:
        self.d.cleanup()

    def destroy(self) -> None:
        self.d.shm.unlink()
        self.d.cleanup()


class RedisStore:
    """redis-py over TCP loopback; values are pickled as with the others, and the
    counter is Redis's own atomic INCR."""

    lock_desc = "`r.incr(k)` (atomic in the server)"
    locked_counter = True

    def __init__(self, port: int, prefix: str) -> None:
        import redis
        self.port, self.prefix = port, prefix
        self.r = redis.Redis(host="127.0.0.1", port=port)
        r, p = self.r, prefix
        self.set = lambda k, v: r.set(p + k, pickle.dumps(v, 5))
        self.get = lambda k: pickle.loads(r.get(p + k))

    def load(self, items: dict[str, Any]) -> None:
        pairs = list(items.items())
        for i in range(0, len(pairs), 1000):
            self.r.mset({self.prefix + k: pickle.dumps(v, 5) for k, v in pairs[i:i + 1000]})

    def set_counter(self, k: str, value: int) -> None:
        self.r.set(self.prefix + k, value)

    def counter(self, k: str) -> int:
        return int(self.r.get(self.prefix + k))

    def incr(self, k: str) -> None:
        self.r.incr(self.prefix + k)

    def handle(self) -> Any:
        return (self.port, self.prefix)

    @classmethod
    def attach(cls, handle: Any) -> RedisStore:
        return cls(*handle)

    def close(self) -> None:
        self.r.close()

    def destroy(self) -> None:
        keys = list(self.r.scan_iter(match=self.prefix + "*", count=10_000))
        for i in range(0, len(keys), 10_000):
            self.r.delete(*keys[i:i + 10_000])
        self.r.close()


ATTACH: dict[str, Callable[[Any], Any]] = {
    SHM: ShmStore.attach, MGR: ManagerStore.attach, ULTRA: UltraStore.attach,
    SMD: SmdStore.attach, REDIS: RedisStore.attach,
}


def availability() -> dict[str, str | None]:
    """None when the library can be measured, else why not."""
    out: dict[str, str | None] = {FLOOR: None, SHM: None, MGR: None}
    out[ULTRA] = None if importlib.util.find_spec("UltraDict") else "not installed"
    out[ULTRA_NL] = out[ULTRA]
    out[SMD] = None if importlib.util.find_spec("shared_memory_dict") else "not installed"
    if importlib.util.find_spec("redis") is None:
        out[REDIS] = "not installed (redis-py)"
    elif redis_server_path() is None:
        out[REDIS] = "not installed (no redis-server executable)"
    else:
        out[REDIS] = None
    return out


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)


def versions() -> dict[str, str]:
    import shmshare
    out = {"shmshare": shmshare.__version__}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if rev:
            out["shmshare"] += f" (git {rev}{', modified' if dirty else ''})"
    for dist in ("UltraDict", "atomics", "shared-memory-dict", "redis", "matplotlib"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    server = redis_server_path()
    if server:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run([server, "--version"], capture_output=True, text=True,
                                  timeout=10).stdout
            out["redis-server"] = next((w[2:] for w in text.split() if w.startswith("v=")),
                                       text.strip())
    else:
        out["redis-server"] = "not installed"
    return out


# -- timing --------------------------------------------------------------------------------


def ns_per_op(run: Callable[[int], None], target_s: float, repeat: int,
              max_n: int = 2_000_000) -> float:
    """Best of ``repeat`` timed calls of ``run(n)`` (n operations), in ns per operation,
    with n chosen so that one call takes about ``target_s``."""
    n = 1
    while True:
        t0 = time.perf_counter_ns()
        run(n)
        dt = time.perf_counter_ns() - t0
        if dt >= target_s * 5e7 or n >= max_n:          # a twentieth of the target
            break
        n *= 10
    n = max(1, min(max_n, int(n * target_s * 1e9 / max(dt, 1))))
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter_ns()
        run(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def loop(fn: Callable[..., Any], order: list[str], *arg: Any) -> Callable[[int], None]:
    mask = len(order) - 1                               # len(order) is a power of two
    if arg:
        value = arg[0]

        def run_set(n: int) -> None:
            for i in range(n):
                fn(order[i & mask], value)
        return run_set

    def run_get(n: int) -> None:
        for i in range(n):
            fn(order[i & mask])
    return run_get


# -- what runs in each library's process ---------------------------------------------------


def short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def raw_redis_get_ns(port: int, cfg: Config) -> float:
    """A GET round trip over a bare socket, without redis-py: the server and loopback
    share of redis-py's time."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"*3\r\n$3\r\nSET\r\n$8\r\nraw:only\r\n$1\r\nx\r\n")
        s.recv(64)
        cmd = b"*2\r\n$3\r\nGET\r\n$8\r\nraw:only\r\n"

        def run(n: int) -> None:
            for _ in range(n):
                s.sendall(cmd)
                s.recv(64)
        try:
            return ns_per_op(run, cfg.target_s, cfg.repeat)
        finally:
            s.sendall(b"*2\r\n$3\r\nDEL\r\n$8\r\nraw:only\r\n")
            s.recv(64)


def _sigterm_exits(signum: int, frame: Any) -> None:
    signal.signal(signum, signal.SIG_IGN)   # the cleanup that follows runs to its end
    raise SystemExit(f"stopped by signal {signum}")


def new_store(lib: str, capacity: int, port: int, tag: str) -> Any:
    """A fresh, empty store of ``lib``, named after this run's ``tag``."""
    if lib == FLOOR:
        return FloorStore()
    if lib == SHM:
        return ShmStore()
    if lib == MGR:
        return ManagerStore()
    if lib == ULTRA:
        return UltraStore(tag, capacity)
    if lib == ULTRA_NL:
        return UltraStore(tag, capacity, shared=False)
    if lib == SMD:
        return SmdStore(tag, capacity)
    if lib == REDIS:
        return RedisStore(port, tag + ":")
    raise ValueError(lib)


def capacity_for(items: dict[str, Any]) -> int:
    """Room for the pickle of ``items`` with slack, for the fixed-size peers."""
    return len(pickle.dumps(items, pickle.HIGHEST_PROTOCOL)) * 3 // 2 + (1 << 16)


def single_process(lib: str, cfg: Config, port: int, tag: str,
                   live: list[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for size in cfg.sizes:
        keys = [f"key{i}" for i in range(size)]
        rng = random.Random(size)
        order = [rng.choice(keys) for _ in range(4096)]
        ints = dict.fromkeys(keys, INT_VALUE)
        strs = dict.fromkeys(keys, STR_VALUE)
        store = new_store(lib, capacity_for(strs), port, f"{tag}_s{size}")
        live.append(store)
        for kind, items, value in (("int", ints, INT_VALUE), ("str", strs, STR_VALUE)):
            store.load(items)
            out[f"set {kind} {size}"] = ns_per_op(loop(store.set, order, value),
                                                  cfg.target_s, cfg.repeat)
            out[f"get {kind} {size}"] = ns_per_op(loop(store.get, order),
                                                  cfg.target_s, cfg.repeat)
        live.remove(store)
        store.destroy()
        del store
        gc.collect()
    return out


def _worker(lib: str, handle: Any, index: int, mix_s: float, count_s: float,
            barrier: Any, results: Any) -> None:
    """One spawned process: the get/set mix, then the counter, between barriers."""
    signal.signal(signal.SIGTERM, _sigterm_exits)
    res = {"pid": os.getpid(), "ops": 0, "mix_s": 0.0, "bad": 0, "errors": 0,
           "incs": 0, "count_s": 0.0, "inc_errors": 0, "error": None}
    store = None
    try:
        store = ATTACH[lib](handle)
        get, set_ = store.get, store.set
        rng = random.Random(index)
        keys = [f"mix{i}" for i in range(MIX_KEYS)]
        plan = [(rng.random() < GET_SHARE, rng.choice(keys)) for _ in range(4096)]
        mine = index * 1_000_000_000
        barrier.wait(timeout=120)
        ops = bad = errors = 0
        t0 = time.perf_counter()
        end = t0 + mix_s
        while time.perf_counter() < end:
            for is_get, k in plan[ops & 4095:(ops & 4095) + 32]:
                try:
                    if is_get:
                        v = get(k)
                        if type(v) is not int or v < 0:
                            bad += 1
                    else:
                        set_(k, mine + ops)
                except Exception:
                    errors += 1
                ops += 1
        res.update(ops=ops, mix_s=time.perf_counter() - t0, bad=bad, errors=errors)
        barrier.wait(timeout=120)
        incs = inc_errors = 0
        incr = store.incr
        t0 = time.perf_counter()
        end = t0 + count_s
        while time.perf_counter() < end:
            for _ in range(8):
                try:
                    incr(COUNTER)
                    incs += 1
                except Exception:
                    inc_errors += 1
        res.update(incs=incs, count_s=time.perf_counter() - t0, inc_errors=inc_errors)
    except BaseException as e:
        res["error"] = short(f"{type(e).__name__}: {e}")
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
        results.put(res)


def multi_process(lib: str, cfg: Config, port: int, tag: str, live: list[Any],
                  pids: list[int]) -> dict[int, dict[str, Any]]:
    ctx = mp.get_context("spawn")
    out: dict[int, dict[str, Any]] = {}
    for nprocs in cfg.procs:
        items: dict[str, Any] = {f"mix{i}": i for i in range(MIX_KEYS)}
        store = new_store(lib, capacity_for({**items, COUNTER: 0}) * 4, port,
                          f"{tag}_m{nprocs}")
        live.append(store)
        store.load(items)
        if isinstance(store, RedisStore):
            store.set_counter(COUNTER, 0)
        else:
            store.set(COUNTER, 0)
        barrier = ctx.Barrier(nprocs)
        results = ctx.Queue()
        procs = [ctx.Process(target=_worker, daemon=True,
                             args=(lib, store.handle(), i + 1, cfg.mix_s, cfg.count_s,
                                   barrier, results)) for i in range(nprocs)]
        for p in procs:
            p.start()
        got = []
        finished = False
        try:
            for _ in procs:
                got.append(results.get(timeout=cfg.mix_s + cfg.count_s + 240))
            finished = True
        finally:
            for p in procs:
                if not finished:
                    p.terminate()
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=10)
            pids.extend(p.pid for p in procs if p.pid is not None)
        try:
            final: int | str = (store.counter(COUNTER) if isinstance(store, RedisStore)
                                else store.get(COUNTER))
        except Exception as e:              # a library without locks may be left corrupt
            if store.locked_counter:
                raise
            final = short(f"unreadable ({type(e).__name__})", 40)
        errors = [r["error"] for r in got if r["error"]]
        out[nprocs] = {
            "ops_per_s": sum(r["ops"] / r["mix_s"] for r in got if r["mix_s"]),
            "bad": sum(r["bad"] for r in got), "errors": sum(r["errors"] for r in got),
            "incs_per_s": sum(r["incs"] / r["count_s"] for r in got if r["count_s"]),
            "incs": sum(r["incs"] for r in got), "final": final,
            "inc_errors": sum(r["inc_errors"] for r in got),
            "locked": store.locked_counter, "lock": store.lock_desc,
            "worker_errors": errors,
        }
        live.remove(store)
        store.destroy()
        del store
        gc.collect()
    return out


def run_library(lib: str, cfg: Config, port: int, tag: str, results: Any) -> None:
    """The body of one library's process: every workload, then its cleanup."""
    signal.signal(signal.SIGTERM, _sigterm_exits)
    res: dict[str, Any] = {"lib": lib, "single": {}, "multi": {}, "pids": [os.getpid()],
                           "error": None}
    live: list[Any] = []
    try:
        res["single"] = single_process(lib, cfg, port, tag, live)
        if lib == REDIS:
            res["raw_get_ns"] = raw_redis_get_ns(port, cfg)
        if lib not in SINGLE_ONLY:
            res["multi"] = multi_process(lib, cfg, port, tag, live, res["pids"])
    except BaseException:
        res["error"] = short(traceback.format_exc(limit=4).strip().splitlines()[-1])
        traceback.print_exc()
    finally:
        for store in live:
            with contextlib.suppress(Exception):
                store.destroy()
        results.put(res)


# -- the redis server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A throwaway redis-server on a free loopback port, persistence off, always stopped."""
    import redis
    server = redis_server_path()
    assert server is not None
    workdir = tempfile.mkdtemp(prefix="shmshare-bench-redis-")
    proc = None
    try:
        for _attempt in range(5):
            port = free_port()
            proc = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir, "--daemonize", "no",
                 "--logfile", os.path.join(workdir, "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
                    if client.ping():
                        client.close()
                        break
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
            else:
                proc.kill()
                proc.wait()
                proc = None
                continue                    # port taken in the meantime: try another
            yield proc, port
            return
        raise RuntimeError("redis-server did not answer PING on any of 5 free ports")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# -- leftovers -----------------------------------------------------------------------------


def sysv_segments() -> dict[int, int]:
    """shmid -> creator pid, for every System V segment on the machine."""
    out = {}
    with contextlib.suppress(OSError), open("/proc/sysvipc/shm") as f:
        next(f)
        for line in f:
            cols = line.split()
            out[int(cols[1])] = int(cols[4])
    return out


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def leftovers(before_sysv: dict[int, int], before_posix: set[str], pids: set[int],
              tag: str) -> tuple[list[str], list[str]]:
    """What this run left (removed here and reported), and new entries not its own."""
    ours, others = [], []
    for shmid, cpid in sysv_segments().items():
        if shmid not in before_sysv and cpid in pids:
            subprocess.run(["ipcrm", "-m", str(shmid)], capture_output=True, check=False)
            ours.append(f"System V shmid {shmid} (creator pid {cpid})")
    for name in sorted(dev_shm() - before_posix):
        if tag in name:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join("/dev/shm", name))
            ours.append(f"/dev/shm/{name}")
        else:
            others.append(f"/dev/shm/{name}")
    return ours, others


# -- report --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "—"
    return f"{ns:,.0f}" if ns >= 10 else f"{ns:,.1f}"


def fmt_faster(ratio: float | None) -> str:
    """``ratio`` = their time / our time."""
    if ratio is None:
        return "—"
    if ratio >= 1:
        return f"{ratio:,.1f}x faster"
    return f"{1 / ratio:,.1f}x slower"


def single_tables(results: dict[str, dict[str, Any]], cfg: Config) -> list[str]:
    lines = []
    for size in cfg.sizes:
        lines += [f"### {size:,} keys: single process, ns per operation (best of "
                  f"{cfg.repeat} runs)", "",
                  "| library | op | int ns/op | str ns/op | int vs Manager | str vs Manager "
                  "| int x floor | str x floor |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for lib, res in results.items():
            single = res.get("single") or {}
            if not single:
                continue
            for op in ("set", "get"):
                cells = [lib, op]
                vals = [single.get(f"{op} {kind} {size}") for kind in ("int", "str")]
                cells += [fmt_ns(v) for v in vals]
                for kind, v in zip(("int", "str"), vals, strict=True):
                    m = results.get(MGR, {}).get("single", {}).get(f"{op} {kind} {size}")
                    cells.append("baseline" if lib == MGR else
                                 fmt_faster(m / v) if m and v else "—")
                for kind, v in zip(("int", "str"), vals, strict=True):
                    f = results.get(FLOOR, {}).get("single", {}).get(f"{op} {kind} {size}")
                    cells.append(f"{v / f:,.2f}" if f and v else "—")
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def multi_tables(results: dict[str, dict[str, Any]], cfg: Config) -> tuple[list[str], bool]:
    ok = True
    mix = ["### Spawned processes, 80 % get / 20 % set of ints on 1,000 shared keys", "",
           "| library | processes | total ops/s | ns per op (wall / ops) | vs Manager "
           "| reads not an int | errors | consistent |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    cnt = ["### Spawned processes incrementing one shared counter with the library's lock", "",
           "| library | processes | increments/s | vs Manager | final count | increments "
           "done | exact | locking |",
           "|---|---:|---:|---:|---:|---:|---|---|"]
    for lib, res in results.items():
        for nprocs, m in (res.get("multi") or {}).items():
            man = results.get(MGR, {}).get("multi", {}).get(nprocs)
            strict = m["locked"]              # a library with a real cross-process lock
            consistent = m["bad"] == 0 and m["errors"] == 0 and not m["worker_errors"]
            if strict and not consistent:
                ok = False
            if strict:
                verdict = "yes" if consistent else "**NO**"
            else:
                verdict = ("yes" if consistent else "no") + " (not checked: no lock)"
            rate = m["ops_per_s"]
            vs = ("baseline" if lib == MGR else
                  fmt_faster(rate / man["ops_per_s"]) if man and rate else "—")
            mix.append(f"| {lib} | {nprocs} | {rate:,.0f} | {fmt_ns(1e9 / rate if rate else None)} "
                       f"| {vs} "
                       f"| {m['bad']:,} | {m['errors']:,} | {verdict} |")
            exact = m["final"] == m["incs"] and m["inc_errors"] == 0 and not m["worker_errors"]
            if strict and not exact:
                ok = False
            if strict:
                verdict = "yes" if exact else "**NO**"
            elif isinstance(m["final"], int):
                verdict = f"not checked (no lock; {m['incs'] - m['final']:,} lost)"
            else:
                verdict = "not checked (no lock; the dict was left unreadable)"
            if m["inc_errors"]:
                verdict += f"; {m['inc_errors']:,} increments raised"
            irate = m["incs_per_s"]
            final = f"{m['final']:,}" if isinstance(m["final"], int) else m["final"]
            vs = ("baseline" if lib == MGR else "— (no lock)" if not strict else
                  fmt_faster(irate / man["incs_per_s"]) if man and irate else "—")
            cnt.append(f"| {lib} | {nprocs} | {irate:,.0f} | {vs} "
                       f"| {final} | {m['incs']:,} | {verdict} | {m['lock']} |")
    return [*mix, "", *cnt, ""], ok


def plot(results: dict[str, dict[str, Any]], cfg: Config, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 10_000 if 10_000 in cfg.sizes else cfg.sizes[-1]
    workloads: list[tuple[str, Callable[[dict[str, Any]], float | None]]] = []
    for op in ("set", "get"):
        for kind in ("int", "str"):
            key = f"{op} {kind} {size}"
            workloads.append((f"{op} {kind}\n({size:,} keys)",
                              lambda r, key=key: r.get("single", {}).get(key)))
    for nprocs in cfg.procs:
        def mix(r: dict[str, Any], n: int = nprocs) -> float | None:
            m = r.get("multi", {}).get(n)
            return 1e9 / m["ops_per_s"] if m and m["ops_per_s"] else None
        workloads.append((f"80/20 get/set\n{nprocs} processes", mix))
    unlocked: set[tuple[str, str]] = set()
    for nprocs in cfg.procs:
        def inc(r: dict[str, Any], n: int = nprocs) -> float | None:
            m = r.get("multi", {}).get(n)
            return 1e9 / m["incs_per_s"] if m and m["incs_per_s"] else None
        label = f"locked counter\n{nprocs} processes"
        workloads.append((label, inc))
        unlocked |= {(lib, label) for lib, r in results.items()
                     if (m := r.get("multi", {}).get(nprocs)) and not m["locked"]}

    libs = [lib for lib in LIBRARIES if results.get(lib, {}).get("single")]
    colours = {FLOOR: "#9e9e9e", SHM: "#d62728", MGR: "#1f77b4", ULTRA: "#2ca02c",
               ULTRA_NL: "#98df8a", SMD: "#9467bd", REDIS: "#ff7f0e"}
    fig, ax = plt.subplots(figsize=(14, 6.5), dpi=110)
    width = 0.8 / max(len(libs), 1)
    for j, lib in enumerate(libs):
        xs, ys, hatches = [], [], []
        for i, (label, value) in enumerate(workloads):
            v = value(results[lib])
            if v:
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(v)
                hatches.append("///" if (lib, label) in unlocked else "")
        bars = ax.bar(xs, ys, width=width, label=SHORT[lib], color=colours[lib])
        for bar, hatch in zip(bars, hatches, strict=True):
            if hatch:
                bar.set_hatch(hatch)
                bar.set_edgecolor("white")
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels([w[0] for w in workloads], fontsize=10)
    ax.set_ylabel("ns per operation (log scale; lower is faster)", fontsize=11)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", which="major", alpha=0.4)
    ax.grid(axis="y", which="minor", alpha=0.12)
    ax.set_axisbelow(True)
    ax.legend(ncol=len(libs), loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=10,
              frameon=False)
    fig.text(0.01, 0.01, "several-process bars: wall time / operations of all processes; "
             "hatched: no cross-process lock, so increments are lost (not a fair race)",
             fontsize=8, color="#555555")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


NOTES = """\
How to read it:

- **floor** is a plain dict in one process holding `pickle.dumps(value)`:
  what storing serialized values costs with no sharing at all. "x floor" is
  this library's time over the floor's; "vs Manager" compares with
  `multiprocessing.Manager().dict()`.
- shmshare and UltraDict both serve a single-process `get` from a
  per-process cache while no other process has written (UltraDict even
  returns the very object it holds, without unpickling, which is why it can
  be under the floor). The spawned-process mix is where other processes'
  writes invalidate those caches.
- shared-memory-dict keeps the pickle of the whole dict in one segment: each
  `get` unpickles all of it and each `set` rewrites all of it, so its cost
  grows with the number of keys. It has no cross-process lock, so its
  counter loses increments and its reads may see a half-written pickle
  (counted as errors); neither is held against it here, only reported.
- UltraDict is created with `shared_lock=True` (its cross-process lock,
  which needs the `atomics` package), a 1 MiB update stream and a fixed-size
  full-dump segment. Without `shared_lock` its lock is a per-process
  `multiprocessing.RLock`, which does not exclude writers in other spawned
  processes; the "shared_lock=False" rows measure that mode in one process
  only, to show what the shared lock costs.
- redis values are pickled like everyone else's and go over TCP on
  127.0.0.1 to a `redis-server` started for this run with persistence off;
  the bare-socket round trip under "Checks" is the server and loopback
  share of redis-py's time (measured a few seconds later, so it is as noisy).
- Each library runs in its own freshly spawned process, one library at a
  time; multi-process workloads run for a fixed time and count operations.
- On a small VM the numbers that cross processes through a socket
  (Manager, redis) vary the most from run to run (2-4x between runs here):
  compare ratios within one run, and re-run to get your own.
"""


def report(results: dict[str, dict[str, Any]], avail: dict[str, str | None], cfg: Config,
           vers: dict[str, str], mach: dict[str, str], command: str, elapsed: float,
           leak_lines: list[str], png: str | None) -> tuple[str, str, bool]:
    """(markdown for the file, tables for the terminal, all checks passed)."""
    head = ["# shmshare compared with its peers", "",
            f"Generated by `{command}` in {elapsed:,.0f} s"
            + (" (quick mode: fewer and shorter runs, numbers are rough)" if cfg.quick else "")
            + ".", "",
            "| machine | |", "|---|---|"]
    head += [f"| {k} | {v} |" for k, v in mach.items()]
    head += ["", "| library | version / status |", "|---|---|"]
    head += [f"| {k} | {v} |" for k, v in vers.items()]
    head.append("")
    status = ["## Libraries", "", "| library | measured |", "|---|---|"]
    for lib in LIBRARIES:
        if avail.get(lib):
            state = avail[lib]
        elif results.get(lib, {}).get("error"):
            state = f"failed: {results[lib]['error']}"
        else:
            state = "yes"
        status.append(f"| {lib} | {state} |")
    status.append("")
    ok = all(not results.get(lib, {}).get("error") for lib in (FLOOR, SHM, MGR))
    body = ["## Single process", "", *single_tables(results, cfg)]
    multi, multi_ok = multi_tables(results, cfg)
    ok = ok and multi_ok
    body += ["## Several processes", "", *multi]
    checks = ["## Checks", ""]
    checks.append("- correctness checks (reads, exact counters) of libraries with a "
                  "cross-process lock: " + ("passed" if multi_ok else "**FAILED**"))
    checks += [f"- {line}" for line in leak_lines]
    raw = results.get(REDIS, {}).get("raw_get_ns")
    if raw:
        checks.append(f"- for scale: a redis GET round trip over a bare socket (no redis-py, "
                      f"best of {cfg.repeat} runs) took {fmt_ns(raw)} ns in this run")
    checks.append("")
    md = head + status + ([f"![ns per operation, log scale]({png})", ""] if png else []) \
        + body + checks + ["## Notes", "", NOTES]
    terminal = status + body + checks
    return "\n".join(md), "\n".join(terminal), ok


# -- main ----------------------------------------------------------------------------------


def run_in_own_process(ctx: Any, lib: str, cfg: Config, port: int, tag: str) -> dict[str, Any]:
    """Run one library's workloads in a fresh spawned process; stop it if it hangs."""
    q = ctx.Queue()
    p = ctx.Process(target=run_library, args=(lib, cfg, port, tag, q))
    p.start()
    try:
        res: dict[str, Any] = q.get(timeout=cfg.lib_timeout)
    except queue.Empty:
        res = {"lib": lib, "single": {}, "multi": {}, "pids": [],
               "error": f"no result within {cfg.lib_timeout:.0f} s"}
    except BaseException:                   # interrupted: its SIGTERM handler cleans up
        p.terminate()
        raise
    finally:
        p.join(timeout=60)
        if p.is_alive():
            p.terminate()
            p.join(timeout=30)
        if p.is_alive():
            p.kill()
            p.join()
        q.close()
        q.join_thread()
    if p.pid is not None:
        res.setdefault("pids", []).append(p.pid)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer, shorter runs (a smoke test, under a minute)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs",
                    help="directory for benchmarks-compare.md and img/compare.png "
                         "(default: docs/)")
    args = ap.parse_args()
    cfg = Config.make(args.quick)
    command = shlex.join(["python", *sys.argv])
    t_start = time.perf_counter()
    signal.signal(signal.SIGTERM, _sigterm_exits)

    tag = f"shmcmp{os.getpid()}"
    before_sysv, before_posix = sysv_segments(), dev_shm()
    avail = availability()
    mach, vers = machine(), versions()
    print(f"# shmshare compared with its peers — {mach['CPU']}, {mach['cores']}, "
          f"{mach['kernel']}, Python {platform.python_version()}\n", flush=True)

    ctx = mp.get_context("spawn")
    results: dict[str, dict[str, Any]] = {}
    pids = {os.getpid()}
    server_note = "no redis-server was started"
    interrupted = ""
    with contextlib.ExitStack() as stack:
        port = 0
        if avail[REDIS] is None:
            try:
                proc, port = stack.enter_context(redis_server())
                pids.add(proc.pid)
                server_note = f"redis-server (pid {proc.pid}, port {port})"
            except Exception as e:
                avail[REDIS] = f"redis-server did not start: {e}"
        try:
            for lib in LIBRARIES:
                if avail[lib]:
                    print(f"{lib}: {avail[lib]}", flush=True)
                    continue
                t0 = time.perf_counter()
                res = run_in_own_process(ctx, lib, cfg, port, f"{tag}_{len(results)}")
                pids.update(res.get("pids", []))
                results[lib] = res
                state = f"failed: {res['error']}" if res["error"] else "done"
                print(f"{lib}: {state} in {time.perf_counter() - t0:,.1f} s", flush=True)
        except (KeyboardInterrupt, SystemExit) as e:
            interrupted = f"interrupted ({type(e).__name__}: {e})"
    server_gone = True
    if server_note.startswith("redis-server"):
        server_gone = proc.poll() is not None
        server_note += " stopped" if server_gone else " STILL RUNNING"

    # Let finalizers of this process (semaphores of the queues) run before looking.
    gc.collect()
    time.sleep(0.2)
    ours, others = leftovers(before_sysv, before_posix, pids, tag)
    leak_lines = [
        "shared memory left behind by this run: "
        + ("none (System V segments by creator pid, /dev/shm by this run's names)"
           if not ours else "**" + ", ".join(ours) + "** (removed now)"),
        f"server: {server_note}",
    ]
    if others:
        leak_lines.append("new in /dev/shm during the run but not named by it (other "
                          "processes?): " + ", ".join(others))
    if interrupted:
        print(f"{interrupted}: no report written; server: {server_note}; left behind: "
              + (", ".join(ours) + " (removed now)" if ours else "nothing"), file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - t_start
    mach["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    plot_failed = False
    png_rel = "img/compare.png"
    png_path = args.out / png_rel
    title = (f"shmshare and peers, ns per operation — {mach['CPU']}, "
             f"{os.cpu_count()} cpus, Python {platform.python_version()}, {mach['date']}"
             + (" (--quick: rough)" if cfg.quick else ""))
    try:
        plot(results, cfg, png_path, title)
        png: str | None = png_rel
    except ImportError:
        png = None
        leak_lines.append("matplotlib is not installed: no plot was drawn")
    except Exception as e:
        png = None
        plot_failed = True
        leak_lines.append(f"**the plot failed**: {short(f'{type(e).__name__}: {e}')}")
    md, terminal, ok = report(results, avail, cfg, vers, mach, command, elapsed, leak_lines,
                              png)
    ok = ok and not ours and server_gone and not plot_failed
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks-compare.md").write_text(md + "\n")
    print()
    print(terminal)
    print(f"wrote {args.out / 'benchmarks-compare.md'}"
          + (f" and {png_path}" if png else ""))
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
