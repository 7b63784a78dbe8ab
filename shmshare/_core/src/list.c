/* The list root kind: an array of value references (layout: list_int.h),
 * every operation one shms_run_op under the heap lock.
 *
 * COMMIT POINTS (a process may die at any instruction; each commit is one
 * aligned 8-byte release store, and recovery frees whatever became
 * unreachable, so a killed writer leaves the list as before or as after):
 *   in place  new item blocks written into ring slots outside the live
 *             range; hn := (head', n') (commit); removed items freed.
 *             append, extend, insert(0), prepend, pop(), pop(0), del of a
 *             head or tail run: O(1) per item, no reference moved.
 *   setitem   new item block; refs[slot] := it (commit); old one freed.
 *   rebuild   a new ref array (new items made, kept refs copied, a ref used
 *             twice copied as a new block); rec->arr := it (commit); removed
 *             items and the old array freed.  A middle insert or delete,
 *             growth past the capacity (x 1.5) or shrinking below a quarter,
 *             slices with a step, sort, reverse, *=: O(n) reference copies in
 *             C, never a value copy (but for *=).
 * After every commit the length word rec->lenw is stored (read without the
 * lock: a reader sees the old or the new length) and modcount bumped.
 * Every ref followed is validated first (heap_int.h, GUARDED ACCESS): a
 * damaged one fails the operation as SHMS_EDAMAGED (rebuild, then
 * SHMS_ECORRUPT if the damage survives it), never a wrong item or a fault.
 */
#include "list_int.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ helpers */

static int create(shms_heap_t *h)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t rref, aref;
    shms_lrec_t *r;
    shms_larr_t *a;
    int rc;
    if ((rc = shms_alloc(h, sizeof *r, &rref)))
        return rc;
    if ((rc = shms_alloc(h, sizeof *a + SHMS_LIST_MINCAP * 8, &aref))) {
        shms_free(h, rref);
        return rc;
    }
    a = shms_ptr(h, aref);
    a->cap = SHMS_LIST_MINCAP;
    a->hn = 0;
    r = shms_ptr(h, rref);
    r->magic = SHMS_LIST_MAGIC;
    r->lenw = shms_list_lenw(0);
    r->arr = aref;
    r->pad = 0;
    shms_store64(&H->root_kind, SHMS_KIND_LIST);
    shms_store64(&H->root, rref);                         /* commit */
    shms_bump_modcount(h);
    return 0;
}

/* The list's record and ref array, validated (made if the heap has none). */
int shms_list_of(shms_heap_t *h, shms_lrec_t **rp, shms_larr_t **ap)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t payload;
    int rc;
    if (H->root_kind >= SHMS_NKINDS || (H->root_kind == SHMS_KIND_NONE && H->root))
        return SHMS_EDAMAGED;
    if (H->root_kind != SHMS_KIND_LIST && H->root_kind != SHMS_KIND_NONE)
        return SHMS_EWRONGKIND;
    if (!H->root && (rc = create(h)))
        return rc;
    *rp = shms_used_ptr(h, H->root, sizeof **rp, NULL);
    if (!*rp || (*rp)->magic != SHMS_LIST_MAGIC)
        return SHMS_EDAMAGED;
    *ap = shms_used_ptr(h, (*rp)->arr, sizeof **ap, &payload);
    return *ap && shms_larr_ok(*ap, payload) ? 0 : SHMS_EDAMAGED;
}

/* The item block at ref, validated; NULL if damaged. */
shms_litem_t *shms_litem_at(shms_heap_t *h, uint64_t ref)
{
    uint64_t payload;
    shms_litem_t *b = shms_used_ptr(h, ref, sizeof *b, &payload);
    return b && b->vlen <= payload - sizeof *b && b->tag == shms_litem_tag(ref, b->vlen)
               ? b : NULL;
}

static int make_item(shms_heap_t *h, const char *head, uint64_t hlen, const char *val,
                     uint64_t vlen, const char *tail, uint64_t tlen, uint64_t *ref)
{
    shms_litem_t *b;
    uint64_t n = hlen + vlen + tlen;
    int rc;
    if (vlen > (1ULL << 46) || n > (1ULL << 46))
        return ENOMEM;
    if ((rc = shms_alloc(h, sizeof *b + n, ref)))
        return rc;
    b = shms_ptr(h, *ref);
    b->vlen = n;
    b->tag = shms_litem_tag(*ref, n);
    if (hlen)
        memcpy(b + 1, head, hlen);
    if (vlen)
        memcpy((char *)(b + 1) + hlen, val, vlen);
    if (tlen)
        memcpy((char *)(b + 1) + hlen + vlen, tail, tlen);
    return 0;
}

int shms_litem_make(shms_heap_t *h, const char *val, uint64_t vlen, uint64_t *ref)
{
    return make_item(h, NULL, 0, val, vlen, NULL, 0, ref);
}

int shms_litem_make_of(shms_heap_t *h, const lop_t *o, uint64_t t, uint64_t off, uint64_t *ref)
{
    if (o->vhead && o->nvals == 1)
        return make_item(h, o->vhead, o->vhlen, o->vals, o->vlens[0], o->vtail, o->vtlen, ref);
    return make_item(h, NULL, 0, o->vals + off, o->vlens[t], NULL, 0, ref);
}

static void publish(shms_heap_t *h, shms_lrec_t *r, uint64_t n)
{
    shms_store64(&r->lenw, shms_list_lenw(n));
    shms_bump_modcount(h);
}

static uint64_t grown_cap(uint64_t n)
{
    uint64_t c = n + (n >> 1) + SHMS_LIST_MINCAP;
    return c > SHMS_LIST_MAX ? SHMS_LIST_MAX : c;
}

/* Every item in [start, stop) is a sound block (before they are freed). */
static int check_run(shms_heap_t *h, shms_larr_t *a, uint64_t start, uint64_t stop)
{
    uint64_t *refs = shms_lrefs(a), i;
    for (i = start; i < stop; i++)
        if (!shms_litem_at(h, refs[shms_lslot(a, i)]))
            return SHMS_EDAMAGED;
    return 0;
}

static void free_run(shms_heap_t *h, const shms_larr_t *a, uint64_t hn, uint64_t start,
                     uint64_t stop)
{
    shms_larr_t old = {a->cap, hn};
    const uint64_t *refs = shms_lrefs((shms_larr_t *)a);
    uint64_t i;
    for (i = start; i < stop; i++)
        shms_free(h, refs[shms_lslot(&old, i)]);
}

/* Items [start, stop) replaced by the nvals values, in a new ref array of
 * room for grown_cap(n'): the rebuild commit.  The removed run is checked. */
static int rebuild_splice(shms_heap_t *h, shms_lrec_t *r, shms_larr_t *a, uint64_t start,
                          uint64_t stop, const lop_t *o)
{
    uint64_t nvals = o ? o->nvals : 0;
    uint64_t n = shms_hn_n(a->hn), nn = n - (stop - start) + nvals, ncap, ref, oldref = r->arr;
    uint64_t *old = shms_lrefs(a), *nr, t, off = 0;
    shms_larr_t *na;
    int rc;
    if (nn > SHMS_LIST_MAX)
        return ENOMEM;
    if ((rc = check_run(h, a, start, stop)))
        return rc;
    ncap = grown_cap(nn);
    if ((rc = shms_alloc(h, sizeof *na + ncap * 8, &ref)))
        return rc;
    na = shms_ptr(h, ref);
    na->cap = ncap;
    na->hn = shms_hn(0, nn);
    nr = shms_lrefs(na);
    for (t = 0; t < nvals; t++) {
        if ((rc = shms_litem_make_of(h, o, t, off, &nr[start + t]))) {
            while (t--)
                shms_free(h, nr[start + t]);
            shms_free(h, ref);
            return rc;
        }
        off += o->vlens[t];
    }
    for (t = 0; t < start; t++)
        nr[t] = old[shms_lslot(a, t)];
    for (t = stop; t < n; t++)
        nr[start + nvals + t - stop] = old[shms_lslot(a, t)];
    shms_store64(&r->arr, ref);                           /* commit */
    publish(h, r, nn);
    free_run(h, a, a->hn, start, stop);
    shms_free(h, oldref);
    return 0;
}

/* Items [start, stop) replaced by the values: in place when the change is at
 * an end and fits (or, shrinking, keeps a quarter of the slots used). */
int shms_list_splice_in(shms_heap_t *h, shms_lrec_t *r, shms_larr_t *a, uint64_t start,
                        uint64_t stop, const lop_t *o)
{
    uint64_t nvals = o ? o->nvals : 0, hn = a->hn, head = shms_hn_head(hn);
    uint64_t n = shms_hn_n(hn), cap = a->cap;
    uint64_t nn = n - (stop - start) + nvals, *refs = shms_lrefs(a), t, off = 0, s;
    int rc;
    int grow_end = start == n && stop == n, grow_front = start == 0 && stop == 0 && n;
    int cut = !nvals && (stop == n || start == 0);
    if (nn > SHMS_LIST_MAX)
        return ENOMEM;
    if (((grow_end || grow_front) && nn <= cap) ||
        (cut && !(nn < cap / 4 && cap > 4 * SHMS_LIST_MINCAP))) {
        if (cut) {
            if ((rc = check_run(h, a, start, stop)))
                return rc;
            shms_store64(&a->hn, start ? shms_hn(head, start)       /* commit */
                                       : shms_hn((head + stop) % cap, n - stop));
            publish(h, r, nn);
            free_run(h, a, hn, start, stop);
            return 0;
        }
        for (t = 0; t < nvals; t++) {
            /* end: slots n..; front: slots head-nvals.. (mod cap) */
            s = grow_end ? shms_lslot(a, n + t) : (head + cap - nvals + t) % cap;
            if ((rc = shms_litem_make_of(h, o, t, off, &refs[s]))) {
                while (t--)
                    shms_free(h, refs[grow_end ? shms_lslot(a, n + t)
                                               : (head + cap - nvals + t) % cap]);
                return rc;
            }
            off += o->vlens[t];
        }
        shms_store64(&a->hn, grow_end ? shms_hn(head, nn)             /* commit */
                                      : shms_hn((head + cap - nvals) % cap, nn));
        publish(h, r, nn);
        return 0;
    }
    return rebuild_splice(h, r, a, start, stop, o);
}


/* The list made anew from plan[0..m): plan[k] >= 0 is old item plan[k] (its
 * ref kept, a second use copies the block), plan[k] < 0 the next of the
 * values (-1 first, -2 next...: each used once, in order). */
int shms_list_rebuild_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    shms_lrec_t *r;
    shms_larr_t *a, *na;
    uint64_t n, t, k, ncap, ref, oldref, off = 0, *old, *nr, *seen = NULL, *fresh = NULL;
    int64_t p;
    int rc = shms_list_of(h, &r, &a);
    if (rc)
        return rc;
    n = shms_hn_n(a->hn);
    old = shms_lrefs(a);
    if (o->expect != n || o->m > SHMS_LIST_MAX)
        return o->m > SHMS_LIST_MAX ? ENOMEM : EINVAL;
    for (k = t = 0; k < o->m; k++) {
        p = o->plan[k];
        if (p >= 0 ? (uint64_t)p >= n : (uint64_t)-(p + 1) != t++)
            return EINVAL;              /* (p + 1 cannot overflow: p < 0) */
    }
    if (t != o->nvals)
        return EINVAL;
    if ((rc = check_run(h, a, 0, n)))
        return rc;
    seen = calloc(n / 64 + 1, 8);
    fresh = calloc(o->m / 64 + 1, 8);
    ncap = grown_cap(o->m);
    if (!seen || !fresh || (rc = shms_alloc(h, sizeof *na + ncap * 8, &ref))) {
        free(seen);
        free(fresh);
        return rc ? rc : ENOMEM;
    }
    na = shms_ptr(h, ref);
    na->cap = ncap;
    na->hn = shms_hn(0, o->m);
    nr = shms_lrefs(na);
    for (k = t = 0; k < o->m && !rc; k++) {
        p = o->plan[k];
        if (p < 0) {
            rc = shms_litem_make(h, o->vals + off, o->vlens[t], &nr[k]);
            off += o->vlens[t++];
        } else if (seen[p / 64] >> (p % 64) & 1) {
            shms_litem_t *b = shms_ptr(h, old[shms_lslot(a, (uint64_t)p)]);
            rc = shms_litem_make(h, (const char *)(b + 1), b->vlen, &nr[k]);
        } else {
            seen[p / 64] |= 1ULL << (p % 64);
            nr[k] = old[shms_lslot(a, (uint64_t)p)];
            continue;
        }
        if (!rc)
            fresh[k / 64] |= 1ULL << (k % 64);
    }
    if (rc) {                                   /* nothing published: undo */
        for (k = 0; k < o->m; k++)
            if (fresh[k / 64] >> (k % 64) & 1)
                shms_free(h, nr[k]);
        shms_free(h, ref);
    } else {
        oldref = r->arr;
        shms_store64(&r->arr, ref);                       /* commit */
        publish(h, r, o->m);
        for (t = 0; t < n; t++)
            if (!(seen[t / 64] >> (t % 64) & 1))
                shms_free(h, old[shms_lslot(a, t)]);
        shms_free(h, oldref);
    }
    free(seen);
    free(fresh);
    return rc;
}

