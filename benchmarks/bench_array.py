"""SharedArray vs local numpy arrays and passing arrays by value.

Run:  python benchmarks/bench_array.py [--mib N]

One run, one process tree; prints a markdown table:
1. numpy fill of an N MiB array: SharedArray vs a local array (target within 1.25x);
2. the pickled size of the SharedArray (it pickles by reference);
3. a 2-worker Pool summing the array: passed as a SharedArray vs passed by value.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import pickle
import platform
import time
from typing import Any

import numpy as np

import shmshare


def best(fn: Any, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _sum_part(args: tuple[Any, int, int]) -> float:
    a, lo, hi = args
    arr = a.numpy() if isinstance(a, shmshare.SharedArray) else a
    return float(arr[lo:hi].sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    n = args.mib * (1 << 20) // 8
    print(f"# SharedArray — {platform.node()}, {mp.cpu_count()} cpus, Python "
          f"{platform.python_version()}, numpy {np.__version__}, {args.mib} MiB float64\n")
    local = np.empty(n)
    shared = shmshare.SharedArray(n, "float64")
    view = shared.numpy()
    fill_shared = functools.partial(view.fill, 1.5)
    t_local = best(functools.partial(local.fill, 1.5))
    t_shared = best(fill_shared)
    del fill_shared, view  # views must be gone before the detach below
    size = len(pickle.dumps(shared))
    halves = [(0, n // 2), (n // 2, n)]
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        pool.map(_sum_part, [(shared, 0, 1)] * 2)  # warm the workers
        t_ref = best(lambda: pool.map(_sum_part, [(shared, lo, hi) for lo, hi in halves]), 3)
        t_val = best(lambda: pool.map(_sum_part, [(local, lo, hi) for lo, hi in halves]), 3)
    print("| measurement | SharedArray | local / by value | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| numpy fill | {t_shared * 1e3:,.1f} ms | {t_local * 1e3:,.1f} ms "
          f"| {t_shared / t_local:.2f}x the local time |")
    print(f"| pickled size | {size} bytes | {len(pickle.dumps(local)):,} bytes | — |")
    print(f"| 2-worker Pool sum | {t_ref * 1e3:,.1f} ms | {t_val * 1e3:,.1f} ms "
          f"| {t_val / t_ref:.1f}x faster by reference |")
    shared.detach()


if __name__ == "__main__":
    main()
