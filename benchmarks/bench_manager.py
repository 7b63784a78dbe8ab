"""Each Manager typeid's main operation: shmshare.Manager() vs multiprocessing.Manager().

Run:  python benchmarks/bench_manager.py [--quick]

One run, one process tree, this machine; prints a markdown table of ns/op
and the ratio (how many times faster shmshare is).  Operations on typeids
the installed shmshare does not provide yet are listed as such, not skipped
silently.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time
from collections.abc import Callable
from typing import Any

import shmshare


def ns_per_op(fn: Callable[[], Any], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def cases(m: Any) -> dict[str, Callable[[], Any] | None]:
    """The operation timed for each typeid, built on manager ``m``."""
    d = m.dict({"k": 1})
    lst = m.list([1, 2, 3])
    ns = m.Namespace(x=1)
    v = m.Value("i", 1)
    out: dict[str, Callable[[], Any] | None] = {
        "dict: d['k'] = 1": lambda: d.__setitem__("k", 1),
        "dict: d['k']": lambda: d["k"],
        "list: lst.append(1); lst.pop()": lambda: (lst.append(1), lst.pop()),
        "list: lst[1]": lambda: lst[1],
        "Namespace: ns.x = 1": lambda: setattr(ns, "x", 1),
        "Namespace: ns.x": lambda: ns.x,
        "Value: v.value = 1": lambda: setattr(v, "value", 1),
        "Value: v.value": lambda: v.value,
    }
    if hasattr(m, "set"):
        s = m.set({1})
        out["set: 1 in s"] = lambda: 1 in s
    for typeid, op in [("Lock", "acquire/release"), ("RLock", "acquire/release"),
                       ("Semaphore", "acquire/release"), ("Event", "is_set()"),
                       ("Queue", "put/get"), ("Array", "a[0]")]:
        factory = getattr(m, typeid, None)
        key = f"{typeid}: {op}"
        if factory is None:
            out[key] = None
        elif typeid in ("Lock", "RLock", "Semaphore"):
            lock = factory()
            out[key] = lambda lock=lock: (lock.acquire(), lock.release())
        elif typeid == "Event":
            e = factory()
            out[key] = e.is_set
        elif typeid == "Queue":
            q = factory()
            out[key] = lambda q=q: (q.put(1), q.get())
        else:
            a = factory("i", [1, 2, 3])
            out[key] = lambda a=a: a[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, n_mp, repeat = (2_000, 300, 3) if args.quick else (20_000, 2_000, 5)
    print(f"# Manager typeids — {platform.node()}, {mp.cpu_count()} cpus, Python "
          f"{platform.python_version()}, shmshare {shmshare.__version__}\n")
    with shmshare.Manager() as ours, mp.Manager() as theirs:
        a, b = cases(ours), cases(theirs)
        print("| typeid: operation | shmshare ns/op | Manager ns/op | shmshare is |")
        print("|---|---:|---:|---:|")
        for key, fb in b.items():
            fa = a.get(key)
            tb = ns_per_op(fb, n_mp, repeat) if fb is not None else None
            if fa is None:
                print(f"| {key} | not in this version | {tb:,.0f} | — |")
                continue
            ta = ns_per_op(fa, n, repeat)
            ratio = f"{tb / ta:,.1f}x faster" if tb else "—"
            print(f"| {key} | {ta:,.0f} | {tb:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
