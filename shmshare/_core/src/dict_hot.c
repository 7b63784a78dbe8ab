/* The calls of d[k] = v and d[k] that the hot path makes (ext/hotpath.c,
 * ext/dictitems.c): every argument of a cffi call costs about a hundred
 * instructions, and these are the calls whose cost a user sees.  cmplen =
 * klen, the lock not held; on any result but 0 (and, for fetch and peek,
 * ENOTFOUND) the caller takes the general path, which retries or raises.  A
 * store never creates an extent (SHMS_EGROW): growth happens on the general
 * path, where Python sees it and reports it.
 *
 * PEEK.  The read of d[k] when the cached value is out of date: under the
 * heap lock, tried once (never waiting, as its caller holds the GIL), the
 * value's bytes are handed to a callback where they lie, with the key's
 * version stripe and its version (READ CACHE in dict.c) -- so that the
 * caller copies them once, straight into the object it returns.  The
 * callback runs under the heap lock: it must be short, must not call into
 * the heap, and its nonzero result is returned.  The checks are get's: the
 * lookup validates the table, the index and the blob it finds; damage is
 * repaired and the read run again.
 *
 * STORE OF BYTES.  d[k] = b for one bytes object b writes what
 * pickle.dumps(b, 5) makes -- PROTO 5, BINBYTES (BINBYTES8 past 4 GiB) and
 * its length, b's bytes, MEMOIZE, STOP -- straight from b: one copy, not the
 * two of pickling first.  pickle's C implementation writes a bytes object
 * of at least its frame size (64 KiB) outside any frame, so for those the
 * stored bytes are exactly pickle's.
 */
#include "dict_int.h"
#include <errno.h>
#include <string.h>

#define HOT_SLICE_NS 100000000LL    /* one wait slice (100 ms) */

typedef struct {
    shms_dop_t a;
    shms_peek_cb cb;
    void *ctx;
} peek_t;

static int peek_body(shms_heap_t *h, void *arg)
{
    peek_t *p = arg;
    shms_dtab_t *t;
    shms_dblob_t *b;
    uint64_t *v, stripe = UINT64_MAX, version = 0;
    int64_t i;
    int rc = shms_dict_entry(h, p->a.key, p->a.cmplen, &t, &i);
    if (rc)
        return rc;
    if ((v = shms_dict_stripes(h, t))) {
        stripe = shms_dict_stripe(shms_dents(t)[i].hash);
        version = shms_load64(&v[stripe]);
    }
    b = shms_ptr(h, shms_dents(t)[i].blob);
    return p->cb(p->ctx, shms_dblob_val(b), b->vlen, stripe, version);
}

/* held (here and in the two stores below): 0, the lock tried once (EBUSY when
 * it is taken, EDEADLK when this thread holds it); 1, run under the hold the
 * calling thread has (ext/hotpath.c asks its guard first). */
int shms_dict_peek(shms_heap_t *h, const char *key, uint64_t klen, shms_peek_cb cb,
                   void *ctx, int held)
{
    peek_t p = {.a = {.key = key, .klen = klen, .cmplen = klen}, .cb = cb, .ctx = ctx};
    if (klen >= 0xFFFFFFFFULL)
        return EINVAL;
    return shms_run_op(h, held, 0, peek_body, &p);
}

typedef struct {
    const char *key;
    uint64_t klen;
    shms_take_cb cb;
    void *ctx;
} take_t;

static int take_body(shms_heap_t *h, void *arg)
{
    take_t *t = arg;
    return shms_dict_take(h, t->key, t->klen, t->cb, t->ctx);
}

/* d.pop(key) for ext/hotpath.c: the value handed to cb under the lock, tried
 * once (held: under the calling thread's hold), then the key deleted -- unless
 * cb returns an error, which leaves it in place.  SHMS_ENOTFOUND: no such key. */
int shms_dict_take_try(shms_heap_t *h, const char *key, uint64_t klen, shms_take_cb cb,
                       void *ctx, int held)
{
    take_t t = {.key = key, .klen = klen, .cb = cb, .ctx = ctx};
    return shms_dict_check_key(klen, klen) ?: shms_run_op(h, held, 0, take_body, &t);
}

int shms_dict_store(shms_heap_t *h, const char *key, uint64_t klen, const char *val,
                    uint64_t vlen)
{
    uint64_t res[1];
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = klen, .val = val, .vlen = vlen,
                    .res = res};
    return shms_dict_check_key(klen, klen) ?:
           shms_run_op_no_grow(h, 0, HOT_SLICE_NS, shms_dict_set_body, &a);
}

/* As shms_dict_store, but trying the lock once (held: see shms_dict_peek): for
 * a caller that holds the GIL, and so must never wait (ext/hotpath.c). */
int shms_dict_store_try(shms_heap_t *h, const char *key, uint64_t klen, const char *val,
                        uint64_t vlen, int held)
{
    uint64_t res[1];
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = klen, .val = val, .vlen = vlen,
                    .res = res};
    return shms_dict_check_key(klen, klen) ?:
           shms_run_op_no_grow(h, held, 0, shms_dict_set_body, &a);
}

/* a's value: the pickle of the n bytes at b (STORE OF BYTES above), its head
 * written into head (11 bytes). */
static void bytes_value(shms_dop_t *a, char *head, const char *b, uint64_t n)
{
    static const char tail[2] = {'\x94', '.'};          /* MEMOIZE, STOP */
    int w = n <= 0xFFFFFFFFULL ? 4 : 8;
    head[0] = '\x80';                                   /* PROTO 5 */
    head[1] = 5;
    head[2] = w == 4 ? 'B' : '\x8e';                    /* BINBYTES / BINBYTES8 */
    for (int i = 0; i < w; i++)
        head[3 + i] = (char)(n >> (8 * i));             /* the length, little-endian */
    a->vhead = head;
    a->vhlen = 3 + (uint64_t)w;
    a->val = b;
    a->vlen = n;
    a->vtail = tail;
    a->vtlen = sizeof tail;
}

/* As shms_dict_store_try, the value being the pickle of the bytes object
 * whose n bytes are at b (STORE OF BYTES above). */
int shms_dict_store_bytes_try(shms_heap_t *h, const char *key, uint64_t klen, const char *b,
                              uint64_t n, int held)
{
    char head[11];
    uint64_t res[1];
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = klen, .res = res};
    bytes_value(&a, head, b, n);
    return shms_dict_check_key(klen, klen) ?:
           shms_run_op_no_grow(h, held, 0, shms_dict_set_body, &a);
}

/* As shms_dict_set (cmplen = klen, not only if absent), the value being the
 * pickle of the bytes object whose n bytes are at b: a queue's put (queue.c). */
int shms_dict_set_bytes(shms_heap_t *h, const char *key, uint64_t klen, const char *b,
                        uint64_t n, uint64_t *res, int held, int64_t timeout_ns)
{
    char head[11];
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = klen, .res = res};
    bytes_value(&a, head, b, n);
    return shms_dict_check_key(klen, klen) ?:
           shms_run_op(h, held, timeout_ns, shms_dict_set_body, &a);
}

int shms_dict_fetch(shms_heap_t *h, const char *key, uint64_t klen, char *out, uint64_t cap,
                    uint64_t *res)
{
    return shms_dict_get(h, key, klen, klen, out, cap, res, 0, HOT_SLICE_NS);
}
