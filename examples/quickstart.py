"""Quickstart: a dict shared by a pool of worker processes, with no server process.

Run:  python examples/quickstart.py
"""

from __future__ import annotations

import multiprocessing as mp

import shmshare


def count_words(args: tuple[shmshare.SharedDict, str]) -> int:
    counts, line = args
    for word in line.split():
        # apply() is an atomic read-modify-write under the dict's robust lock.
        counts.apply(word, lambda n: n + 1, default=0)
    return len(line.split())


def main() -> None:
    text = ["the quick brown fox", "jumps over the lazy dog", "the end"] * 100
    counts = shmshare.SharedDict()            # anonymous: shared with the pool's workers
    with mp.get_context("spawn").Pool(4) as pool:
        words = sum(pool.map(count_words, [(counts, line) for line in text]))
    # Whichever workers Pool.map gave the lines to, every count landed in one dict.
    print(f"{sum(counts.values())} words counted in one shared dict by a pool of 4 worker "
          f"processes (they reported {words})")
    print("most common:", sorted(counts.items(), key=lambda kv: -kv[1])[:3])
    print("as a plain dict:", counts.copy())
    counts.detach()                            # the last user gone: memory is freed


if __name__ == "__main__":
    main()
