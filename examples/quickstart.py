"""Quickstart: a dict shared by a pool of worker processes, with no server process.

Run:  python examples/quickstart.py
"""

from __future__ import annotations

import multiprocessing as mp
import os

import shmshare


def count_words(args: tuple[shmshare.SharedDict, str]) -> int:
    counts, line = args
    for word in line.split():
        # apply() is an atomic read-modify-write under the dict's robust lock.
        counts.apply(word, lambda n: n + 1, default=0)
    return os.getpid()


def main() -> None:
    text = ["the quick brown fox", "jumps over the lazy dog", "the end"] * 100
    counts = shmshare.SharedDict()            # anonymous: shared with the pool's workers
    with mp.get_context("spawn").Pool(4) as pool:
        pids = set(pool.map(count_words, [(counts, line) for line in text]))
    print(f"{len(pids)} of the pool's 4 workers took tasks; {sum(counts.values())} words counted")
    print("most common:", sorted(counts.items(), key=lambda kv: -kv[1])[:3])
    print("as a plain dict:", counts.copy())
    counts.detach()                            # the last user gone: memory is freed


if __name__ == "__main__":
    main()
