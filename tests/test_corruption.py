"""Corrupted headers give clear errors, never a crash or a hang.

Byte flips land in the identity header (the segment's first page) and in the
heap header's identity fields (magic, version, mutex size, sizes), in a child
process, so that a segfault would show as a signal instead of killing pytest.
Fuzzing the heap body itself is not covered yet (see docs/concepts/security.md).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from helpers import run_python

FUZZ = textwrap.dedent("""
    import random, sys, collections
    import shmshare
    from shmshare import SharedDict, Segment
    from shmshare.header import HEADER_SIZE

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
