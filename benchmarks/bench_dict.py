"""SharedDict vs multiprocessing.Manager().dict() vs a local dict of pickled values.

Run:  python benchmarks/bench_dict.py [--quick]

Everything is measured in one run, in one process tree, on this machine, and
printed as markdown tables:

1. ns/op for set and get of small values (an int under a short str key);
   "floor" is a local dict storing pickled values — the cost any design that
   stores serialized values must pay — so "x floor" says how close to it we are.
   SharedDict serves a get from a per-process cache of pickled bytes while no
   process has changed the dict; the "get after a change" row is the uncached
   path (one locked C call), measured as (set + get) - set.
2. the same get/set at 100 ... 1,000,000 keys (cost should stay flat).
3. two spawned processes doing ``with lock: d["c"] += 1``, rate and exactness.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import platform
import random
import time
from collections.abc import Callable
from typing import Any

import shmshare

VALUE = 12345


def ns_per_op(fn: Callable[[int], None], n: int, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``fn(n)`` (which does n operations), in ns per operation."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def bench_mapping(set_one: Callable[[str, Any], None], get_one: Callable[[str], Any],
                  keys: list[str], n: int, repeat: int) -> tuple[float, float]:
    rng = random.Random(0)
    order = [rng.choice(keys) for _ in range(n)]

    def sets(count: int) -> None:
        for k in order[:count]:
            set_one(k, VALUE)

    def gets(count: int) -> None:
        for k in order[:count]:
            get_one(k)

    for k in keys:
        set_one(k, VALUE)
    return ns_per_op(sets, n, repeat), ns_per_op(gets, n, repeat)


def small_ops(n: int, manager_n: int, repeat: int) -> dict[str, tuple[float, float]]:
    keys = [f"key{i}" for i in range(1000)]
    results = {}

    floor: dict[str, bytes] = {}
    results["local dict of pickles (floor)"] = bench_mapping(
        lambda k, v: floor.__setitem__(k, pickle.dumps(v, 5)),
        lambda k: pickle.loads(floor[k]), keys, n, repeat)

    d = shmshare.SharedDict()
    results["shmshare.SharedDict"] = bench_mapping(d.__setitem__, d.__getitem__, keys, n,
                                                   repeat)
    # The same get when the read cache is always stale: each get follows a
    # change (here a set of another key), so it takes the locked C path.
    # Its cost is (set + get) - set, both measured in the same way.
    def set_other(k: str, v: Any) -> None:
        d["other"] = v

    def set_then_get(k: str) -> Any:
        d["other"] = VALUE
        return d[k]

    pair = bench_mapping(set_other, set_then_get, keys, n, repeat)[1]
    only_set = bench_mapping(set_other, lambda k: set_other(k, VALUE), keys, n, repeat)[1]
    results["shmshare.SharedDict, get after a change (no cache)"] = (
        results["shmshare.SharedDict"][0], max(pair - only_set, 1.0))
    d.detach()

    with mp.Manager() as manager:
        md = manager.dict()
        results["multiprocessing.Manager().dict()"] = bench_mapping(
            md.__setitem__, md.__getitem__, keys, manager_n, repeat)
    return results


def size_scaling(sizes: list[int], n: int, repeat: int) -> list[tuple[int, float, float]]:
    rows = []
    for size in sizes:
        d = shmshare.SharedDict()
        with d.lock:
            for i in range(size):
                d[f"key{i}"] = VALUE
        keys = [f"key{i}" for i in random.Random(1).sample(range(size), min(size, 1000))]
        s, g = bench_mapping(d.__setitem__, d.__getitem__, keys, n, repeat)
        rows.append((size, s, g))
        d.detach()
    return rows


def _increment(d: Any, lock: Any, n: int) -> None:
    for _ in range(n):
        with lock:
            d["c"] += 1


def locked_increments(n: int, manager_n: int) -> dict[str, tuple[float, int, int]]:
    ctx = mp.get_context("spawn")

    def run(d: Any, lock: Any, count: int) -> tuple[float, int, int]:
        d["c"] = 0
        procs = [ctx.Process(target=_increment, args=(d, lock, count)) for _ in range(2)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - t0
        return 2 * count / elapsed, d["c"], 2 * count

    results = {}
    sd = shmshare.SharedDict()
    results["shmshare.SharedDict"] = run(sd, sd.lock, n)
    sd.detach()
    with mp.Manager() as manager:
        results["multiprocessing.Manager().dict()"] = run(manager.dict(), manager.Lock(),
                                                          manager_n)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer operations (a smoke run)")
    args = ap.parse_args()
    n, manager_n, repeat = (20_000, 2_000, 3) if args.quick else (200_000, 20_000, 5)
    sizes = [100, 10_000, 100_000] if args.quick else [100, 10_000, 100_000, 1_000_000]
    inc_n, inc_manager_n = (5_000, 1_000) if args.quick else (50_000, 5_000)

    print(f"# SharedDict benchmark — {platform.node()}, {platform.machine()}, "
          f"{mp.cpu_count()} cpus, Python {platform.python_version()}, "
          f"shmshare {shmshare.__version__}\n")

    small = small_ops(n, manager_n, repeat)
    floor_set, floor_get = small["local dict of pickles (floor)"]
    man_set, man_get = small["multiprocessing.Manager().dict()"]
    print("## set / get of a small value (ns/op, best of runs)\n")
    print("| implementation | set ns | get ns | set vs Manager | get vs Manager "
          "| set x floor | get x floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (s, g) in small.items():
        print(f"| {name} | {s:,.0f} | {g:,.0f} | {man_set / s:,.1f}x faster "
              f"| {man_get / g:,.1f}x faster | {s / floor_set:.2f} | {g / floor_get:.2f} |")

    print("\n## SharedDict cost by size (ns/op)\n")
    print("| keys | set ns | get ns |")
    print("|---:|---:|---:|")
    for size, s, g in size_scaling(sizes, n // 4, repeat):
        print(f"| {size:,} | {s:,.0f} | {g:,.0f} |")

    print("\n## two spawned processes doing `with lock: d['c'] += 1`\n")
    print("| implementation | increments/s | final count | expected | exact |")
    print("|---|---:|---:|---:|---|")
    inc = locked_increments(inc_n, inc_manager_n)
    for name, (rate, got, want) in inc.items():
        print(f"| {name} | {rate:,.0f} | {got:,} | {want:,} | {'yes' if got == want else 'NO'} |")
    ratio = inc["shmshare.SharedDict"][0] / inc["multiprocessing.Manager().dict()"][0]
    print(f"\nlocked increments: shmshare is {ratio:,.1f}x Manager's rate")


if __name__ == "__main__":
    main()
