"""Producers and consumers in separate processes over a bounded ``SharedQueue``.

3 producer processes put 200 items each on one queue of at most 50 items (a full
queue blocks ``put``: back-pressure); 4 consumer processes take items until they
get a sentinel.  The parent starts everybody, waits for the producers, then puts
one sentinel per consumer — so every consumer stops after the last real item.

There is no server process: the queue lives in shared memory, and blocking
``get``/``put`` sleep without holding its lock.  Checked at the end: every item
was received exactly once, and each consumer saw each producer's items in order
(the queue is FIFO).

Run:  python examples/producer_consumer.py
"""

from __future__ import annotations

import multiprocessing as mp

import shmshare

PRODUCERS = 3
CONSUMERS = 4
ITEMS = 200       # per producer
SENTINEL = None   # "no more items"; anything no producer ever sends would do
TIMEOUT = 60      # seconds: a bug shows up as an error, not as a hang


def producer(q: shmshare.SharedQueue, pid: int) -> None:
    for seq in range(ITEMS):
        q.put((pid, seq, f"item {seq} from producer {pid}"), timeout=TIMEOUT)


def consumer(q: shmshare.SharedQueue, results: shmshare.SharedDict, cid: int) -> None:
    got = []
    while True:
        item = q.get(timeout=TIMEOUT)
        if item is SENTINEL:
            break
        got.append(item[:2])  # (producer, seq)
    results[cid] = got        # one write per consumer, at the end


def main() -> int:
    ctx = mp.get_context("spawn")
    q = shmshare.SharedQueue(maxsize=50)  # anonymous: shared with the children below
    results = shmshare.SharedDict()
    consumers = [ctx.Process(target=consumer, args=(q, results, c)) for c in range(CONSUMERS)]
    producers = [ctx.Process(target=producer, args=(q, p)) for p in range(PRODUCERS)]
    for proc in consumers + producers:
        proc.start()
    for proc in producers:
        proc.join(TIMEOUT)
    for _ in consumers:          # every real item is in the queue before the sentinels
        q.put(SENTINEL, timeout=TIMEOUT)
    for proc in consumers:
        proc.join(TIMEOUT)
    codes = [proc.exitcode for proc in producers + consumers]
    received = results.copy()
    q.detach()
    results.detach()

    everything = [item for got in received.values() for item in got]
    in_order = all(
        [seq for p, seq in got if p == producer_id] == sorted(seq for p, seq in got
                                                             if p == producer_id)
        for got in received.values() for producer_id in range(PRODUCERS))
    print("items per consumer:", [len(received.get(c, [])) for c in range(CONSUMERS)])
    expected = {(p, s) for p in range(PRODUCERS) for s in range(ITEMS)}
    if codes != [0] * len(codes) or len(everything) != len(expected) \
            or set(everything) != expected or not in_order:
        print(f"FAILED: exit codes {codes}, {len(everything)} items received, "
              f"in order: {in_order}")
        return 1
    print(f"OK: {PRODUCERS} producers x {ITEMS} items -> {CONSUMERS} consumers: "
          f"{len(everything)} received once each, in each producer's order")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
