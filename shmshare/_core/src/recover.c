/* Locking and dead-owner recovery (marking: mark.c; the structural check: check.c).
 *
 * RECOVERY runs under the lock when pthread_mutex_lock returned EOWNERDEAD
 * (or needs_recovery was left set by a recovery that could not finish):
 *   0  needs_recovery := 1 (a recoverer that dies is itself recovered);
 *   1  PENDING extents are removed (extent.c), every READY one attached;
 *   2  WALK: every extent is walked by block sizes (invariant W1), building
 *      a bitmap of block starts; a bad size means the heap is beyond repair;
 *   3  MARK: the root kind's mark function validates its structure and
 *      marks every block it reaches (shms_mark checks each ref: extent in
 *      range, offset a block start, payload large enough, not marked twice);
 *   4  REBUILD: every extent is walked again; marked blocks become USED,
 *      each maximal run of unmarked blocks is merged (one 8-byte store per
 *      merge, keeping W1) into one free block and binned; counters redone;
 *   5  REPAIR: the root kind rebuilds its derived data (dict: index, counts);
 *   6  needs_recovery := 0, recoveries += 1, mutex made consistent.
 * Every loop is bounded by extent sizes or validated counts, so garbage
 * can make recovery fail but never loop or fault.  Failure in 2/3 sets the
 * sticky corrupt flag (and the reason in hdr->why); every later operation
 * then returns SHMS_ECORRUPT.  Failure to get memory for the bitmaps leaves
 * needs_recovery set and returns ENOMEM; the next locker tries again.
 */
#include "mark_int.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Step 4 for one extent. */
static void rebuild_extent(shms_markctx_t *c, unsigned e)
{
    shms_heap_t *h = c->h;
    shms_heap_hdr_t *H = h->hdr;
    uint64_t pos = h->first[e], prev = 0, s;
    while (pos < h->end[e]) {
        shms_blk_t *b = shms_blk_at(h, e, pos);
        s = b->size & SHMS_SIZE_MASK;
        b->prev = prev;
        if (shms_mark_bit(c->marks[e], pos)) {
            b->size = s | SHMS_B_USED;
            H->bytes_used += s;
            H->n_used_blocks++;
        } else {
            while (pos + s < h->end[e] && !shms_mark_bit(c->marks[e], pos + s)) {
                s += shms_blk_at(h, e, pos + s)->size & SHMS_SIZE_MASK;
                shms_store64(&b->size, s);          /* merge: keeps W1 */
            }
            b->size = s;
            H->bytes_free += s;
            shms_bin_insert(h, e, pos);
        }
        prev = s;
        pos += s;
    }
    H->bytes_total += h->end[e] - h->first[e];
}

static void rebuild_allocator(shms_markctx_t *c)
{
    shms_heap_hdr_t *H = c->h->hdr;
    unsigned e;
    shms_bins_reset(c->h);
    H->bytes_total = H->bytes_used = H->bytes_free = H->n_used_blocks = 0;
    for (e = 0; e < SHMS_MAX_EXT; e++)
        if (c->h->base[e])
            rebuild_extent(c, e);
}

int shms_set_corrupt(shms_heap_t *h, const char *why)
{
    snprintf(h->hdr->why, sizeof h->hdr->why, "%s", why);
    __atomic_store_n(&h->hdr->corrupt, 1u, __ATOMIC_RELEASE);
    return SHMS_ECORRUPT;
}

static int recover(shms_heap_t *h, int counted)
{
    shms_heap_hdr_t *H = h->hdr;
    shms_markctx_t c;
    char why[192] = "";
    uint64_t kind;
    int rc;
    shms_store64(&H->needs_recovery, 1);
    if (H->ident_sum != shms_ident_sum(H))      /* never rehash with a bad seed */
        return shms_set_corrupt(h, "heap header checksum mismatch (seed or layout damaged)");
    shms_ext_resolve_pending(h);
    if ((rc = shms_ext_attach_all(h)))
        return rc == SHMS_EEXTGONE ? shms_set_corrupt(h, "an extent segment is gone") : rc;
    if ((rc = shms_mark_init(&c, h, why, sizeof why)))
        return rc;
    if (shms_mark_walk(&c) || shms_mark_root(&c)) {
        shms_mark_free(&c);
        return shms_set_corrupt(h, why);
    }
    rebuild_allocator(&c);
    shms_mark_free(&c);
    kind = H->root_kind;
    if (H->root && shms_kinds[kind].repair && (rc = shms_kinds[kind].repair(h, H->root)))
        return rc == SHMS_ECORRUPT ? shms_set_corrupt(h, "root structure beyond repair") : rc;
    shms_store64(&H->generation, H->generation + 1);
    h->generation = H->generation;
    if (counted) {
        H->recoveries++;
        h->recoveries++;
    }
    shms_store64(&H->needs_recovery, 0);
    return 0;
}

/* After the mutex is ours: recover if needed, follow the extent table. */
static int after_lock(shms_heap_t *h, int owner_died)
{
    shms_heap_hdr_t *H = h->hdr;
    int rc;
    if (owner_died)
        shms_store64(&H->needs_recovery, 1);
    if (H->corrupt)
        rc = SHMS_ECORRUPT;
    else if (H->ident_sum != shms_ident_sum(H))     /* a few ns: see heap.c */
        rc = shms_set_corrupt(h, "heap header checksum mismatch (seed or layout damaged)");
    else if (H->needs_recovery) {
        rc = recover(h, 1) ?: SHMS_RECOVERED;   /* gnu11: a ?: b */
        /* The dead owner may have committed a change without bumping the
         * counter; bump it so that every process's read cache is dropped. */
        shms_bump_modcount(h);
    }
    else
        rc = shms_ext_sync(h);
    if (owner_died)
        shms_mutex_consistent(H->mutex);
    if (rc && rc != SHMS_RECOVERED)
        shms_mutex_unlock(H->mutex);
    return rc;
}

/* 0, SHMS_RECOVERED (lock held in both cases), or an error (not held). */
int shms_heap_lock_entered(shms_heap_t *h, int64_t timeout_ns)
{
    int rc = shms_mutex_lock(h->hdr->mutex, timeout_ns);
    if (rc == EOWNERDEAD)
        return after_lock(h, 1);
    if (rc)
        return rc;
    return after_lock(h, 0);
}

/* The lock as a call of its own (a guard's, held across Python code): inside
 * the handle only while taking it (heap_int.h, calls inside a handle). */
int shms_heap_lock(shms_heap_t *h, int64_t timeout_ns)
{
    int rc = shms_enter(h);
    if (rc)
        return rc;
    rc = shms_heap_lock_entered(h, timeout_ns);
    shms_leave(h);
    return rc;
}

int shms_heap_unlock(shms_heap_t *h)
{
    int rc = shms_enter(h);
    if (rc)
        return rc;
    rc = shms_mutex_unlock(h->hdr->mutex);
    shms_leave(h);
    return rc;
}

/* A new handle attaches every extent now (the lock, tried once, syncs them):
 * one grown by a sole user is already marked for removal and lives only while
 * someone holds it (extent.c).  0 once done (a dead owner's state repaired
 * meanwhile), or the lock's error: a busy lock's holder holds the extents
 * all, and a corrupt heap fails its operations. */
int shms_heap_sync_extents(shms_heap_t *h)
{
    int rc = shms_op_begin(h, 0, 0);
    if (rc)
        return rc;
    shms_op_end(h, 0);
    return 0;
}

/* The owner's thread id; 0 (nobody) once the handle is closed. */
int64_t shms_heap_lock_owner(shms_heap_t *h)
{
    int64_t owner;
    if (shms_enter(h))
        return 0;
    owner = shms_mutex_owner(h->hdr->mutex);
    shms_leave(h);
    return owner;
}

/* Enters the handle (SHMS_ECLOSED once closed); on success the caller is
 * inside until shms_op_end, on failure it is not. */
int shms_op_begin(shms_heap_t *h, int held, int64_t timeout_ns)
{
    int rc = shms_enter(h);
    if (rc)
        return rc;
    if (held)
        rc = h->hdr->corrupt || h->hdr->ident_sum != shms_ident_sum(h->hdr)
                 ? SHMS_ECORRUPT : shms_ext_sync(h);
    else if ((rc = shms_heap_lock_entered(h, timeout_ns)) == SHMS_RECOVERED)
        rc = 0;
    if (rc)
        shms_leave(h);
    return rc;
}

void shms_op_end(shms_heap_t *h, int held)
{
    if (!held)
        shms_mutex_unlock(h->hdr->mutex);
    shms_leave(h);
}

int shms_op_damage(shms_heap_t *h, int *rc, int attempt)
{
    int r;
    if (*rc != SHMS_EDAMAGED && !h->damaged)
        return 0;
    h->damaged = 0;
    r = recover(h, 1);
    shms_bump_modcount(h);          /* readers' caches may hold damaged data */
    if (r) {
        *rc = r;
        return 0;
    }
    if (*rc != SHMS_EDAMAGED)
        return 0;                   /* the op completed; derived data rebuilt */
    if (attempt == 0)
        return 1;
    *rc = shms_set_corrupt(h, "an operation found damage that a rebuild did not repair");
    return 0;
}

int shms_run_op(shms_heap_t *h, int held, int64_t timeout_ns, shms_op_body_t body, void *arg)
{
    int rc = shms_op_begin(h, held, timeout_ns), attempt = 0;
    if (rc)
        return rc;
    do
        rc = body(h, arg);
    while (shms_op_damage(h, &rc, attempt++));
    shms_op_end(h, held);
    if (!held)
        shms_ahead(h);              /* the pages it walks into next, lock let go */
    return rc;
}

typedef struct {
    shms_op_body_t body;
    void *arg;
} no_grow_t;

static int no_grow_body(shms_heap_t *h, void *p)
{
    no_grow_t *n = p;
    int rc;
    h->no_grow = 1;     /* under the heap lock: no other thread is in an op */
    rc = n->body(h, n->arg);
    h->no_grow = 0;
    return rc;
}

/* shms_run_op, the body never creating an extent (SHMS_EGROW instead): the
 * one-call paths, whose general path grows the heap where Python sees it. */
int shms_run_op_no_grow(shms_heap_t *h, int held, int64_t timeout_ns, shms_op_body_t body,
                        void *arg)
{
    no_grow_t n = {.body = body, .arg = arg};
    return shms_run_op(h, held, timeout_ns, no_grow_body, &n);
}

/* Run the full recovery now (tests; `stats equal before/after rebuild`). */
int shms_heap_rebuild(shms_heap_t *h, int held, int64_t timeout_ns)
{
    int rc = shms_op_begin(h, held, timeout_ns);
    if (rc)
        return rc;
    rc = recover(h, 0);
    shms_op_end(h, held);
    return rc;
}
