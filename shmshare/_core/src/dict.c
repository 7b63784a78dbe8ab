/* Insertion-ordered hash dict on the heap, modelled on CPython's compact
 * dict (this file: the operations; the table and its index: dict_table.c;
 * the hot path's calls: dict_hot.c).  The heap root is a ref to ONE table
 * block (dict_int.h): entries in insertion order, then an open-addressing
 * index of entry numbers.
 *
 * DURABLE (what recovery trusts): heap root, table cap/isize, n_used, and
 * for i < n_used entries[i] (hash, blob ref, seq) and the blobs they reach.
 * DERIVED (rebuilt by shms_dict_repair): index, n_live, n_filled, next_seq.
 *
 * COMMIT POINTS -- each an aligned 8-byte release store; a process killed
 * before it leaves the dict as it was, after it as if the op completed
 * (recovery frees whatever became unreachable):
 *   insert     blob written; entries[n_used] written; n_used := n_used+1
 *   overwrite  new blob (stored key bytes + new value) written;
 *              entries[i].blob := new  (position and seq kept), old freed
 *   delete     entries[i].blob := 0 (tombstone), blob freed, index slot
 *              := DUMMY
 *   popitem    as delete, then n_used := i (trailing tombstones trimmed)
 *   resize     new table filled (live entries, seqs kept), heap root :=
 *              new table, old table freed
 *   clear      new empty table (next_seq kept), heap root := it, then the
 *              old blobs and table freed
 *   create     root_kind := DICT, then root := first table
 * Every mutation also bumps hdr->modcount (derived, informational).
 *
 * READ CACHE.  Each process may keep the value bytes it read for a key and
 * use them again without the lock, while the key's version stripe (a
 * uint64 in the block t->vers, chosen by the top bits of the key's hash)
 * is unchanged.  Every change of a key bumps its stripe BEFORE the commit
 * store (clear bumps them all), so a reader that sees the old stripe value
 * reads before the change (it linearises there), and one that reads the
 * value under the lock reads the stripe with it (get returns both).  A
 * writer killed between bump and commit only costs readers a miss.  Two
 * keys share a stripe with probability 1/SHMS_DICT_NVER: a write to one then
 * costs the other a miss, never a stale read.  The stripes block is made
 * with the first table and never freed while the dict exists.
 *
 * Keys: only the first cmplen bytes are hashed and compared; the rest is a
 * display suffix stored with the key.  Overwriting keeps the stored key.
 */
#include "dict_int.h"
#include <errno.h>
#include <string.h>

/* ------------------------------------------------------------ helpers */

/* A blob of key and the value of a: its head, val, tail (see shms_dop_t). */
static int make_blob(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                     const shms_dop_t *a, uint64_t *ref)
{
    shms_dblob_t *b;
    char *v;
    uint64_t vlen = a->vhlen + a->vlen + a->vtlen;
    int rc;
    if (a->vlen > (1ULL << 46) || vlen > (1ULL << 46))
        return ENOMEM;
    if ((rc = shms_alloc(h, sizeof *b + klen + vlen, ref)))
        return rc;
    b = shms_ptr(h, *ref);
    b->klen = (uint32_t)klen;
    b->cmplen = (uint32_t)cmplen;
    b->vlen = vlen;
    memcpy(shms_dblob_key(b), key, klen);
    v = shms_dblob_val(b);
    if (a->vhlen)
        memcpy(v, a->vhead, a->vhlen);
    if (a->vlen)
        memcpy(v + a->vhlen, a->val, a->vlen);
    if (a->vtlen)
        memcpy(v + a->vhlen + a->vlen, a->vtail, a->vtlen);
    return 0;
}

int shms_dict_check_key(uint64_t klen, uint64_t cmplen)
{
    return klen >= 0xFFFFFFFFULL || cmplen > klen ? EINVAL : 0;
}

static uint64_t key_hash(shms_heap_t *h, const char *key, uint64_t cmplen)
{
    return shms_hash64(key, cmplen, h->hdr->seed);
}

/* Tombstone entry i (indexed at slot) and free its blob. */
static void delete_entry(shms_heap_t *h, shms_dtab_t *t, uint64_t i, uint64_t slot)
{
    shms_dent_t *e = &shms_dents(t)[i];
    uint64_t blob = e->blob;
    shms_dict_bump(h, t, e->hash, 0);
    shms_store64(&e->blob, 0);                            /* commit */
    if (slot != UINT64_MAX)
        shms_dindex(t)[slot] = SHMS_IX_DUMMY;
    t->n_live--;
    shms_free(h, blob);
    shms_bump_modcount(h);
}

/* Copy the value of blob b into out if it fits; res[0] = its length. */
static int copy_value(shms_dblob_t *b, char *out, uint64_t cap, uint64_t *res)
{
    res[0] = b->vlen;
    if (b->vlen > cap)
        return SHMS_ETOOSMALL;
    if (b->vlen)
        memcpy(out, shms_dblob_val(b), b->vlen);
    return 0;
}

/* ------------------------------------------------------------ get/set */

/* Entry of key a->key in t (>= 0), or minus SHMS_ENOTFOUND / SHMS_EDAMAGED. */
static int64_t find(shms_heap_t *h, shms_dtab_t *t, const shms_dop_t *a, uint64_t *slot)
{
    int64_t i = shms_dict_lookup(h, t, key_hash(h, a->key, a->cmplen), a->key, a->cmplen, slot);
    if (i == SHMS_LK_DAMAGED)
        return -SHMS_EDAMAGED;
    return i < 0 ? -SHMS_ENOTFOUND : i;
}

/* See dict_int.h. */
int shms_dict_entry(shms_heap_t *h, const char *key, uint64_t cmplen, shms_dtab_t **tp,
                    int64_t *ip)
{
    uint64_t slot;
    int rc = shms_dict_table(h, 0, tp);
    if (rc || !*tp)
        return rc ? rc : SHMS_ENOTFOUND;
    *ip = shms_dict_lookup(h, *tp, key_hash(h, key, cmplen), key, cmplen, &slot);
    if (*ip == SHMS_LK_DAMAGED)
        return SHMS_EDAMAGED;
    return *ip < 0 ? SHMS_ENOTFOUND : 0;
}

static int get_body(shms_heap_t *h, void *arg)
{
    shms_dop_t *a = arg;
    shms_dtab_t *t;
    uint64_t *v;
    uint64_t slot;
    int64_t i;
    int rc = shms_dict_table(h, 0, &t);
    /* res[1]: the modcount this read is consistent with, so that a caller
     * may cache the value until the counter moves (see _core/heap.py). */
    a->res[1] = shms_load64(&h->hdr->modcount);
    a->res[2] = UINT64_MAX;                   /* the key's stripe (none yet) */
    if (rc || !t)
        return rc ? rc : SHMS_ENOTFOUND;
    if ((i = find(h, t, a, &slot)) < 0)
        return (int)-i;
    if ((v = shms_dict_stripes(h, t))) {
        a->res[2] = shms_dict_stripe(shms_dents(t)[i].hash);
        a->res[3] = shms_load64(&v[a->res[2]]);
    }
    return copy_value(shms_ptr(h, shms_dents(t)[i].blob), a->out, a->cap, a->res);
}

int shms_dict_get(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns)
{
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = cmplen, .out = out, .cap = cap,
                    .res = res};
    return shms_dict_check_key(klen, cmplen) ?: shms_run_op(h, held, timeout_ns, get_body, &a);
}

/* Entry i's blob was validated by the lookup that found it. */
static int overwrite(shms_heap_t *h, shms_dtab_t *t, uint64_t i, const shms_dop_t *a)
{
    shms_dent_t *e = &shms_dents(t)[i];
    shms_dblob_t *old = shms_ptr(h, e->blob);
    uint64_t oldref = e->blob, ref;
    int rc = make_blob(h, shms_dblob_key(old), old->klen, old->cmplen, a, &ref);
    if (rc)
        return rc;
    shms_dict_bump(h, t, e->hash, 0);
    shms_store64(&e->blob, ref);                          /* commit */
    shms_free(h, oldref);
    shms_bump_modcount(h);
    return 0;
}

static int append(shms_heap_t *h, shms_dtab_t *t, uint64_t hash, const shms_dop_t *a)
{
    uint64_t blob, slot, n;
    shms_dent_t *e;
    int rc;
    if (t->n_used >= t->cap || t->n_filled >= t->cap) {
        if ((rc = shms_dict_resize(h, &t)))
            return rc;
    }
    if ((rc = make_blob(h, a->key, a->klen, a->cmplen, a, &blob)))
        return rc;
    /* The key is absent and a resized table has free slots: anything else
     * means damage (the new blob is then reclaimed by the repair). */
    if (shms_dict_lookup(h, t, hash, a->key, a->cmplen, &slot) != SHMS_LK_ABSENT ||
        slot == UINT64_MAX)
        return SHMS_EDAMAGED;
    n = t->n_used;
    e = &shms_dents(t)[n];
    e->hash = hash;
    e->blob = blob;
    e->seq = t->next_seq;
    shms_dict_bump(h, t, hash, 0);
    shms_store64(&t->n_used, n + 1);                      /* commit */
    t->next_seq++;
    t->n_live++;
    if (shms_dindex(t)[slot] == SHMS_IX_EMPTY)
        t->n_filled++;
    shms_dindex(t)[slot] = (uint32_t)n;
    shms_bump_modcount(h);
    return 0;
}

int shms_dict_set_body(shms_heap_t *h, void *arg)
{
    shms_dop_t *a = arg;
    shms_dtab_t *t;
    uint64_t hash = key_hash(h, a->key, a->cmplen), slot;
    int64_t i;
    int rc = shms_dict_table(h, 1, &t);
    if (rc)
        return rc;
    i = shms_dict_lookup(h, t, hash, a->key, a->cmplen, &slot);
    if (i == SHMS_LK_DAMAGED)
        return SHMS_EDAMAGED;
    a->res[0] = i < 0;
    if (i >= 0)
        return a->flag ? 0 : overwrite(h, t, (uint64_t)i, a);
    return append(h, t, hash, a);
}

/* res[0] = 1 if a new key was inserted.  only_if_absent: setdefault. */
int shms_dict_set(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  const char *val, uint64_t vlen, int only_if_absent, uint64_t *res,
                  int held, int64_t timeout_ns)
{
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = cmplen, .val = val, .vlen = vlen,
                    .res = res, .flag = only_if_absent};
    return shms_dict_check_key(klen, cmplen) ?:
           shms_run_op(h, held, timeout_ns, shms_dict_set_body, &a);
}

/* ------------------------------------------------------- pop, popitem */

/* The entry of a's key in the table, for a deletion: its index, or -rc
 * (SHMS_ENOTFOUND when there is no table or no such key). */
static int64_t find_entry(shms_heap_t *h, shms_dop_t *a, shms_dtab_t **t, uint64_t *slot)
{
    int rc = shms_dict_table(h, 0, t);
    if (rc || !*t)
        return -(int64_t)(rc ? rc : SHMS_ENOTFOUND);
    return find(h, *t, a, slot);
}

static int pop_body(shms_heap_t *h, void *arg)
{
    shms_dop_t *a = arg;
    shms_dtab_t *t;
    uint64_t slot;
    int rc;
    int64_t i = find_entry(h, a, &t, &slot);
    if (i < 0)
        return (int)-i;
    a->res[0] = 0;
    if (a->out && (rc = copy_value(shms_ptr(h, shms_dents(t)[i].blob), a->out, a->cap, a->res)))
        return rc;                              /* too small: nothing deleted */
    delete_entry(h, t, (uint64_t)i, slot);
    return 0;
}

/* out == NULL: just delete.  Else the value is copied out first. */
int shms_dict_pop(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns)
{
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = cmplen, .out = out, .cap = cap,
                    .res = res};
    return shms_dict_check_key(klen, cmplen) ?: shms_run_op(h, held, timeout_ns, pop_body, &a);
}

/* Under the heap lock (inside an op body): key's value handed to cb where it
 * lies, then the entry deleted -- one lookup for both.  cb's nonzero result
 * is returned and nothing is deleted; a missing key is SHMS_ENOTFOUND. */
int shms_dict_take(shms_heap_t *h, const char *key, uint64_t klen, shms_take_cb cb, void *ctx)
{
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = klen};
    shms_dtab_t *t;
    shms_dblob_t *b;
    uint64_t slot;
    int rc;
    int64_t i = find_entry(h, &a, &t, &slot);
    if (i < 0)
        return (int)-i;
    b = shms_ptr(h, shms_dents(t)[i].blob);
    if ((rc = cb(ctx, shms_dblob_val(b), b->vlen)))
        return rc;
    delete_entry(h, t, (uint64_t)i, slot);
    return 0;
}

static int popitem_body(shms_heap_t *h, void *arg)
{
    shms_dop_t *a = arg;
    shms_dtab_t *t;
    shms_dent_t *en;
    shms_dblob_t *b;
    uint64_t i, *res = a->res;
    int rc = shms_dict_table(h, 0, &t);
    if (rc || !t)
        return rc ? rc : SHMS_ENOTFOUND;
    en = shms_dents(t);
    for (i = t->n_used; i > 0 && !en[i - 1].blob; i--)
        ;
    if (i < t->n_used)
        shms_store64(&t->n_used, i);            /* trim trailing tombstones */
    if (i-- == 0)
        return SHMS_ENOTFOUND;
    if (!(b = shms_dblob_at(h, en[i].blob)))
        return SHMS_EDAMAGED;
    res[0] = b->klen;
    res[1] = b->vlen;
    res[2] = b->klen + b->vlen;
    if (res[2] > a->cap)
        return SHMS_ETOOSMALL;
    memcpy(a->out, shms_dblob_key(b), b->klen + b->vlen);
    delete_entry(h, t, i, shms_dict_slot_of(t, en[i].hash, (uint32_t)i));
    shms_store64(&t->n_used, i);
    return 0;
}

/* Remove the last live entry; out = key bytes then value bytes,
 * res = {klen, vlen, needed}. */
int shms_dict_popitem(shms_heap_t *h, char *out, uint64_t cap, uint64_t *res,
                      int held, int64_t timeout_ns)
{
    shms_dop_t a = {.out = out, .cap = cap, .res = res};
    return shms_run_op(h, held, timeout_ns, popitem_body, &a);
}

/* ------------------------------------------------------- clear */

static int clear_body(shms_heap_t *h, void *arg)
{
    shms_dtab_t *t, *nt;
    shms_dent_t *en;
    uint64_t old = h->hdr->root, ref, i;
    int rc = shms_dict_table(h, 0, &t);
    (void)arg;
    if (rc || !t)
        return rc;
    en = shms_dents(t);
    for (i = 0; i < t->n_used; i++)             /* nothing is changed on damage */
        if (en[i].blob && !shms_dblob_at(h, en[i].blob))
            return SHMS_EDAMAGED;
    if ((rc = shms_dict_build_table(h, NULL, SHMS_DICT_MINCAP, &ref)))
        return rc;
    nt = shms_ptr(h, ref);
    nt->next_seq = t->next_seq;
    nt->vers = t->vers;
    shms_dict_bump(h, t, 0, 1);
    shms_dict_publish_root(h, ref);                                 /* commit */
    for (i = 0; i < t->n_used; i++)
        if (en[i].blob)
            shms_free(h, en[i].blob);
    shms_free(h, old);
    shms_bump_modcount(h);
    return 0;
}

int shms_dict_clear(shms_heap_t *h, int held, int64_t timeout_ns)
{
    return shms_run_op(h, held, timeout_ns, clear_body, NULL);
}
