"""The alarm struct of the C tutorial as numpy records in a named SharedArray.

The C programs share ``alarm_io_t`` through ``shmget(ftok(path, module))``:

    typedef struct _alarm_io_s {
        int alarm_flag; int alarm_type; int alarm_code; int alarm_level; int alarm_index;
    } alarm_io_t;

a client writes the fields one by one, and the server reads them with no lock —
so it can read a record half old, half new.  Here the struct is a structured numpy
dtype (same 20-byte layout), one record per module (SDHMGT = 31, ALARM = 32) in a
SharedArray named ``alarms``.  A writer process and a reader process, each
opening the array by name, update and read whole records with the array's robust
lock held.  The writer still stores one field at a time, like the C client; the
reader checks that every record it reads is consistent (all its fields from the
same update) and counts the alarms it saw lit.

Run:  python examples/alarm_records.py [--project-dir DIR]
      python examples/alarm_records.py --without-lock   # the C version's torn reads
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import time
from typing import Any

import numpy as np

import shmshare

# struct _alarm_io_s, field for field (C int = int32, native order, no padding).
ALARM_DTYPE = np.dtype([("alarm_flag", "i4"), ("alarm_type", "i4"), ("alarm_code", "i4"),
                        ("alarm_level", "i4"), ("alarm_index", "i4")])
MODULES = {31: "SDHMGT", 32: "ALARM"}  # MODULE_ID_* of the C header: one record each
NAME = "alarms"
UPDATES = 400  # per module
TIMEOUT = 60


def record_for(slot: int, n: int) -> tuple[int, int, int, int, int]:
    """The n-th update of a module's record: every field says which update it is."""
    return (int(n % 3 == 0),         # alarm_flag: lit on every third update
            0x14 + 0x10 * slot,      # alarm_type: 0x14 / 0x24, as in the C clients
            (n << 8) | (0x11 + 0x10 * slot),  # alarm_code: the update number, then 0x11/0x21
            n, n)                    # alarm_level, alarm_index


def consistent(rec: Any, slot: int) -> bool:
    n = int(rec["alarm_index"])
    return tuple(int(x) for x in rec.tolist()) == record_for(slot, n)


def writer(project_dir: str | None, use_lock: bool) -> None:
    with shmshare.SharedArray(name=NAME, dtype=ALARM_DTYPE, create=False,
                              project_dir=project_dir) as alarms:
        a = alarms.numpy()
        guard = alarms.lock if use_lock else contextlib.nullcontext()
        for n in range(1, UPDATES + 1):
            for slot in range(len(MODULES)):
                flag, typ, code, level, index = record_for(slot, n)
                with guard:  # the whole record changes at once, for every reader
                    rec = a[slot]  # a view of the shared record: each store is visible
                    rec["alarm_code"] = code
                    rec["alarm_index"] = index
                    rec["alarm_level"] = level
                    rec["alarm_type"] = typ
                    rec["alarm_flag"] = flag
            time.sleep(0.0005)  # alarms do not come in bursts
        del a, rec  # no view may outlive the attachment


def reader(project_dir: str | None, use_lock: bool, report: shmshare.SharedDict) -> None:
    reads = torn = lit = 0
    seen: set[tuple[int, int]] = set()
    with shmshare.SharedArray(name=NAME, dtype=ALARM_DTYPE, create=False,
                              project_dir=project_dir) as alarms:
        a = alarms.numpy()
        guard = alarms.lock if use_lock else contextlib.nullcontext()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with guard:
                snapshot = a.copy()  # our own copy of both records, taken under the lock
            reads += 1
            for slot, rec in enumerate(snapshot):
                if not consistent(rec, slot):
                    torn += 1
                    continue
                seen.add((slot, int(rec["alarm_index"])))
                lit += int(rec["alarm_flag"])
            if all(int(rec["alarm_index"]) == UPDATES for rec in snapshot):
                break  # the writer's last update of every module is in
            time.sleep(0.0001)  # a monitor, like the C server's loop (which slept 1 s)
        del a
    report.update(reads=reads, torn=torn, lit=lit, updates_seen=len(seen))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project-dir", default=None,
                    help="where the key file lives (default: $SHMSHARE_DIR or the library's)")
    ap.add_argument("--without-lock", action="store_true",
                    help="write and read as the C programs do, and count the torn records")
    args = ap.parse_args(argv)
    use_lock = not args.without_lock

    # One record per module; unrelated processes open it by the name "alarms".
    alarms = shmshare.SharedArray((len(MODULES),), ALARM_DTYPE, name=NAME, create=True,
                                  project_dir=args.project_dir)
    report = shmshare.SharedDict()  # anonymous: how the reader reports back
    try:
        print(f"{NAME!r}: {len(MODULES)} records of {ALARM_DTYPE.itemsize} bytes, "
              f"key {alarms.segment.key:#x}, in {alarms.segment.project_dir}")
        with alarms.lock:  # update 0: a consistent record per module before anyone reads
            view = alarms.numpy()
            view[:] = [record_for(slot, 0) for slot in range(len(MODULES))]
            del view
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=reader, args=(args.project_dir, use_lock, report)),
                 ctx.Process(target=writer, args=(args.project_dir, use_lock))]
        for p in procs:
            p.start()
        for p in procs:
            p.join(TIMEOUT + 10)
        codes = [p.exitcode for p in procs]
        final = alarms.numpy().copy()
        result = report.copy()
    finally:
        alarms.unlink()  # remove it now: nothing stays behind in the kernel
        alarms.detach()
        report.detach()

    for slot, (module, label) in enumerate(MODULES.items()):
        rec = final[slot]
        state = "light up" if rec["alarm_flag"] else "light off"
        print(f"module {module} ({label}): {state}, alarm code {int(rec['alarm_code']):#x}, "
              f"update {int(rec['alarm_index'])}")
    print(f"reader: {result.get('reads')} reads, {result.get('updates_seen')} distinct "
          f"updates seen, {result.get('lit')} records read lit, {result.get('torn')} torn records")
    if not use_lock:
        return 0  # a demonstration of the race, not a result to check
    ok = (codes == [0, 0] and result.get("torn") == 0
          and all(consistent(final[s], s) and final[s]["alarm_index"] == UPDATES
                  for s in range(len(MODULES))))
    if not ok:
        print(f"FAILED: exit codes {codes}, report {result}")
        return 1
    print(f"OK: the reader saw {result['reads']} snapshots of {len(MODULES)} records, "
          f"every record consistent; final records as written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
