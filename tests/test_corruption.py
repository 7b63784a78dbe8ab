"""Corrupted headers give clear errors, never a crash or a hang.

Byte flips land in the identity header (the segment's first page), in the heap
header, in the blocks of the heap, and in its lock, always in a child process,
so that a segfault would show as a signal instead of killing pytest, and a hang
as a timeout.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_python

CHILD = Path(__file__).with_name("heap_fuzz_child.py")

FUZZ = textwrap.dedent("""
    import random, sys, collections
    import shmshare
    from shmshare import SharedDict, Segment
    from shmshare.naming.header import HEADER_SIZE

    pdir = sys.argv[1]
    rng = random.Random(int(sys.argv[2]))
    d = SharedDict("victim", {"a": 1, "b": [2]}, project_dir=pdir, persist=True)
    raw = Segment.from_id(d.segment.id)
    pristine = bytes(raw.buf[:HEADER_SIZE + 64])
    outcomes = collections.Counter()
    for trial in range(300):
        buf = bytearray(pristine)
        for _ in range(rng.randrange(1, 4)):
            # mostly the fields that matter: the fixed header and the heap's identity
            pos = rng.choice([rng.randrange(0, 96), rng.randrange(HEADER_SIZE, HEADER_SIZE + 32),
                              rng.randrange(0, HEADER_SIZE)])
            buf[pos] ^= 1 << rng.randrange(8)
        raw.buf[:len(buf)] = buf
        try:
            other = SharedDict("victim", project_dir=pdir, create=False)
            assert other.copy() == {"a": 1, "b": [2]}
            other.detach()
            outcomes["opened"] += 1
        except (shmshare.CorruptSegmentError, shmshare.SegmentNotFoundError,
                shmshare.WrongTypeError, shmshare.ShmValueError) as exc:
            outcomes[type(exc).__name__] += 1
        finally:
            raw.buf[:len(pristine)] = pristine
    raw.detach()
    d.unlink()
    d.detach()
    print(dict(outcomes))
""")


def test_header_flips_give_clear_errors(project_dir: Path) -> None:
    """300 random header corruptions: each opens fine or raises a shmshare error; no crash."""
    project_dir.mkdir(mode=0o700)
    proc = run_python(FUZZ, str(project_dir), "7", check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outcomes = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert sum(outcomes.values()) == 300
    assert len(outcomes) > 1  # both accepted and rejected corruptions occurred


def _fuzz(project_dir: Path, seed: int, trials: int, mode: str) -> dict[str, int]:
    project_dir.mkdir(mode=0o700)
    proc = subprocess.run([sys.executable, str(CHILD), str(project_dir), str(seed), str(trials),
                           mode], capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a signal would be negative
    outcomes: dict[str, int] = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert sum(outcomes.values()) == trials
    assert not [k for k in outcomes if "FAIL" in k], outcomes
    return outcomes


@pytest.mark.parametrize("seed", [1, 2])
def test_heap_body_flips_are_detected_or_repaired(project_dir: Path, seed: int) -> None:
    """400 corrupted copies of a real heap: every operation works, is repaired on
    the spot, or raises CorruptSegmentError; check() then passes (after a rebuild
    where it failed); never a crash, a hang or another exception."""
    outcomes = _fuzz(project_dir, seed, 400, "body")
    seen = " ".join(outcomes)
    for expected in ("unchanged", "CorruptSegmentError", "check-failed", "refused at open"):
        assert expected in seen, outcomes


def test_damaged_lock_word_is_recognised(project_dir: Path) -> None:
    """Flips in the heap's mutex: refused at open (bad type word) or, for a lock
    word naming a thread that cannot hold it, CorruptSegmentError within seconds
    instead of waiting forever."""
    outcomes = _fuzz(project_dir, 12, 20, "lock")
    assert "refused at open" in outcomes and "CorruptSegmentError (lock word)" in outcomes, \
        outcomes


def test_damaged_shared_array_header_is_refused(project_dir: Path) -> None:
    """A SharedArray whose lock type word or dtype/shape record is damaged is refused
    with CorruptSegmentError when opened (never a JSON or numpy error, never a hang)."""
    import shmshare
    from shmshare import Segment, SharedArray
    from shmshare.naming.header import HEADER_SIZE

    a = SharedArray((4, 3), "float64", name="arr", project_dir=project_dir)
    raw = Segment.from_id(a.segment.id)
    pristine = bytes(raw.buf[:8192])
    lock_kind = HEADER_SIZE + 64 + 16        # pthread_mutex_t.__data.__kind (glibc)
    meta = HEADER_SIZE + 128 + 4             # the JSON record after its length
    try:
        for pos, value in [(lock_kind, 0x00), (meta, ord("#")), (meta + 12, ord("]"))]:
            raw.buf[pos] = value
            with pytest.raises(shmshare.CorruptSegmentError, match="damaged"):
                SharedArray(name="arr", project_dir=project_dir, create=False)
            raw.buf[:8192] = pristine
        SharedArray(name="arr", project_dir=project_dir, create=False).detach()
    finally:
        raw.detach()
        a.unlink()
        a.detach()
