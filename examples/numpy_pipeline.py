"""A two-stage numpy pipeline over SharedArrays: zero-copy, no lock, no server.

Stage 1, one process, fills a SharedArray of 48 frames (64x64, float32).
Stage 2, a pool of 4 spawned workers, processes the frames: each worker takes a
disjoint set of frames (``w::4``) and writes its results straight into a second
SharedArray — the workers never write the same memory, so no lock is needed.

What crosses the process boundaries is a SharedArray *reference* (about a hundred
bytes, however big the array), never the pixels.  At the end the parent checks
every output frame against the same computation done locally with numpy.

Run:  python examples/numpy_pipeline.py
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import shmshare

FRAMES, HEIGHT, WIDTH = 48, 64, 64
WORKERS = 4


def make_frame(i: int) -> np.ndarray:
    """The frame a camera would deliver: deterministic, so the parent can recompute it."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return (np.sin(x / (3 + i % 7)) * np.cos(y / 5) * 100
            + rng.normal(0, 10, (HEIGHT, WIDTH))).astype(np.float32)


def process(frame: np.ndarray) -> np.ndarray:
    """Normalise the frame, then smooth it with a 3x3 box filter (edges replicated)."""
    f = (frame - frame.mean()) / frame.std()
    p = np.pad(f, 1, mode="edge")
    return sum(p[dy:dy + HEIGHT, dx:dx + WIDTH]
               for dy in range(3) for dx in range(3)) / 9


def stage1_fill(frames: shmshare.SharedArray) -> None:
    a = frames.numpy()  # a view of the shared memory: writing it writes the shared array
    for i in range(FRAMES):
        a[i] = make_frame(i)


def stage2_worker(frames: shmshare.SharedArray, out: shmshare.SharedArray, w: int) -> int:
    src, dst = frames.numpy(), out.numpy()
    mine = range(w, FRAMES, WORKERS)  # disjoint from every other worker's frames
    for i in mine:
        dst[i] = process(src[i])      # computed in this process, stored in place
    return len(mine)


def main() -> int:
    frames = shmshare.SharedArray((FRAMES, HEIGHT, WIDTH), "float32")  # anonymous
    out = shmshare.SharedArray((FRAMES, HEIGHT, WIDTH), "float32")
    print(f"{frames.nbytes} bytes of frames travel to a process as a "
          f"{len(pickle.dumps(frames))}-byte reference")

    ctx = mp.get_context("spawn")
    filler = ctx.Process(target=stage1_fill, args=(frames,))
    filler.start()
    filler.join(60)
    assert filler.exitcode == 0, f"stage 1 failed: exit code {filler.exitcode}"

    with ProcessPoolExecutor(WORKERS, mp_context=ctx) as pool:
        done = list(pool.map(stage2_worker, [frames] * WORKERS, [out] * WORKERS,
                             range(WORKERS)))
    print("frames per worker:", done)

    # Check against the same pipeline computed locally.
    expected = np.stack([process(make_frame(i)) for i in range(FRAMES)])
    got = out.numpy().copy()
    same_input = np.array_equal(frames.numpy(), np.stack([make_frame(i) for i in range(FRAMES)]))
    frames.detach()  # no numpy view of them is left alive: .copy() above made our own
    out.detach()
    max_error = float(np.abs(got - expected).max())
    print(f"stage 1 input as expected: {same_input}; max |error| of stage 2: {max_error:.2e}")
    if not (same_input and sum(done) == FRAMES and np.allclose(got, expected, atol=1e-5)):
        print("FAILED")
        return 1
    print(f"OK: {WORKERS} workers processed {FRAMES} frames of {HEIGHT}x{WIDTH} in place")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
