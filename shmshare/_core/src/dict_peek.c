/* The read of d[k] that the hot path makes when its cached value is out of
 * date (ext/hotpath.c): under the heap lock, tried once (never waiting, as
 * its caller holds the GIL), the value's bytes are handed to a callback
 * where they lie, with the key's version stripe and its version (READ CACHE
 * in dict.c) -- so that the caller copies them once, straight into the
 * object it returns.  The callback runs under the heap lock: it must be
 * short, must not call into the heap, and its nonzero result is returned.
 *
 * The checks are get's (dict.c): the lookup validates the table, the index
 * and the blob it finds; damage is repaired and the read run again.
 */
#include "dict_int.h"
#include <errno.h>

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
    uint64_t *v, slot, stripe = UINT64_MAX, version = 0;
    int64_t i;
    int rc = shms_dict_table(h, 0, &t);
    if (rc || !t)
        return rc ? rc : SHMS_ENOTFOUND;
    i = shms_dict_lookup(h, t, shms_hash64(p->a.key, p->a.cmplen, h->hdr->seed), p->a.key,
                         p->a.cmplen, &slot);
    if (i == SHMS_LK_DAMAGED)
        return SHMS_EDAMAGED;
    if (i < 0)
        return SHMS_ENOTFOUND;
    if ((v = shms_dict_stripes(h, t))) {
        stripe = shms_dict_stripe(shms_dents(t)[i].hash);
        version = shms_load64(&v[stripe]);
    }
    b = shms_ptr(h, shms_dents(t)[i].blob);
    return p->cb(p->ctx, shms_dblob_val(b), b->vlen, stripe, version);
}

int shms_dict_peek(shms_heap_t *h, const char *key, uint64_t klen, shms_peek_cb cb,
                   void *ctx)
{
    peek_t p = {.a = {.key = key, .klen = klen, .cmplen = klen}, .cb = cb, .ctx = ctx};
    if (klen >= 0xFFFFFFFFULL)
        return EINVAL;
    return shms_run_op(h, 0, 0, peek_body, &p);
}
