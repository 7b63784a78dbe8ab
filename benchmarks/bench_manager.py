"""Each Manager typeid's main operation: shmshare.Manager(), shmshare.Manager(url=...) on a
local redis-server, and multiprocessing.Manager().

Run:  python benchmarks/bench_manager.py [--quick] [--rounds N] [--no-redis]

One process tree, this machine.  Every round times every operation on every
manager in turn (interleaved, so that a load change hits all alike); the table
gives the median ns/op over the rounds with the min-max, and each one's ratio
to multiprocessing's (above 1: faster than multiprocessing).  The Redis
manager talks to a redis-server this script starts on a unix socket (as
multiprocessing's manager listens on one), so both pay a local round trip.
Operations a manager does not provide are listed as such, not skipped.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import shmshare

Case = Callable[[], Any] | None


def ns_per_op(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def cases(m: Any) -> dict[str, Case]:
    """The operation timed for each typeid, built on manager ``m`` (None: not provided)."""
    d = m.dict({"k": 1})
    lst = m.list([1, 2, 3])
    ns = m.Namespace(x=1)
    v = m.Value("i", 1)
    out: dict[str, Case] = {
        "dict: d['k'] = 1": lambda: d.__setitem__("k", 1),
        "dict: d['k']": lambda: d["k"],
        "list: lst.append(1); lst.pop()": lambda: (lst.append(1), lst.pop()),
        "list: lst[1]": lambda: lst[1],
        "list: lst.insert(0, 1); del lst[0]": lambda: (lst.insert(0, 1), lst.__delitem__(0)),
        "Namespace: ns.x = 1": lambda: setattr(ns, "x", 1),
        "Namespace: ns.x": lambda: ns.x,
        "Value: v.value = 1": lambda: setattr(v, "value", 1),
        "Value: v.value": lambda: v.value,
        "set: s.add(1)": None,
        "set: 1 in s": None,
    }
    if hasattr(m, "set"):  # multiprocessing's managers have set() from Python 3.14
        s = m.set({1})
        out["set: s.add(1)"] = lambda: s.add(1)
        out["set: 1 in s"] = lambda: 1 in s
    for typeid in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
        lock = getattr(m, typeid)()
        out[f"{typeid}: acquire/release"] = lambda lock=lock: (lock.acquire(), lock.release())
    e = m.Event()
    out["Event: is_set()"] = e.is_set
    out["Event: set(); clear()"] = lambda: (e.set(), e.clear())
    c = m.Condition()
    out["Condition: with c: c.notify()"] = lambda: _notify(c)
    b = m.Barrier(1)
    out["Barrier(1): wait()"] = b.wait
    q = m.Queue()
    out["Queue: put/get"] = lambda: (q.put(1), q.get())
    jq = m.JoinableQueue()
    out["JoinableQueue: put/get/task_done"] = lambda: (jq.put(1), jq.get(), jq.task_done())
    a = m.Array("i", [1, 2, 3])
    out["Array: a[0]"] = lambda: a[0]
    out["Array: a[0] = 1"] = lambda: a.__setitem__(0, 1)
    return out


def _notify(c: Any) -> None:
    with c:
        c.notify()


@contextmanager
def redis_url() -> Iterator[str | None]:
    """A redis-server on a unix socket of a temp dir, for the run; None if there is none."""
    server = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        redis = None  # type: ignore[assignment]
    if server is None or redis is None:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="shmshare-bench-"))
    sock, password = tmp / "redis.sock", secrets.token_hex(8)
    proc = subprocess.Popen([server, "--port", "0", "--unixsocket", str(sock),
                             "--unixsocketperm", "700", "--requirepass", password,
                             "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis(unix_socket_path=str(sock), password=password,
                               socket_timeout=1).ping():
                    break
            except (redis.exceptions.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"unix://:{password}@{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _cell(times: list[float] | None) -> str:
    if not times:
        return "not provided"
    return f"{statistics.median(times):,.0f} ({min(times):,.0f}-{max(times):,.0f})"


def _ratio(ours: list[float] | None, theirs: list[float] | None) -> str:
    if not ours or not theirs:
        return "—"
    return f"{statistics.median(theirs) / statistics.median(ours):,.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer operations per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--no-redis", action="store_true", help="leave out Manager(url=...)")
    args = ap.parse_args()
    n_shm, n_far = (500, 50) if args.quick else (5_000, 300)
    load = os.getloadavg()
    print(f"# Manager typeids — {platform.node()}, {mp.cpu_count()} cpus, load "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, Python {platform.python_version()}, "
          f"shmshare {shmshare.__version__}\n")
    print(f"ns/op: median ({args.rounds} interleaved rounds) and min-max; ratio = "
          "multiprocessing's median / this one's (above 1: faster).\n")
    with redis_url() as url, shmshare.Manager() as shm, mp.Manager() as theirs:
        managers: dict[str, Any] = {"shm": shm, "mp": theirs}
        if url is not None and not args.no_redis:
            managers["redis"] = shmshare.Manager(url=url)
        built = {k: cases(m) for k, m in managers.items()}
        keys = list(built["mp"])
        if "redis" in managers:  # the floor: one plain round trip on the same socket
            raw = managers["redis"]._store.client
            raw.set("bench-raw", b"1")
            built["raw"] = {"raw": lambda: raw.get("bench-raw")}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for key in [*keys, "raw"]:
                for who, ops in built.items():
                    fn = ops.get(key)
                    if fn is not None:
                        n = n_shm if who == "shm" else n_far
                        fn()  # warm: first use opens connections, scripts...
                        times.setdefault((who, key), []).append(ns_per_op(fn, n))
        if "redis" in managers:
            managers["redis"].shutdown()
        has_redis = "redis" in managers
        head = "| typeid: operation | shmshare ns/op | vs mp |"
        line = "|---|---:|---:|"
        if has_redis:
            head += " Manager(url=) ns/op | vs mp |"
            line += "---:|---:|"
        print(head + " multiprocessing ns/op |")
        print(line + "---:|")
        for key in keys:
            mine, far, ref = (times.get((w, key)) for w in ("shm", "redis", "mp"))
            row = f"| {key} | {_cell(mine)} | {_ratio(mine, ref)} |"
            if has_redis:
                row += f" {_cell(far)} | {_ratio(far, ref)} |"
            print(row + f" {_cell(ref)} |")
        if has_redis:
            print(f"\nOne plain redis-py GET on the same socket (the floor of a round trip): "
                  f"{_cell(times.get(('raw', 'raw')))} ns.")
        if url is None and not args.no_redis:
            print("\nManager(url=...) not measured: no redis-server or no redis-py here.")


if __name__ == "__main__":
    main()
