"""Child process of test_corruption.py: flip bits in a real heap, then use it.

Run as ``python heap_fuzz_child.py PROJECT_DIR SEED TRIALS MODE``; MODE is
``body`` (the heap header outside its lock, and the blocks in use) or
``lock`` (the bytes of the heap's robust mutex).  Prints a dict of outcome
counts on its last line.  A crash shows as a signal, a hang as the parent's
timeout; a violated expectation is counted under a key starting "FAIL".
"""

from __future__ import annotations

import collections
import pickle
import random
import sys

import shmshare
from shmshare import Segment, SharedDict
from shmshare._core.heap import Heap
from shmshare.naming.header import HEADER_SIZE
from shmshare.objects.codec import decode_key, encode_key

MUTEX = (128, 168)  # the pthread_mutex_t in the heap header (src/heap_int.h)


def populate(d: SharedDict, rng: random.Random) -> None:
    for i in range(80):
        key = rng.choice([f"k{i}", i, (i, "t"), f"k{i}".encode(), i + 0.5])
        d[key] = rng.choice([i, "x" * rng.randrange(200), list(range(rng.randrange(30))),
                             b"y" * 1500])
    for k in list(d)[::4]:
        del d[k]                    # free blocks and tombstones
    for k in list(d)[::3]:
        d[k] = ("over", k)          # overwritten blobs


def scan_all(h: Heap) -> list[tuple[int, bytes, bytes | None]]:
    out, after = [], -1
    while batch := h.dict_scan(after):
        out.extend(batch)
        after = batch[-1][0]
    return out


def exercise(h: Heap, keys: list[tuple[bytes, int]], result: list[str]) -> None:
    """Reads, a check (and rebuild if it fails), writes, clear; checks in between."""
    h.dict_len()
    for _, kb, vb in scan_all(h):
        try:                        # values are not checksummed: damage may show here
            decode_key(kb)
            pickle.loads(vb)
        except Exception:
            result.append("value-damaged")
            break
    for kb, n in keys:
        h.dict_get(kb, n)
    problem = h.check()
    if problem is not None:
        result.append("check-failed")
        h.rebuild()
        if h.check() is not None:
            result.append("FAIL after rebuild: " + str(h.check()))
            return
    h.dict_set(b"fresh", 5, b"v" * 100)
    h.dict_pop(*keys[0])
    h.dict_popitem()
    h.dict_set(b"big", 3, b"z" * 20000)   # grows the heap into a new extent
    if h.check() is not None:
        result.append("FAIL after writes: " + str(h.check()))
    h.dict_clear()
    if h.check() is not None:
        result.append("FAIL after clear: " + str(h.check()))


def main() -> None:
    pdir, seed, trials, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)
    d = SharedDict("victim", project_dir=pdir, persist=True)
    raw = None
    try:
        populate(d, rng)
        assert d.stats()["extents"] == 1 and d.check() is None
        keys = [encode_key(k) for k in d]
        raw = Segment.from_id(d.segment.id)
        pristine = bytes(raw.buf)
        heap0, used = HEADER_SIZE, d.stats()["bytes_used"]
        outcomes: collections.Counter[str] = collections.Counter()
        for _ in range(trials):
            buf = bytearray(pristine)
            for _ in range(rng.randrange(1, 5)):
                if mode == "lock":
                    pos = heap0 + rng.randrange(*MUTEX)
                elif rng.random() < 0.3:
                    pos = heap0 + rng.choice([rng.randrange(MUTEX[0]),
                                              rng.randrange(MUTEX[1], Heap.HEADER_SIZE)])
                else:
                    pos = heap0 + Heap.HEADER_SIZE + rng.randrange(used + 256)
                buf[pos] ^= 1 << rng.randrange(8)
            raw.buf[:] = buf
            outcomes[trial(pdir, keys, mode)] += 1
        print(dict(outcomes))
    finally:
        if raw is not None:
            raw.buf[:] = pristine
            raw.detach()
        d.unlink()
        d.detach()


def trial(pdir: str, keys: list[tuple[bytes, int]], mode: str) -> str:
    try:
        o = SharedDict("victim", project_dir=pdir, create=False)
    except shmshare.CorruptSegmentError:
        return "refused at open"
    h = o._heap
    # Bounds the test if a damaged lock word names a live thread that we may not
    # inspect (e.g. another user's): then damage cannot be told from a holder.
    h.lock_timeout = 8.0
    result: list[str] = []
    try:
        exercise(h, keys, result)
    except shmshare.CorruptSegmentError as exc:
        result.append("CorruptSegmentError" + (" (lock word)" if "lock names" in str(exc) else ""))
    except shmshare.LockTimeoutError:
        result.append("LockTimeoutError" if mode == "lock" else "FAIL LockTimeoutError")
    if h.recoveries:
        result.append("repaired")
    h.destroy_extents()  # the restored bytes will not know of extents grown here
    o.detach()
    return " + ".join(result) or "unchanged"


if __name__ == "__main__":
    main()
