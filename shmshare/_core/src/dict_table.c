/* The dict's table (dict.c has the layout and commit points): the
 * open-addressing index over entry numbers, the version stripes of the read
 * cache, and making, publishing and resizing tables.
 */
#include "dict_int.h"
#include <errno.h>
#include <string.h>

/* ------------------------------------------------------------ index */

/* The probe sequence over the index (CPython's): the slot hash & mask, then
 * i*5 + perturb + 1 with perturb shifted right 5 bits per step, so every
 * bit of the hash takes part and every slot is reached.  Damaged tables are
 * bounded by PROBE_MAX steps. */
typedef struct {
    uint64_t i, mask, perturb;
} probe_t;
#define PROBE_MAX(t) (4 * (t)->isize + 64)

static probe_t probe_start(const shms_dtab_t *t, uint64_t hash)
{
    probe_t p = {hash & (t->isize - 1), t->isize - 1, hash};
    return p;
}

static void probe_next(probe_t *p)
{
    p->perturb >>= 5;
    p->i = (p->i * 5 + p->perturb + 1) & p->mask;
}

/* Two distinct keys' hashes differ in exactly one bit with probability
 * 64 / 2^64: such a pair is damage, checked by comparing the keys. */
static int one_bit(uint64_t x)
{
    return x && !(x & (x - 1));
}

int64_t shms_dict_lookup(shms_heap_t *h, shms_dtab_t *t, uint64_t hash, const char *key,
                         uint64_t cmplen, uint64_t *slot)
{
    uint32_t *ix = shms_dindex(t);
    shms_dent_t *en = shms_dents(t);
    uint64_t reuse = UINT64_MAX, n;
    probe_t p = probe_start(t, hash);
    for (n = 0; n < PROBE_MAX(t); n++, probe_next(&p)) {
        uint32_t v = ix[p.i];
        if (v == SHMS_IX_EMPTY) {
            *slot = reuse != UINT64_MAX ? reuse : p.i;
            return SHMS_LK_ABSENT;
        }
        if (v == SHMS_IX_DUMMY) {
            if (reuse == UINT64_MAX)
                reuse = p.i;
        } else if (v >= t->n_used) {
            return SHMS_LK_DAMAGED;             /* the index names no entry */
        } else if (en[v].blob && (en[v].hash == hash || one_bit(en[v].hash ^ hash))) {
            shms_dblob_t *b = shms_dblob_at(h, en[v].blob);
            if (!b)
                return SHMS_LK_DAMAGED;
            if (b->cmplen == cmplen && memcmp(shms_dblob_key(b), key, cmplen) == 0) {
                /* The key, under a hash one bit off: a flipped bit that would
                 * hide the key (and let a set store it twice).  Damage: the
                 * rebuild recomputes the hash from the key, then the op runs again. */
                if (en[v].hash != hash)
                    return SHMS_LK_DAMAGED;
                *slot = p.i;
                return v;
            }
        }
    }
    *slot = reuse;
    return SHMS_LK_ABSENT;
}

/* Slot of entry number e (which must be indexed). */
uint64_t shms_dict_slot_of(shms_dtab_t *t, uint64_t hash, uint32_t e)
{
    uint32_t *ix = shms_dindex(t);
    uint64_t n;
    probe_t p = probe_start(t, hash);
    for (n = 0; n < PROBE_MAX(t) && ix[p.i] != SHMS_IX_EMPTY; n++, probe_next(&p))
        if (ix[p.i] == e)
            return p.i;
    return UINT64_MAX;
}

void shms_dict_index_insert(shms_dtab_t *t, uint64_t hash, uint32_t e)
{
    uint32_t *ix = shms_dindex(t);
    probe_t p = probe_start(t, hash);
    while (ix[p.i] != SHMS_IX_EMPTY)
        probe_next(&p);
    ix[p.i] = e;
}

/* The stripes of t, guarded (NULL: none, or a damaged ref, then flagged). */
uint64_t *shms_dict_stripes(shms_heap_t *h, shms_dtab_t *t)
{
    uint64_t *v;
    if (!t->vers)
        return NULL;
    if (!(v = shms_used_ptr(h, t->vers, SHMS_DICT_NVER * 8, NULL)))
        h->damaged = 1;
    return v;
}

void shms_dict_bump(shms_heap_t *h, shms_dtab_t *t, uint64_t hash, int all_keys)
{
    uint64_t *v = shms_dict_stripes(h, t), i;
    if (!v)
        return;
    if (!all_keys) {
        i = shms_dict_stripe(hash);
        __atomic_store_n(&v[i], v[i] + 1, __ATOMIC_SEQ_CST);
        return;
    }
    for (i = 0; i < SHMS_DICT_NVER; i++)
        __atomic_store_n(&v[i], v[i] + 1, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------------ tables */

static uint64_t isize_for(uint64_t cap)
{
    uint64_t n = 16;
    while (n < cap + cap / 2)
        n <<= 1;
    return n;
}

/* A fresh table holding the live entries of old (NULL: empty). */
int shms_dict_build_table(shms_heap_t *h, shms_dtab_t *old, uint64_t cap, uint64_t *ref)
{
    uint64_t isize = isize_for(cap), i, n = 0;
    shms_dtab_t *t;
    int rc;
    if (cap > SHMS_DICT_MAXCAP)
        return ENOMEM;
    if ((rc = shms_alloc(h, shms_dtab_bytes(cap, isize), ref)))
        return rc;
    t = shms_ptr(h, *ref);
    memset(t, 0, sizeof *t);
    t->cap = cap;
    t->isize = isize;
    memset(shms_dindex(t), 0xFF, isize * 4);
    if (old) {
        shms_dent_t *src = shms_dents(old), *dst = shms_dents(t);
        for (i = 0; i < old->n_used; i++) {
            if (!src[i].blob)
                continue;
            dst[n] = src[i];
            shms_dict_index_insert(t, src[i].hash, (uint32_t)n);
            n++;
        }
        t->next_seq = old->next_seq;
        t->vers = old->vers;
    }
    t->n_used = t->n_live = t->n_filled = n;
    return 0;
}

void shms_dict_publish_root(shms_heap_t *h, uint64_t ref)
{
    shms_store64(&h->hdr->root, ref);                     /* commit */
}

/* The dict's table; create: make an empty one if there is none. */
int shms_dict_table(shms_heap_t *h, int create, shms_dtab_t **out)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t ref, vers;
    int rc;
    *out = NULL;
    if (H->root_kind >= SHMS_NKINDS || (H->root_kind == SHMS_KIND_NONE && H->root))
        return SHMS_EDAMAGED;
    if (H->root_kind != SHMS_KIND_DICT && H->root_kind != SHMS_KIND_NONE)
        return SHMS_EWRONGKIND;
    if (H->root) {
        *out = shms_dtab_at(h, H->root);
        return *out ? 0 : SHMS_EDAMAGED;
    }
    if (!create)
        return 0;
    if ((rc = shms_alloc(h, SHMS_DICT_NVER * 8, &vers)))
        return rc;
    memset(shms_ptr(h, vers), 0, SHMS_DICT_NVER * 8);
    if ((rc = shms_dict_build_table(h, NULL, SHMS_DICT_MINCAP, &ref))) {
        shms_free(h, vers);
        return rc;
    }
    ((shms_dtab_t *)shms_ptr(h, ref))->vers = vers;
    shms_store64(&H->root_kind, SHMS_KIND_DICT);
    shms_dict_publish_root(h, ref);
    *out = shms_ptr(h, ref);
    return 0;
}

/* Replace the table by a compacted one with room to grow. */
int shms_dict_resize(shms_heap_t *h, shms_dtab_t **tp)
{
    uint64_t old = h->hdr->root, ref, cap = 2 * ((*tp)->n_live + 1);
    int rc;
    if (cap < SHMS_DICT_MINCAP)
        cap = SHMS_DICT_MINCAP;
    if ((rc = shms_dict_build_table(h, *tp, cap, &ref)))
        return rc;
    shms_dict_publish_root(h, ref);
    shms_free(h, old);
    *tp = shms_ptr(h, ref);
    return 0;
}
