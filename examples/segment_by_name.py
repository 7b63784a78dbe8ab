"""Spawned processes find a named segment by its name alone; no server process.

Run:  python examples/segment_by_name.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile

import shmshare


def worker(project_dir: str, index: int) -> None:
    # An unrelated process finds the segment by name alone.
    with shmshare.Segment("quickstart", project_dir=project_dir, create=False) as seg:
        seg.buf[index] = index * index


def main() -> None:
    # A private project directory, so that the demo never meets anybody else's "quickstart".
    project_dir = tempfile.mkdtemp(prefix="shmshare-quickstart-")
    try:
        with shmshare.Segment("quickstart", 16, project_dir=project_dir) as seg:
            procs = [mp.get_context("spawn").Process(target=worker, args=(project_dir, i))
                     for i in range(8)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(60)
            squares = list(seg.buf[:8])
            print("squares written by 8 spawned processes:", squares)
            print(f"segment {seg.name!r}: key {seg.key:#x}, shmid {seg.id}, "
                  f"nattch {seg.stat().nattch}")
            assert squares == [i * i for i in range(8)], squares
        # Leaving the block detached the last user: segment and key file are gone.
        left = os.listdir(project_dir)
        print("after the last detach, the project directory holds:", left)
        assert left == [], left
    finally:
        # The directory itself is ours too: leave nothing behind.
        shutil.rmtree(project_dir, ignore_errors=True)

if __name__ == "__main__":
    main()
