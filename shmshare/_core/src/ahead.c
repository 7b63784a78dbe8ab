/* Mapping ahead, outside the heap lock (this process's page tables only).
 *
 * Each process takes a page fault the first time it touches a page of a
 * System V segment (they have no fault-around), several microseconds each
 * on a loaded VM: 2.5 of them for a 10 KB item.  A queue walks fresh memory
 * in address order -- the producer carves new blocks upward from an
 * extent's free tail (alloc.c's split keeps the head), the consumer reads
 * them in the same order -- and took those faults inside the memcpy, under
 * the heap lock, so the other side waited for them too.
 *
 * So an allocation, and a queue's take, note where the block they touched
 * ends (h->ahead_hint); after the op lets the lock go, shms_ahead maps the
 * next SHMS_AHEAD bytes of that extent in one call (shms_populate), when the
 * hint is walking forward through memory: inside the window nothing is
 * done; near its end (or a step past it) the next stretch is mapped; a jump
 * elsewhere is only remembered, and a second step forward from there starts
 * a new window.  So random access, or two blocks used in turn, pay a compare
 * and no system call; mapping reads or writes no byte.  The cost is at most SHMS_AHEAD bytes mapped (and, past
 * the heap's high-water mark, given pages) that the walk may never reach.
 * The fields are hints shared by this process's threads: relaxed atomics.
 */
#include "heap_int.h"

#define SHMS_AHEAD (256 * 1024)

static char *load(char **f) { return __atomic_load_n(f, __ATOMIC_RELAXED); }
static void store(char **f, char *p) { __atomic_store_n(f, p, __ATOMIC_RELAXED); }

void shms_ahead(shms_heap_t *h)
{
    char *p = __atomic_exchange_n(&h->ahead_hint, NULL, __ATOMIC_RELAXED);
    char *lo = load(&h->ahead_lo), *hi = load(&h->ahead_hi), *from, *to, *end = NULL;
    unsigned e;
    if (!p || (p >= lo && (p + SHMS_AHEAD / 2 < hi || (p < hi && hi == load(&h->ahead_end)))))
        return;                                 /* nothing new, or inside the window */
    if (p >= lo && p <= hi + SHMS_AHEAD) {
        from = p > hi ? p : hi;                 /* walking on: map the next stretch */
    } else {
        from = load(&h->ahead_cand);
        if (p <= from || p > from + SHMS_AHEAD) {
            store(&h->ahead_cand, p);           /* a jump: a walk may start here */
            return;
        }
        lo = from;                              /* a second step: a new walk */
        from = p;
    }
    for (e = 0; e < SHMS_MAX_EXT && !end; e++)
        if (h->base[e] && p >= h->base[e] && p < h->base[e] + h->end[e])
            end = h->base[e] + h->end[e];
    if (!end)
        return;
    to = end - from > SHMS_AHEAD ? from + SHMS_AHEAD : end;
    if (from < to)
        shms_populate(from, (uint64_t)(to - from));
    store(&h->ahead_lo, lo);
    store(&h->ahead_hi, to);
    store(&h->ahead_end, end);
}
