"""Exact counters shared by a pool of spawned workers: ``apply`` and ``with d.lock``.

Each of 400 tasks, spread over a ``spawn`` Pool of 4 workers, updates counters in
one anonymous SharedDict:

* ``d.apply("total", f)`` — an atomic read-modify-write of ONE key;
* ``with d.lock:`` — several keys changed together, seen consistent by everybody;
* and, for contrast, ``d[k] = d[k] + 1`` with no lock: two workers can read the
  same old value, and one increment is lost (each operation alone is atomic,
  the read-then-write is not).

Run:  python examples/pool_counters.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import shmshare

WORKERS = 4
TASKS = 400


def task(args: tuple[shmshare.SharedDict, int]) -> int:
    counters, i = args  # the SharedDict arrives pickled by reference: same memory
    # One key: apply() runs the function under the dict's robust lock.
    counters.apply("total", lambda t: t + i, default=0)
    # Several keys at once: hold the lock; operations inside it take it again (reentrant).
    with counters.lock:
        counters["hits"] = counters.get("hits", 0) + 1
        mine = f"by pid {os.getpid()}"
        counters[mine] = counters.get(mine, 0) + 1
    # The classic mistake, kept out of the checks: read, then write, with no lock.
    # (The sleep stands for real work between the two; it widens the race window.)
    seen = counters.get("unlocked", 0)
    time.sleep(0.005)
    counters["unlocked"] = seen + 1
    return os.getpid()


def main() -> int:
    counters = shmshare.SharedDict()  # anonymous: lives while this process or a worker uses it
    with mp.get_context("spawn").Pool(WORKERS) as pool:
        pids = set(pool.map(task, [(counters, i) for i in range(TASKS)], chunksize=5))

    result = counters.copy()  # a plain dict snapshot
    counters.detach()         # the last user: the memory is freed now
    per_worker = {k: v for k, v in result.items() if k.startswith("by pid ")}
    print("tasks per worker:", sorted(per_worker.values(), reverse=True))
    print(f"without the lock: unlocked={result['unlocked']} "
          f"({TASKS - result['unlocked']} increments lost to the race)")

    expected_total = sum(range(TASKS))
    ok = (result["hits"] == TASKS and result["total"] == expected_total
          and sum(per_worker.values()) == TASKS
          and {int(k.split()[-1]) for k in per_worker} == pids
          and result["unlocked"] <= TASKS)
    if not ok:
        print("FAILED:", result)
        return 1
    print(f"OK: {WORKERS} workers, {TASKS} tasks: hits={result['hits']}, "
          f"total={result['total']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
