/* The structural check (shms_heap_check): everything recovery would
 * recompute, compared with what is stored -- flags against marks, prev
 * sizes, coalescing, counters, bins -- and the root kind's own check.
 * Read-only: it reports the first problem and changes nothing.
 */
#include "mark_int.h"
#include <stdio.h>

/* Walk extent e comparing flags with marks, prev sizes, coalescing. */
static int check_extent(shms_markctx_t *c, unsigned e, uint64_t *sum /* used, free, nfree, nused */)
{
    shms_heap_t *h = c->h;
    uint64_t pos = h->first[e], prev = 0, s;
    int prev_free = 0;
    while (pos < h->end[e]) {
        shms_blk_t *b = shms_blk_at(h, e, pos);
        int used = (int)(b->size & SHMS_B_USED), marked = shms_mark_bit(c->marks[e], pos);
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
                (off & 15) || !shms_mark_bit(c->starts[e], off)) {
                shms_mark_fail(c, "bin %u: bad node %#llx (or cycle)", b, (unsigned long long)r);
                break;
            }
            if (shms_blk_at(h, e, off)->size & SHMS_B_USED)
                shms_mark_fail(c, "bin %u: node %#llx is in use", b, (unsigned long long)r);
            if (shms_bin_of(shms_blk_at(h, e, off)->size & SHMS_SIZE_MASK) != b)
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
    if ((rc = shms_mark_init(&c, h, msg, cap)))
        return rc;
    if (shms_mark_walk(&c) || shms_mark_root(&c))
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
    if (!c.failed && H->root && shms_kinds[H->root_kind].check &&
        shms_kinds[H->root_kind].check(h, H->root, msg, cap))
        c.failed = 1;
out:
    shms_mark_free(&c);
    return c.failed ? 1 : 0;
}

/* 0 if consistent; 1 with a description in msg; or an error code. */
int shms_heap_check(shms_heap_t *h, char *msg, size_t cap, int held, int64_t timeout_ns)
{
    int rc = shms_enter(h);
    if (rc)
        return rc;
    rc = held ? 0 : shms_heap_lock_entered(h, timeout_ns);
    if (rc == SHMS_ECORRUPT || (held && h->hdr->corrupt)) {
        snprintf(msg, cap, "heap marked corrupt: %s", h->hdr->why);
        shms_leave(h);
        return 1;
    }
    if (rc && rc != SHMS_RECOVERED) {
        shms_leave(h);
        return rc;
    }
    if (h->hdr->ident_sum != shms_ident_sum(h->hdr)) {
        snprintf(msg, cap, "heap header checksum mismatch: the hash seed or the layout "
                 "fields are damaged");
        rc = 1;
    } else if (!(rc = shms_ext_sync(h)))
        rc = check_locked(h, msg, cap);
    shms_op_end(h, held);
    return rc;
}
