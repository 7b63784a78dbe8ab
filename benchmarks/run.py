"""Every benchmark of shmshare in one run: its paths against their floors, and its peers.

Run:  python benchmarks/run.py [--quick] [--rounds N] [--out DIR]

One process tree on this machine measures every cell (one path of one
library) in interleaved rounds: round 1 runs each cell once, round 2 runs
each again (in a rotated order), and so on, so that a burst of load from
other processes hits all cells alike.  Each cell reports the median and the
min-max spread of its rounds, and each ratio is computed per round (the two
cells of a round ran seconds apart) and reported the same way.  At least 3
rounds are always run: no ratio comes from a single run.

The machine's load average is printed at the start, after every round and
at the end.  Peers are measured when installed (``pip install -e '.[bench]'``):
multiprocessing.Manager, UltraDict, shared-memory-dict, and redis-py with a
``redis-server`` that this script starts on a free loopback port (and always
stops).  Writes ``DIR/benchmarks.md``, ``DIR/benchmarks-compare.md`` and,
when matplotlib is installed, ``DIR/img/compare.png`` (DIR: ``docs/``).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells  # noqa: E402  (benchmarks/cells.py: what is measured)
import report  # noqa: E402  (benchmarks/report.py: the tables and the plot)


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def steady_malloc() -> str:
    """Fix glibc malloc's thresholds for this process and the Pool's forked workers.

    glibc adapts them as it goes: freeing a large block raises the size above
    which it maps fresh memory, and a free at the top of the heap may hand pages
    back.  A 10 MiB allocation then either reuses pages or faults about 2,560
    fresh ones, at random and on either side of a comparison (seen: a ratio of
    0.43x in one run, 2.52x in the next).  Fixed, large allocations come from
    the heap and its pages are kept, for every side alike: the steady state of
    a process that keeps doing the same thing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "not glibc: left as it is"
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    if mallopt(m_mmap_threshold, 32 << 20) != 1 or mallopt(m_trim_threshold, 1 << 30) != 1:
        return "mallopt refused: left as it is"
    return "glibc, fixed: M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 1 GiB"


def run_rounds(suite: cells.Suite, rounds: int, log: Callable[[str], None]
               ) -> dict[str, list[float]]:
    """Every cell once per round, the order rotated by one cell each round."""
    names = list(suite.cells)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        t0 = time.perf_counter()
        for name in names[shift:] + names[:shift]:
            gc.collect()
            try:
                out[name].append(suite.cells[name]())
            except Exception as e:  # one broken peer must not sink the run
                suite.errors[name] = f"{type(e).__name__}: {e}"[:160]
        log(f"round {r + 1}/{rounds}: {time.perf_counter() - t0:.1f} s, load {load()}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="shorter cells and the minimum of 3 rounds (about a minute)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (at least 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs",
                    help="where benchmarks.md, benchmarks-compare.md and img/ go")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    rounds = max(3, args.rounds or (3 if args.quick else 5))
    started = time.perf_counter()
    malloc = steady_malloc()
    mach = {
        "CPU": cells.cpu_name(),
        "cores": f"{os.cpu_count()} logical",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load average at start (1/5/15 min)": load(),
        "default project dir": cells.default_dir_text(),
        "malloc": malloc,
    }
    print(f"# shmshare benchmarks — {mach['CPU']}, {mach['cores']}, Python "
          f"{mach['Python']}, load {mach['load average at start (1/5/15 min)']}", flush=True)
    with cells.Suite(quick=args.quick) as suite:
        for name, why in suite.missing.items():
            print(f"{name}: {why}", flush=True)
        print(f"{len(suite.cells)} cells, {rounds} rounds", flush=True)
        results = run_rounds(suite, rounds, lambda s: print(s, flush=True))
        errors = dict(suite.errors)
        missing = dict(suite.missing)
        versions = suite.versions()
    mach["load average at end (1/5/15 min)"] = load()
    command = shlex.join(["python", "benchmarks/run.py", *(argv if argv is not None
                                                            else sys.argv[1:])])
    elapsed = time.perf_counter() - started
    docs = report.Report(results, errors, missing, mach, versions, command, elapsed,
                         rounds, args.quick)
    print()
    print(docs.targets_md())
    print(docs.others_md())
    print(docs.peers_md())
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        png = docs.plot(args.out / "img" / "compare.png")
        (args.out / "benchmarks.md").write_text(docs.benchmarks_page())
        (args.out / "benchmarks-compare.md").write_text(docs.compare_page(png))
        print(f"wrote {args.out / 'benchmarks.md'}, {args.out / 'benchmarks-compare.md'}"
              + (f" and {args.out / 'img' / 'compare.png'}" if png else ""))
    for name, err in errors.items():
        print(f"FAILED {name}: {err}", file=sys.stderr)
    return 1 if errors or suite.leaks else 0


if __name__ == "__main__":
    sys.exit(main())
