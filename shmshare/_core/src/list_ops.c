/* The list's operations and entry points, each one shms_run_op under the heap
 * lock (the layout: list_int.h; the helpers, commit points and rebuilds:
 * list.c). */
#include "list_int.h"
#include <errno.h>
#include <string.h>

/* Python's index rules: i < 0 counts from the end; -1 if out of range. */
static int64_t norm(int64_t i, uint64_t n)
{
    if (i < 0)
        i += (int64_t)n;
    return i < 0 || (uint64_t)i >= n ? -1 : i;
}

/* ------------------------------------------------------------ operations */

static int open_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    shms_lrec_t *r;
    shms_larr_t *a;
    int rc = shms_list_of(h, &r, &a);
    if (rc)
        return rc;
    if (r->lenw != shms_list_lenw(shms_hn_n(a->hn)))
        return SHMS_EDAMAGED;                   /* the repair rewrites it */
    *o->lenp = &r->lenw;
    return 0;
}

static int len_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    int rc = open_body(h, arg);
    shms_lrec_t *r = shms_ptr(h, h->hdr->root);
    if (!rc)
        o->res[0] = shms_hn_n(((shms_larr_t *)shms_ptr(h, r->arr))->hn);
    return rc;
}

/* Item o->i's block in *bp: res[1] the modcount the read is consistent with,
 * res[2] the length. */
static int find_item(shms_heap_t *h, lop_t *o, shms_litem_t **bp)
{
    shms_lrec_t *r;
    shms_larr_t *a;
    int64_t i;
    int rc = shms_list_of(h, &r, &a);
    if (rc)
        return rc;
    o->res[1] = shms_load64(&h->hdr->modcount);
    o->res[2] = shms_hn_n(a->hn);
    if ((i = norm(o->i, o->res[2])) < 0)
        return SHMS_ENOTFOUND;
    if (!(*bp = shms_litem_at(h, shms_lrefs(a)[shms_lslot(a, (uint64_t)i)])))
        return SHMS_EDAMAGED;
    return 0;
}

/* Item i into out: res[0] its length (needed length: SHMS_ETOOSMALL),
 * res[1] and res[2] as find_item's. */
static int get_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    shms_litem_t *b;
    int rc = find_item(h, o, &b);
    if (rc)
        return rc;
    o->res[0] = b->vlen;
    if (b->vlen > o->cap)
        return SHMS_ETOOSMALL;
    memcpy(o->out, b + 1, b->vlen);
    return 0;
}

static int set_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    shms_lrec_t *r;
    shms_larr_t *a;
    uint64_t *slot, old, ref;
    int64_t i;
    int rc = shms_list_of(h, &r, &a);
    if (rc)
        return rc;
    o->res[2] = shms_hn_n(a->hn);
    if ((i = norm(o->i, o->res[2])) < 0)
        return SHMS_ENOTFOUND;
    slot = &shms_lrefs(a)[shms_lslot(a, (uint64_t)i)];
    if (!shms_litem_at(h, old = *slot))
        return SHMS_EDAMAGED;
    if ((rc = shms_litem_make_of(h, o, 0, 0, &ref)))
        return rc;
    shms_store64(slot, ref);                              /* commit */
    shms_free(h, old);
    shms_bump_modcount(h);
    return 0;
}

/* list.insert(i, x): i clamped as list does. */
static int insert_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    shms_lrec_t *r;
    shms_larr_t *a;
    uint64_t n;
    int64_t i = o->i;
    int rc = shms_list_of(h, &r, &a);
    if (rc)
        return rc;
    n = shms_hn_n(a->hn);
    if (i < 0 && (i += (int64_t)n) < 0)
        i = 0;
    if ((uint64_t)i > n)
        i = (int64_t)n;
    return shms_list_splice_in(h, r, a, (uint64_t)i, (uint64_t)i, o);
}

/* Item i copied out (as get_body) and removed. */
static int pop_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    shms_lrec_t *r;
    shms_larr_t *a;
    int64_t i;
    int rc = get_body(h, arg);
    if (rc)
        return rc;
    shms_list_of(h, &r, &a);
    i = norm(o->i, o->res[2]);
    return shms_list_splice_in(h, r, a, (uint64_t)i, (uint64_t)i + 1, NULL);
}

/* A large item read in one copy (shms_list_peek, shms_list_fetch_split): the
 * item's bytes handed to cb, or its split data copied into raw; with remove,
 * the item is then taken out of the list, under the same hold of the lock (a
 * pop).  A read or a removal that fails leaves the list as it was. */
typedef struct {
    lop_t o;
    int remove;
    shms_peek_cb cb;
    void *ctx;
    char *raw;
    uint64_t raw_cap;
} big_read_t;

static int removed_if_asked(shms_heap_t *h, const big_read_t *p, int rc)
{
    shms_lrec_t *r;
    shms_larr_t *a;
    int64_t i;
    if (rc || !p->remove)
        return rc;
    shms_list_of(h, &r, &a);            /* (find_item validated both) */
    i = norm(p->o.i, shms_hn_n(a->hn));
    rc = shms_list_splice_in(h, r, a, (uint64_t)i, (uint64_t)i + 1, NULL);
    /* Never a buffer too small: on that, a caller grows its buffers and reads again. */
    return rc == SHMS_ETOOSMALL ? ENOMEM : rc;
}

static int peek_body(shms_heap_t *h, void *arg)
{
    big_read_t *p = arg;
    shms_litem_t *b;
    int rc = find_item(h, &p->o, &b);
    if (!rc)
        rc = p->cb(p->ctx, (const char *)(b + 1), b->vlen, p->o.res[1], p->o.res[2]);
    return removed_if_asked(h, p, rc);
}

static int fetch_split_body(shms_heap_t *h, void *arg)
{
    big_read_t *p = arg;
    shms_litem_t *b;
    int rc = find_item(h, &p->o, &b);
    if (rc)
        return rc;
    p->o.res[2] = p->o.res[1];          /* the modcount; res[1] becomes the data's length */
    rc = shms_split_copy((const char *)(b + 1), b->vlen, p->o.out, p->o.cap, p->raw,
                         p->raw_cap, p->o.res);
    return removed_if_asked(h, p, rc);
}

/* Items [i, j) replaced by the values; i < 0: at the end (extend).  The
 * length must be `expect` (UINT64_MAX: any), else EINVAL. */
static int splice_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    shms_lrec_t *r;
    shms_larr_t *a;
    uint64_t n;
    int rc = shms_list_of(h, &r, &a);
    if (rc)
        return rc;
    n = shms_hn_n(a->hn);
    if (o->expect != UINT64_MAX && o->expect != n)
        return EINVAL;
    if (o->i < 0)
        return shms_list_splice_in(h, r, a, n, n, o);
    if (o->j < o->i || (uint64_t)o->j > n)
        return EINVAL;
    return shms_list_splice_in(h, r, a, (uint64_t)o->i, (uint64_t)o->j, o);
}

static int clear_body(shms_heap_t *h, void *arg)
{
    shms_lrec_t *r;
    shms_larr_t *a;
    int rc = shms_list_of(h, &r, &a);
    (void)arg;
    if (rc)
        return rc;
    return shms_list_splice_in(h, r, a, 0, shms_hn_n(a->hn), NULL);
}

/* Items [i, min(j, n)) into out: k lengths (uint64), then their bytes;
 * res[0] the bytes written (needed: SHMS_ETOOSMALL), res[1] = k,
 * res[2] the modcount the read is consistent with. */
static int read_body(shms_heap_t *h, void *arg)
{
    lop_t *o = arg;
    shms_lrec_t *r;
    shms_larr_t *a;
    shms_litem_t *b;
    uint64_t n, start, stop, need, t, *refs;
    char *p;
    int rc = shms_list_of(h, &r, &a);
    if (rc)
        return rc;
    n = shms_hn_n(a->hn);
    refs = shms_lrefs(a);
    start = o->i < 0 ? 0 : (uint64_t)o->i;
    stop = o->j < 0 || (uint64_t)o->j > n ? n : (uint64_t)o->j;
    if (start > stop)
        start = stop;
    need = (stop - start) * 8;
    for (t = start; t < stop; t++) {
        if (!(b = shms_litem_at(h, refs[shms_lslot(a, t)])))
            return SHMS_EDAMAGED;
        need += b->vlen;
    }
    o->res[0] = need;
    o->res[1] = stop - start;
    o->res[2] = shms_load64(&h->hdr->modcount);
    if (need > o->cap)
        return SHMS_ETOOSMALL;
    p = o->out + (stop - start) * 8;
    for (t = start; t < stop; t++) {
        b = shms_ptr(h, refs[shms_lslot(a, t)]);
        memcpy(o->out + (t - start) * 8, &b->vlen, 8);
        memcpy(p, b + 1, b->vlen);
        p += b->vlen;
    }
    return 0;
}

/* ------------------------------------------------------------ entry points */

int shms_list_open(shms_heap_t *h, const volatile uint64_t **lenp, int held, int64_t timeout_ns)
{
    lop_t o = {.lenp = lenp};
    return shms_run_op(h, held, timeout_ns, open_body, &o);
}

int shms_list_len(shms_heap_t *h, uint64_t *res, int held, int64_t timeout_ns)
{
    const volatile uint64_t *p;
    lop_t o = {.lenp = &p, .res = res};
    return shms_run_op(h, held, timeout_ns, len_body, &o);
}

int shms_list_get(shms_heap_t *h, int64_t i, char *out, uint64_t cap, uint64_t *res, int held,
                  int64_t timeout_ns)
{
    lop_t o = {.i = i, .out = out, .cap = cap, .res = res};
    return shms_run_op(h, held, timeout_ns, get_body, &o);
}

int shms_list_pop(shms_heap_t *h, int64_t i, char *out, uint64_t cap, uint64_t *res, int held,
                  int64_t timeout_ns)
{
    lop_t o = {.i = i, .out = out, .cap = cap, .res = res};
    return shms_run_op(h, held, timeout_ns, pop_body, &o);
}

int shms_list_set(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen, uint64_t *res,
                  int held, int64_t timeout_ns)
{
    lop_t o = {.i = i, .vals = val, .vlens = &vlen, .nvals = 1, .res = res};
    return shms_run_op(h, held, timeout_ns, set_body, &o);
}

int shms_list_insert(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen, int held,
                     int64_t timeout_ns)
{
    lop_t o = {.i = i, .vals = val, .vlens = &vlen, .nvals = 1};
    return shms_run_op(h, held, timeout_ns, insert_body, &o);
}

int shms_list_set_parts(shms_heap_t *h, int64_t i, const char *head, uint64_t hlen,
                        const char *val, uint64_t vlen, const char *tail, uint64_t tlen,
                        uint64_t *res, int held, int64_t timeout_ns)
{
    lop_t o = {.i = i, .vals = val, .vlens = &vlen, .nvals = 1, .vhead = head, .vhlen = hlen,
               .vtail = tail, .vtlen = tlen, .res = res};
    return shms_run_op(h, held, timeout_ns, set_body, &o);
}

int shms_list_insert_parts(shms_heap_t *h, int64_t i, const char *head, uint64_t hlen,
                           const char *val, uint64_t vlen, const char *tail, uint64_t tlen,
                           int held, int64_t timeout_ns)
{
    lop_t o = {.i = i, .vals = val, .vlens = &vlen, .nvals = 1, .vhead = head, .vhlen = hlen,
               .vtail = tail, .vtlen = tlen};
    return shms_run_op(h, held, timeout_ns, insert_body, &o);
}

/* The hot insert (append: i = INT64_MAX): the lock waited for one slice at
 * most, and never an extent created (SHMS_EGROW: growth takes
 * shms_list_insert, where Python sees and reports it), as shms_dict_store. */
int shms_list_push(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen)
{
    lop_t o = {.i = i, .vals = val, .vlens = &vlen, .nvals = 1};
    return shms_run_op_no_grow(h, 0, 100000000LL, insert_body, &o);
}

/* The hot lst[i] = x, the same way (SHMS_EGROW, i out of range, or the lock
 * held by this thread: shms_list_set decides). */
int shms_list_store(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen)
{
    uint64_t res[3];
    lop_t o = {.i = i, .vals = val, .vlens = &vlen, .nvals = 1, .res = res};
    return shms_run_op_no_grow(h, 0, 100000000LL, set_body, &o);
}

int shms_list_splice(shms_heap_t *h, int64_t start, int64_t stop, const char *vals,
                     const uint64_t *vlens, uint64_t nvals, uint64_t expect, int held,
                     int64_t timeout_ns)
{
    lop_t o = {.i = start, .j = stop, .vals = vals, .vlens = vlens, .nvals = nvals,
               .expect = expect};
    return shms_run_op(h, held, timeout_ns, splice_body, &o);
}

int shms_list_rebuild(shms_heap_t *h, const int64_t *plan, uint64_t m, const char *vals,
                      const uint64_t *vlens, uint64_t nvals, uint64_t expect, int held,
                      int64_t timeout_ns)
{
    lop_t o = {.plan = plan, .m = m, .vals = vals, .vlens = vlens, .nvals = nvals,
               .expect = expect};
    return shms_run_op(h, held, timeout_ns, shms_list_rebuild_body, &o);
}

int shms_list_clear(shms_heap_t *h, int held, int64_t timeout_ns)
{
    lop_t o = {0};
    return shms_run_op(h, held, timeout_ns, clear_body, &o);
}

int shms_list_read(shms_heap_t *h, int64_t start, int64_t stop, char *out, uint64_t cap,
                   uint64_t *res, int held, int64_t timeout_ns)
{
    lop_t o = {.i = start, .j = stop, .out = out, .cap = cap, .res = res};
    return shms_run_op(h, held, timeout_ns, read_body, &o);
}

/* Item i handed to cb under the heap lock, tried once (as shms_dict_peek: the
 * modcount and the length in place of a stripe and its version); with remove,
 * then taken out if cb returned 0. */
int shms_list_peek(shms_heap_t *h, int64_t i, int remove, shms_peek_cb cb, void *ctx)
{
    uint64_t res[3];
    big_read_t p = {.o = {.i = i, .res = res}, .remove = remove, .cb = cb, .ctx = ctx};
    return shms_run_op(h, 0, 0, peek_body, &p);
}

/* Item i, a split value, read as shms_dict_fetch_split reads one (res[0], res[1]
 * and res[3] as its; res[2] the modcount); SHMS_ENOSPLIT if it is not split;
 * with remove, then taken out if it was read. */
int shms_list_fetch_split(shms_heap_t *h, int64_t i, int remove, char *out, uint64_t cap,
                          char *raw, uint64_t raw_cap, uint64_t *res, int held,
                          int64_t timeout_ns)
{
    big_read_t p = {.o = {.i = i, .out = out, .cap = cap, .res = res}, .remove = remove,
                    .raw = raw, .raw_cap = raw_cap};
    return shms_run_op(h, held, timeout_ns, fetch_split_body, &p);
}
