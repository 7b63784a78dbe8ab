"""Soak / crash-stress run: workers SIGKILLed at random, then a seeded checker.

Run:  python benchmarks/soak.py --seconds 60 --procs 4 --seed 1 [--kill-rate R]

N worker processes do a seeded random mix of operations on one SharedDict
(own keys per worker slot, plus an ``apply`` counter per slot), one
SharedList (append / pop), one SharedQueue (put / get) and a counter in a
second SharedDict protected only by a SharedLock.  A supervisor SIGKILLs a
random worker about R times a second (exponential gaps, seeded) and starts a
new incarnation of that slot.

Every worker appends fixed-size records to its own log file: an *intent*
before each operation and an *ack* after it returned.  An intent left last in
a killed incarnation's log is a "maybe" operation: it may or may not have
happened.  At the end all workers are killed, and the checker verifies:

* dict: each key holds the value of its last acknowledged write, or of a
  maybe write made after it; every ``apply`` counter equals its acknowledged
  increments plus at most its maybe increments;
* list and queue: no item twice, nothing never written, no acknowledged item
  lost (beyond one per maybe pop/get), no popped/got item back, values untorn;
* lock counter: the acknowledged values are distinct, and every value up to
  the final one was acknowledged or in flight (mutual exclusion held);
* ``check()`` on every object, every lock obtained within a bound;
* after the last detach, no segment created by any process of the run and no
  key file remains.

It prints a summary table and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import shmshare
from shmshare import SharedDict, SharedList, SharedQueue, _core
from shmshare.naming.keys import list_names
from shmshare.objects.sync import SharedLock

BOUND = 30.0  # seconds: a lock or a reap that takes longer is a deadlock
EMPTY = (1 << 64) - 1
KEYS = 24  # dict keys per worker slot
# obj, kind (i = intent, a = ack, r = a recovery seen, t = torn value seen), a, b
REC = struct.Struct("<ccQQ")


# -- worker --------------------------------------------------------------------------------


def payload(v: int, size: int) -> bytes:
    return bytes([v % 251]) * size


def untorn(item: Any) -> bool:
    v, p = item
    return bool(p == payload(v, len(p)))


class Objects:
    def __init__(self, pdir: str, create: bool) -> None:
        kw: dict[str, Any] = {"project_dir": pdir, "create": create}
        self.d = SharedDict("soak-dict", **kw)
        self.lst = SharedList(name="soak-list", **kw)
        self.q = SharedQueue(name="soak-queue", **kw)
        self.lk = SharedLock(name="soak-lock", **kw)
        self.cd = SharedDict("soak-counter", **kw)
        if create:
            self.cd["n"] = 0

    def all(self) -> list[Any]:
        return [self.d, self.lst, self.q, self.lk, self.cd]


def worker(objs: Objects, log: str, slot: int, inc: int, seed: int) -> None:  # pragma: no cover
    warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)
    rng = random.Random(seed)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    d, lst, q, lk, cd = objs.all()
    n = 0

    def rec(obj: bytes, kind: bytes, a: int = 0, b: int = 0) -> None:
        os.write(fd, REC.pack(obj, kind, a, b))

    while True:
        n += 1
        v = (slot << 48) | (inc << 24) | n
        size = rng.choice([16, 16, 800, 6000, 60_000, 300_000])
        x = rng.random()
        if x < 0.22:
            k = rng.randrange(KEYS)
            rec(b"d", b"i", k, v)
            d[("k", slot, k)] = (v, payload(v, size))
            rec(b"d", b"a", k, v)
        elif x < 0.28:
            k = rng.randrange(KEYS)
            rec(b"x", b"i", k)
            d.pop(("k", slot, k), None)
            rec(b"x", b"a", k)
        elif x < 0.36:
            rec(b"c", b"i")
            d.apply(("c", slot), lambda t: t + 1, default=0)
            rec(b"c", b"a")
        elif x < 0.50:
            rec(b"l", b"i", v)
            lst.append((v, payload(v, size)))
            rec(b"l", b"a", v)
        elif x < 0.64:
            rec(b"p", b"i")
            try:
                item = lst.pop()
                if not untorn(item):
                    rec(b"p", b"t", item[0])
                got = item[0]
            except IndexError:
                got = EMPTY
            rec(b"p", b"a", got)
        elif x < 0.77:
            rec(b"q", b"i", v)
            q.put((v, payload(v, size)))
            rec(b"q", b"a", v)
        elif x < 0.90:
            rec(b"g", b"i")
            try:
                item = q.get(timeout=0.02)
                if not untorn(item):
                    rec(b"g", b"t", item[0])
                got = item[0]
            except queue.Empty:
                got = EMPTY
            rec(b"g", b"a", got)
        else:
            before = lk.recoveries
            if not lk.acquire(timeout=BOUND):
                rec(b"k", b"t", 1)  # a deadlock: reported as a violation
                os._exit(3)
            if lk.recoveries != before:
                rec(b"k", b"r", lk.recoveries - before)
            try:
                m = cd["n"] + 1
                rec(b"k", b"i", m)
                cd["n"] = m
                rec(b"k", b"a", m)
            finally:
                lk.release()


# -- supervisor --------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="shmshare-soak-"))
        self.pdir = self.tmp / "shm"
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.objs = Objects(str(self.pdir), create=True)
        self.pids: set[int] = {os.getpid()}
        self.live: dict[int, tuple[int, int]] = {}  # pid -> (slot, incarnation)
        self.incarnations = [0] * args.procs
        self.kills = 0
        self.violations: list[str] = []

    def log_path(self, slot: int, inc: int) -> Path:
        return self.logs / f"w{slot:02d}-{inc:05d}.log"

    def start(self, slot: int) -> None:
        inc = self.incarnations[slot]
        self.incarnations[slot] += 1
        seed = self.rng.randrange(1 << 62)
        log = str(self.log_path(slot, inc))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - worker
            code = 1
            try:
                worker(self.objs, log, slot, inc, seed)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        self.pids.add(pid)
        self.live[pid] = (slot, inc)

    def reap(self, pid: int) -> int:
        fd = os.pidfd_open(pid)
        try:
            if not select.select([fd], [], [], BOUND)[0]:
                self.violations.append(f"worker {pid} not reaped within {BOUND} s")
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        code = self.reap(pid)
        slot, inc = self.live.pop(pid)
        self.kills += 1
        if code != -signal.SIGKILL:
            self.violations.append(f"worker slot {slot} incarnation {inc} exited with {code}")

    def supervise(self) -> float:
        for slot in range(self.args.procs):
            self.start(slot)
        t0 = time.monotonic()
        end = t0 + self.args.seconds
        rate = self.args.kill_rate
        next_kill = t0 + (self.rng.expovariate(rate) if rate > 0 else float("inf"))
        while (now := time.monotonic()) < end:
            # Workers that ended by themselves (an exception) are violations: restart them.
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                slot, inc = self.live.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                self.violations.append(f"worker slot {slot} incarnation {inc} exited with {code}")
                self.start(slot)
            if now >= next_kill:
                pid = self.rng.choice(sorted(self.live))
                slot, _ = self.live[pid]
                self.kill(pid)
                self.start(slot)
                next_kill += self.rng.expovariate(rate)
                continue
            time.sleep(min(0.01, max(0.0, min(next_kill, end) - now)))
        for pid in sorted(self.live):  # the end: every in-flight op becomes a maybe
            self.kill(pid)
        return time.monotonic() - t0


# -- checker -----------------------------------------------------------------------------------


def read_log(path: Path) -> list[tuple[bytes, bytes, int, int]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # killed before it opened its log: it did nothing
        return []
    whole = len(data) - len(data) % REC.size
    return [REC.unpack_from(data, i) for i in range(0, whole, REC.size)]


class Checker:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.acked = 0
        self.maybe = 0
        self.lost = 0
        self.recoveries_seen = 0
        self.per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # acked, maybe, lost
        self.violations = run.violations

    def bad(self, what: str, message: str, lost: int = 1) -> None:
        self.lost += lost
        self.per[what][2] += lost
        self.violations.append(f"{what}: {message}")

    def check(self) -> None:
        run = self.run
        # Histories, in order: per slot, incarnations in order, records in order.
        dict_hist: dict[tuple[int, int], list[tuple[int | None, bool]]] = defaultdict(list)
        counters: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # acked, maybe
        appended: set[int] = set()
        maybe_appended: set[int] = set()
        popped: list[int] = []
        maybe_pops = 0
        put: set[int] = set()
        maybe_put: set[int] = set()
        got: list[int] = []
        maybe_gets = 0
        lock_acked: list[int] = []
        lock_maybe: set[int] = set()
        names = {b"d": "dict", b"x": "dict", b"c": "dict counter", b"l": "list", b"p": "list",
                 b"q": "queue", b"g": "queue", b"k": "lock counter"}
        for slot in range(run.args.procs):
            for inc in range(run.incarnations[slot]):
                recs = read_log(run.log_path(slot, inc))
                last = len(recs) - 1
                for i, (obj, kind, a, b) in enumerate(recs):
                    what = names[obj]
                    if kind == b"r":
                        self.recoveries_seen += a
                        continue
                    if kind == b"t":
                        self.bad(what, f"torn value or deadlock seen by a worker ({a:#x})")
                        continue
                    if kind == b"a":
                        self.acked += 1
                        self.per[what][0] += 1
                    elif i == last:  # the operation in flight when the worker was killed
                        self.maybe += 1
                        self.per[what][1] += 1
                    else:
                        continue  # an intent followed by its ack
                    ack = kind == b"a"
                    if obj == b"d":
                        dict_hist[(slot, a)].append((b, ack))
                    elif obj == b"x":
                        dict_hist[(slot, a)].append((None, ack))
                    elif obj == b"c":
                        counters[slot][0 if ack else 1] += 1
                    elif obj == b"l":
                        (appended if ack else maybe_appended).add(a)
                    elif obj == b"p":
                        if not ack:
                            maybe_pops += 1
                        elif a != EMPTY:
                            popped.append(a)
                    elif obj == b"q":
                        (put if ack else maybe_put).add(a)
                    elif obj == b"g":
                        if not ack:
                            maybe_gets += 1
                        elif a != EMPTY:
                            got.append(a)
                    elif obj == b"k":
                        (lock_acked.append(a) if ack else lock_maybe.add(a))
        objs = run.objs
        for o in objs.all():  # no deadlock: every lock within the bound
            if not o.lock.acquire(timeout=BOUND):
                self.violations.append(f"{o!r}: lock not obtained within {BOUND} s")
                return
            o.lock.release()
        self.check_dict(dict_hist, counters)
        self.check_seq("list", [v for v, _ in self.items(objs.lst.copy(), "list")], appended,
                       maybe_appended, popped, maybe_pops)
        drained = []
        while True:
            try:
                drained.append(objs.q.get_nowait())
            except queue.Empty:
                break
        self.check_seq("queue", [v for v, _ in self.items(drained, "queue")], put, maybe_put,
                       got, maybe_gets)
        self.check_lock(lock_acked, lock_maybe)
        for o in objs.all():
            problem = o._heap.check()
            if problem is not None:
                self.violations.append(f"check() of {o._label()}: {problem}")
            self.recoveries_seen += o.stats()["recoveries"]

    def items(self, items: list[Any], what: str) -> list[Any]:
        torn = [v for v, p in items if p != payload(v, len(p))]
        if torn:
            self.bad(what, f"{len(torn)} torn value(s)", len(torn))
        return items

    def check_dict(self, hist: dict[tuple[int, int], list[tuple[int | None, bool]]],
                   counters: dict[int, list[int]]) -> None:
        d = self.run.objs.d
        actual: dict[tuple[int, int], int] = {}
        actual_counters: dict[int, int] = {}
        for key, value in d.items():
            if key[0] == "k":
                if not untorn(value):
                    self.bad("dict", f"torn value at {key}")
                actual[(key[1], key[2])] = value[0]
            else:
                actual_counters[key[1]] = value
        for key in set(hist) | set(actual):
            states: set[int | None] = {None}
            for state, ack in hist.get(key, []):
                states = {state} if ack else states | {state}
            if actual.get(key) not in states:
                self.bad("dict", f"key {key} holds {actual.get(key)}, allowed {states}")
        for slot in set(counters) | set(actual_counters):
            acked, maybe = counters.get(slot, [0, 0])
            n = actual_counters.get(slot, 0)
            if not acked <= n <= acked + maybe:
                self.bad("dict counter", f"slot {slot}: {n}, acknowledged {acked} + maybe "
                         f"{maybe}", abs(n - acked))

    def check_seq(self, what: str, actual: list[int], acked_in: set[int], maybe_in: set[int],
                  acked_out: list[int], maybe_outs: int) -> None:
        out = set(acked_out)
        if len(out) != len(acked_out):
            self.bad(what, f"{len(acked_out) - len(out)} item(s) taken out twice")
        if not out <= acked_in | maybe_in:
            self.bad(what, f"taken out but never put in: {sorted(out - acked_in - maybe_in)[:5]}")
        now = set(actual)
        if len(now) != len(actual):
            self.bad(what, f"{len(actual) - len(now)} duplicated item(s)")
        if now & out:
            self.bad(what, f"{len(now & out)} item(s) taken out and still there")
        extra = now - acked_in - maybe_in
        if extra:
            self.bad(what, f"{len(extra)} item(s) never put in", len(extra))
        missing = acked_in - out - now
        if len(missing) > maybe_outs:
            self.bad(what, f"{len(missing)} acknowledged item(s) lost (maybe taken out: "
                     f"{maybe_outs})", len(missing) - maybe_outs)

    def check_lock(self, acked: list[int], maybe: set[int]) -> None:
        n = self.run.objs.cd["n"]
        if len(set(acked)) != len(acked):
            self.bad("lock counter", "a value acknowledged twice: mutual exclusion broken")
        unexplained = set(range(1, n + 1)) - set(acked) - maybe
        if unexplained or (acked and max(acked) > n):
            self.bad("lock counter", f"final {n}, acknowledged {len(acked)}, maybe "
                     f"{len(maybe)}: unexplained {sorted(unexplained)[:5]}",
                     len(unexplained) or 1)


def inject(objs: Objects, what: str) -> None:
    """Make one change no worker logged: an honest checker must catch it."""
    fake = (EMPTY >> 1, payload(EMPTY >> 1, 16))
    if what == "dict":
        objs.d[("k", 0, 0)] = fake
    elif what == "counter":
        objs.d.apply(("c", 0), lambda t: t + 1, default=0)
    elif what == "list":
        if len(objs.lst):
            del objs.lst[0]  # an acknowledged (or maybe) item vanishes
        objs.lst.append(fake)
    elif what == "queue":
        objs.q.put(fake)
    else:
        objs.cd["n"] += 2  # two increments nobody made under the lock


def leftovers(pids: set[int]) -> list[int]:
    found = []
    for sid in _core.list_ids():
        try:
            if _core.stat(sid).cpid in pids:
                found.append(sid)
        except OSError:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kill-rate", type=float, default=2.0,
                   help="SIGKILLs per second across all workers (0: none until the end)")
    p.add_argument("--inject", choices=["dict", "counter", "list", "queue", "lock"],
                   help="self-test: damage that object behind the workers' backs before the "
                        "check, which must then report a violation and exit 1")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", shmshare.OwnerDiedWarning)  # counted through stats()
    run = Run(args)
    checker = Checker(run)
    try:
        elapsed = run.supervise()
        if args.inject:
            inject(run.objs, args.inject)
        checker.check()
    finally:
        for pid in sorted(run.live):
            run.kill(pid)
        for o in run.objs.all():
            o.detach()
    left = leftovers(run.pids)
    names = list_names(run.pdir)
    if left:
        run.violations.append(f"segments left after the last detach: {left}")
        for sid in left:
            try:
                _core.rmid(sid)
            except OSError:
                pass
    if names:
        run.violations.append(f"key files left: {names}")
    shutil.rmtree(run.tmp, ignore_errors=True)

    rows = [("seconds", f"{elapsed:.1f}"), ("workers", str(args.procs)),
            ("seed", str(args.seed)), ("kill rate (/s)", f"{args.kill_rate:g}"),
            ("kills", str(run.kills)), ("ops acknowledged", str(checker.acked)),
            ("ops maybe", str(checker.maybe)), ("lost", str(checker.lost)),
            ("recoveries seen", str(checker.recoveries_seen)),
            ("leaked segments", str(len(left))), ("violations", str(len(run.violations)))]
    width = max(len(k) for k, _ in rows)
    print(f"| {'metric'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
    print()
    print("| object | acknowledged | maybe | lost |")
    print("|---|---|---|---|")
    for what in sorted(checker.per):
        a, m, lost = checker.per[what]
        print(f"| {what} | {a} | {m} | {lost} |")
    for v in run.violations:
        print(f"VIOLATION: {v}", file=sys.stderr)
    return 1 if run.violations or checker.lost else 0


if __name__ == "__main__":
    sys.exit(main())
