/* Locking, dead-owner recovery and the structural check.
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
#include "heap_int.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const shms_kind_ops_t kinds[SHMS_NKINDS] = {
    [SHMS_KIND_DICT] = {shms_dict_mark, shms_dict_repair, shms_dict_check_root,
                        shms_dict_count},
};

struct shms_markctx {
    shms_heap_t *h;
    uint64_t *starts[SHMS_MAX_EXT];     /* 1 bit per 16 bytes */
    uint64_t *marks[SHMS_MAX_EXT];
    char *msg;
    size_t cap;
    int failed;
};

void shms_mark_fail(shms_markctx_t *c, const char *fmt, ...)
{
    va_list ap;
    if (c->failed++ || !c->cap)
        return;
    va_start(ap, fmt);
    vsnprintf(c->msg, c->cap, fmt, ap);
    va_end(ap);
}

static int bit(const uint64_t *m, uint64_t off) { return (int)((m[off >> 10] >> ((off >> 4) & 63)) & 1); }
static void setbit(uint64_t *m, uint64_t off) { m[off >> 10] |= 1ULL << ((off >> 4) & 63); }

static void ctx_free(shms_markctx_t *c)
{
    unsigned e;
    for (e = 0; e < SHMS_MAX_EXT; e++) {
        free(c->starts[e]);
        free(c->marks[e]);
    }
}

static int ctx_init(shms_markctx_t *c, shms_heap_t *h, char *msg, size_t cap)
{
    unsigned e;
    memset(c, 0, sizeof *c);
    c->h = h;
    c->msg = msg;
    c->cap = cap;
    for (e = 0; e < SHMS_MAX_EXT; e++) {
        size_t words = (size_t)(h->end[e] >> 10) + 1;
        if (!h->base[e])
            continue;
        c->starts[e] = calloc(words, 8);
        c->marks[e] = calloc(words, 8);
        if (!c->starts[e] || !c->marks[e]) {
            ctx_free(c);
            return ENOMEM;
        }
    }
    return 0;
}

static shms_blk_t *blk(shms_heap_t *h, unsigned e, uint64_t off)
{
    return (shms_blk_t *)(h->base[e] + off);
}

/* Step 2: walk extent e by sizes, recording block starts. */
static int walk(shms_markctx_t *c, unsigned e)
{
    shms_heap_t *h = c->h;
    uint64_t pos = h->first[e], s;
    while (pos < h->end[e]) {
        s = blk(h, e, pos)->size & SHMS_SIZE_MASK;
        if (s < SHMS_MIN_BLOCK || s > h->end[e] - pos) {
            shms_mark_fail(c, "extent %u: block at offset %llu has bad size %llu", e,
                           (unsigned long long)pos, (unsigned long long)s);
            return -1;
        }
        setbit(c->starts[e], pos);
        pos += s;
    }
    return 0;
}

static int walk_all(shms_markctx_t *c)
{
    unsigned e;
    for (e = 0; e < SHMS_MAX_EXT; e++)
        if (c->h->base[e] && walk(c, e))
            return -1;
    return 0;
}

int shms_mark(shms_markctx_t *c, uint64_t ref, uint64_t min)
{
    shms_heap_t *h = c->h;
    unsigned e = shms_ref_ext(ref);
    uint64_t off = shms_ref_off(ref) - SHMS_BLK_HDR;
    if (e >= SHMS_MAX_EXT || !c->starts[e] || shms_ref_off(ref) < h->first[e] + SHMS_BLK_HDR ||
        off >= h->end[e] || (off & 15) || !bit(c->starts[e], off)) {
        shms_mark_fail(c, "ref %#llx is not a block", (unsigned long long)ref);
        return -1;
    }
    if ((blk(h, e, off)->size & SHMS_SIZE_MASK) - SHMS_BLK_HDR < min) {
        shms_mark_fail(c, "block %#llx smaller than %llu", (unsigned long long)ref,
                       (unsigned long long)min);
        return -1;
    }
    if (bit(c->marks[e], off)) {
        shms_mark_fail(c, "block %#llx referenced twice", (unsigned long long)ref);
        return -1;
    }
    setbit(c->marks[e], off);
    return 0;
}

void *shms_mark_ptr(shms_markctx_t *c, uint64_t ref)
{
    return shms_ptr(c->h, ref);
}

uint64_t shms_mark_payload(shms_markctx_t *c, uint64_t ref)
{
    return shms_payload_size(c->h, ref);
}

static int mark_root(shms_markctx_t *c)
{
    shms_heap_hdr_t *H = c->h->hdr;
    uint64_t kind = H->root_kind, root = H->root;
    if (kind >= SHMS_NKINDS || (kind == SHMS_KIND_NONE && root)) {
        shms_mark_fail(c, "bad root kind %llu", (unsigned long long)kind);
        return -1;
    }
    if (!root || !kinds[kind].mark)
        return 0;
    return kinds[kind].mark(c, root);
}

/* Step 4 for one extent. */
static void rebuild_extent(shms_markctx_t *c, unsigned e)
{
    shms_heap_t *h = c->h;
    shms_heap_hdr_t *H = h->hdr;
    uint64_t pos = h->first[e], prev = 0, s;
    while (pos < h->end[e]) {
        shms_blk_t *b = blk(h, e, pos);
        s = b->size & SHMS_SIZE_MASK;
        b->prev = prev;
        if (bit(c->marks[e], pos)) {
            b->size = s | SHMS_B_USED;
            H->bytes_used += s;
            H->n_used_blocks++;
        } else {
            while (pos + s < h->end[e] && !bit(c->marks[e], pos + s)) {
                s += blk(h, e, pos + s)->size & SHMS_SIZE_MASK;
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
    if ((rc = ctx_init(&c, h, why, sizeof why)))
        return rc;
    if (walk_all(&c) || mark_root(&c)) {
        ctx_free(&c);
        return shms_set_corrupt(h, why);
    }
    rebuild_allocator(&c);
    ctx_free(&c);
    kind = H->root_kind;
    if (H->root && kinds[kind].repair && (rc = kinds[kind].repair(h, H->root)))
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
int shms_heap_lock(shms_heap_t *h, int64_t timeout_ns)
{
    int rc = shms_mutex_lock(h->hdr->mutex, timeout_ns);
    if (rc == EOWNERDEAD)
        return after_lock(h, 1);
    if (rc)
        return rc;
    return after_lock(h, 0);
}

int shms_heap_unlock(shms_heap_t *h)
{
    return shms_mutex_unlock(h->hdr->mutex);
}

int64_t shms_heap_lock_owner(shms_heap_t *h)
{
    return shms_mutex_owner(h->hdr->mutex);
}

int shms_op_begin(shms_heap_t *h, int held, int64_t timeout_ns)
{
    int rc;
    if (held)
        return h->hdr->corrupt || h->hdr->ident_sum != shms_ident_sum(h->hdr)
                   ? SHMS_ECORRUPT : shms_ext_sync(h);
    rc = shms_heap_lock(h, timeout_ns);
    return rc == SHMS_RECOVERED ? 0 : rc;
}

void shms_op_end(shms_heap_t *h, int held)
{
    if (!held)
        shms_mutex_unlock(h->hdr->mutex);
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
    return rc;
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

/* ------------------------------------------------------------- check */

/* Walk extent e comparing flags with marks, prev sizes, coalescing. */
static int check_extent(shms_markctx_t *c, unsigned e, uint64_t *sum /* used, free, nfree, nused */)
{
    shms_heap_t *h = c->h;
    uint64_t pos = h->first[e], prev = 0, s;
    int prev_free = 0;
    while (pos < h->end[e]) {
        shms_blk_t *b = blk(h, e, pos);
        int used = (int)(b->size & SHMS_B_USED), marked = bit(c->marks[e], pos);
        s = b->size & SHMS_SIZE_MASK;
        if (b->size & 14)
            shms_mark_fail(c, "extent %u offset %llu: stray flag bits", e, (unsigned long long)pos);
        if (used && !marked)
            shms_mark_fail(c, "extent %u offset %llu: used block not reachable (leak)", e,
                           (unsigned long long)pos);
        if (!used && marked)
            shms_mark_fail(c, "extent %u offset %llu: reachable block is free", e,
                           (unsigned long long)pos);
        if (b->prev != prev)
            shms_mark_fail(c, "extent %u offset %llu: prev size %llu, expected %llu", e,
                           (unsigned long long)pos, (unsigned long long)b->prev,
                           (unsigned long long)prev);
        if (!used && prev_free)
            shms_mark_fail(c, "extent %u offset %llu: two adjacent free blocks", e,
                           (unsigned long long)pos);
        sum[used ? 0 : 1] += s;
        sum[used ? 3 : 2]++;
        prev_free = !used;
        prev = s;
        pos += s;
    }
    return c->failed ? -1 : 0;
}

/* Every bin: a well-formed doubly linked list of free blocks of its size. */
static int check_bins(shms_markctx_t *c, uint64_t nfree)
{
    shms_heap_t *h = c->h;
    shms_heap_hdr_t *H = h->hdr;
    uint64_t seen = 0, r, back;
    unsigned b;
    for (b = 0; b < SHMS_NBINS; b++) {
        int bitset = (int)((H->bitmap[b / 64] >> (b % 64)) & 1);
        if (bitset != (H->bins[b] != 0))
            shms_mark_fail(c, "bin %u: bitmap bit %d but head %#llx", b, bitset,
                           (unsigned long long)H->bins[b]);
        for (back = 0, r = H->bins[b]; r && !c->failed; back = r, r = ((uint64_t *)shms_ptr(h, r))[0]) {
            unsigned e = shms_ref_ext(r);
            uint64_t off = shms_ref_off(r) - SHMS_BLK_HDR;
            if (++seen > nfree || e >= SHMS_MAX_EXT || !c->starts[e] || off >= h->end[e] ||
                (off & 15) || !bit(c->starts[e], off)) {
                shms_mark_fail(c, "bin %u: bad node %#llx (or cycle)", b, (unsigned long long)r);
                break;
            }
            if (blk(h, e, off)->size & SHMS_B_USED)
                shms_mark_fail(c, "bin %u: node %#llx is in use", b, (unsigned long long)r);
            if (shms_bin_of(blk(h, e, off)->size & SHMS_SIZE_MASK) != b)
                shms_mark_fail(c, "bin %u: node %#llx has the wrong size", b, (unsigned long long)r);
            if (((uint64_t *)shms_ptr(h, r))[1] != back)
                shms_mark_fail(c, "bin %u: node %#llx has a bad back link", b, (unsigned long long)r);
        }
    }
    if (!c->failed && seen != nfree)
        shms_mark_fail(c, "%llu free blocks but %llu in bins", (unsigned long long)nfree,
                       (unsigned long long)seen);
    return c->failed ? -1 : 0;
}

static int check_locked(shms_heap_t *h, char *msg, size_t cap)
{
    shms_heap_hdr_t *H = h->hdr;
    shms_markctx_t c;
    uint64_t sum[4] = {0, 0, 0, 0}, total = 0;
    unsigned e;
    int rc;
    if ((rc = ctx_init(&c, h, msg, cap)))
        return rc;
    if (walk_all(&c) || mark_root(&c))
        goto out;
    for (e = 0; e < SHMS_MAX_EXT && !c.failed; e++)
        if (h->base[e]) {
            check_extent(&c, e, sum);
            total += h->end[e] - h->first[e];
        }
    if (!c.failed && (sum[0] != H->bytes_used || sum[1] != H->bytes_free ||
                      total != H->bytes_total || sum[3] != H->n_used_blocks))
        shms_mark_fail(&c, "counters: used %llu/%llu free %llu/%llu total %llu/%llu",
                       (unsigned long long)H->bytes_used, (unsigned long long)sum[0],
                       (unsigned long long)H->bytes_free, (unsigned long long)sum[1],
                       (unsigned long long)H->bytes_total, (unsigned long long)total);
    if (!c.failed)
        check_bins(&c, sum[2]);
    if (!c.failed && H->root && kinds[H->root_kind].check &&
        kinds[H->root_kind].check(h, H->root, msg, cap))
        c.failed = 1;
out:
    ctx_free(&c);
    return c.failed ? 1 : 0;
}

/* 0 if consistent; 1 with a description in msg; or an error code. */
int shms_heap_check(shms_heap_t *h, char *msg, size_t cap, int held, int64_t timeout_ns)
{
    int rc = held ? 0 : shms_heap_lock(h, timeout_ns);
    if (rc == SHMS_ECORRUPT || (held && h->hdr->corrupt)) {
        snprintf(msg, cap, "heap marked corrupt: %s", h->hdr->why);
        return 1;
    }
    if (rc && rc != SHMS_RECOVERED)
        return rc;
    if (h->hdr->ident_sum != shms_ident_sum(h->hdr)) {
        snprintf(msg, cap, "heap header checksum mismatch: the hash seed or the layout "
                 "fields are damaged");
        rc = 1;
    } else if (!(rc = shms_ext_sync(h)))
        rc = check_locked(h, msg, cap);
    shms_op_end(h, held);
    return rc;
}
