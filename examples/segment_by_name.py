"""Spawned processes find a named segment by its name alone; no server process.

Run:  python examples/segment_by_name.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile

import shmshare


def worker(project_dir: str, index: int) -> None:
    # An unrelated process finds the segment by name alone.
    with shmshare.Segment("quickstart", project_dir=project_dir, create=False) as seg:
        seg.buf[index] = index * index


def main() -> None:
    project_dir = tempfile.mkdtemp(prefix="shmshare-quickstart-")
    with shmshare.Segment("quickstart", 16, project_dir=project_dir) as seg:
        procs = [mp.get_context("spawn").Process(target=worker, args=(project_dir, i))
                 for i in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        print("squares written by 8 spawned processes:", list(seg.buf[:8]))
        print(f"segment {seg.name!r}: key {seg.key:#x}, shmid {seg.id}, "
              f"nattch {seg.stat().nattch}")
    # Leaving the block detached the last user: segment and key file are gone.
    print("after the last detach, the project directory holds:", os.listdir(project_dir))


if __name__ == "__main__":
    main()
