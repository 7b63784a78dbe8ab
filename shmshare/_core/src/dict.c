/* Insertion-ordered hash dict on the heap, modelled on CPython's compact
 * dict.  The heap root is a ref to ONE table block (dict_int.h): entries in
 * insertion order, then an open-addressing index of entry numbers.
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

/* ------------------------------------------------------------ index */

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
    uint64_t mask = t->isize - 1, i = hash & mask, perturb = hash, reuse = UINT64_MAX, n;
    for (n = 0; n < 4 * t->isize + 64; n++) {
        uint32_t v = ix[i];
        if (v == SHMS_IX_EMPTY) {
            *slot = reuse != UINT64_MAX ? reuse : i;
            return SHMS_LK_ABSENT;
        }
        if (v == SHMS_IX_DUMMY) {
            if (reuse == UINT64_MAX)
                reuse = i;
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
                *slot = i;
                return v;
            }
        }
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
    *slot = reuse;
    return SHMS_LK_ABSENT;
}

/* Slot of entry number e (which must be indexed). */
static uint64_t slot_of(shms_dtab_t *t, uint64_t hash, uint32_t e)
{
    uint32_t *ix = shms_dindex(t);
    uint64_t mask = t->isize - 1, i = hash & mask, perturb = hash, n;
    for (n = 0; n < 4 * t->isize + 64 && ix[i] != SHMS_IX_EMPTY; n++) {
        if (ix[i] == e)
            return i;
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
    return UINT64_MAX;
}

void shms_dict_index_insert(shms_dtab_t *t, uint64_t hash, uint32_t e)
{
    uint32_t *ix = shms_dindex(t);
    uint64_t mask = t->isize - 1, i = hash & mask, perturb = hash;
    while (ix[i] != SHMS_IX_EMPTY) {
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
    ix[i] = e;
}

/* The stripes of t, guarded (NULL: none, or a damaged ref, then flagged). */
static uint64_t *stripes(shms_heap_t *h, shms_dtab_t *t)
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
    uint64_t *v = stripes(h, t), i;
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
static int build_table(shms_heap_t *h, shms_dtab_t *old, uint64_t cap, uint64_t *ref)
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

static void publish_root(shms_heap_t *h, uint64_t ref)
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
    if ((rc = build_table(h, NULL, SHMS_DICT_MINCAP, &ref))) {
        shms_free(h, vers);
        return rc;
    }
    ((shms_dtab_t *)shms_ptr(h, ref))->vers = vers;
    shms_store64(&H->root_kind, SHMS_KIND_DICT);
    publish_root(h, ref);
    *out = shms_ptr(h, ref);
    return 0;
}

/* Replace the table by a compacted one with room to grow. */
static int resize(shms_heap_t *h, shms_dtab_t **tp)
{
    uint64_t old = h->hdr->root, ref, cap = 2 * ((*tp)->n_live + 1);
    int rc;
    if (cap < SHMS_DICT_MINCAP)
        cap = SHMS_DICT_MINCAP;
    if ((rc = build_table(h, *tp, cap, &ref)))
        return rc;
    publish_root(h, ref);
    shms_free(h, old);
    *tp = shms_ptr(h, ref);
    return 0;
}

/* ------------------------------------------------------------ helpers */

static int make_blob(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                     const char *val, uint64_t vlen, uint64_t *ref)
{
    shms_dblob_t *b;
    int rc;
    if (vlen > (1ULL << 46))
        return ENOMEM;
    if ((rc = shms_alloc(h, sizeof *b + klen + vlen, ref)))
        return rc;
    b = shms_ptr(h, *ref);
    b->klen = (uint32_t)klen;
    b->cmplen = (uint32_t)cmplen;
    b->vlen = vlen;
    memcpy(shms_dblob_key(b), key, klen);
    if (vlen)
        memcpy(shms_dblob_val(b), val, vlen);
    return 0;
}

static int check_key(uint64_t klen, uint64_t cmplen)
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
    if ((v = stripes(h, t))) {
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
    return check_key(klen, cmplen) ?: shms_run_op(h, held, timeout_ns, get_body, &a);
}

/* Entry i's blob was validated by the lookup that found it. */
static int overwrite(shms_heap_t *h, shms_dtab_t *t, uint64_t i, const char *val, uint64_t vlen)
{
    shms_dent_t *e = &shms_dents(t)[i];
    shms_dblob_t *old = shms_ptr(h, e->blob);
    uint64_t oldref = e->blob, ref;
    int rc = make_blob(h, shms_dblob_key(old), old->klen, old->cmplen, val, vlen, &ref);
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
        if ((rc = resize(h, &t)))
            return rc;
    }
    if ((rc = make_blob(h, a->key, a->klen, a->cmplen, a->val, a->vlen, &blob)))
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

static int set_body(shms_heap_t *h, void *arg)
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
        return a->flag ? 0 : overwrite(h, t, (uint64_t)i, a->val, a->vlen);
    return append(h, t, hash, a);
}

/* res[0] = 1 if a new key was inserted.  only_if_absent: setdefault. */
int shms_dict_set(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  const char *val, uint64_t vlen, int only_if_absent, uint64_t *res,
                  int held, int64_t timeout_ns)
{
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = cmplen, .val = val, .vlen = vlen,
                    .res = res, .flag = only_if_absent};
    return check_key(klen, cmplen) ?: shms_run_op(h, held, timeout_ns, set_body, &a);
}

/* ------------------------------------------------------- pop, popitem */

static int pop_body(shms_heap_t *h, void *arg)
{
    shms_dop_t *a = arg;
    shms_dtab_t *t;
    uint64_t slot;
    int64_t i;
    int rc = shms_dict_table(h, 0, &t);
    if (rc || !t)
        return rc ? rc : SHMS_ENOTFOUND;
    if ((i = find(h, t, a, &slot)) < 0)
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
    return check_key(klen, cmplen) ?: shms_run_op(h, held, timeout_ns, pop_body, &a);
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
    delete_entry(h, t, i, slot_of(t, en[i].hash, (uint32_t)i));
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

/* ------------------------------------------------------- len, clear */

uint64_t shms_dict_count(shms_heap_t *h, uint64_t root)
{
    shms_dtab_t *t = shms_dtab_at(h, root);
    return t ? t->n_live : 0;
}

static int len_body(shms_heap_t *h, void *arg)
{
    shms_dop_t *a = arg;
    shms_dtab_t *t;
    int rc = shms_dict_table(h, 0, &t);
    a->res[0] = t ? t->n_live : 0;
    return rc;
}

int shms_dict_len(shms_heap_t *h, uint64_t *res, int held, int64_t timeout_ns)
{
    shms_dop_t a = {.res = res};
    return shms_run_op(h, held, timeout_ns, len_body, &a);
}

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
    if ((rc = build_table(h, NULL, SHMS_DICT_MINCAP, &ref)))
        return rc;
    nt = shms_ptr(h, ref);
    nt->next_seq = t->next_seq;
    nt->vers = t->vers;
    shms_dict_bump(h, t, 0, 1);
    publish_root(h, ref);                                 /* commit */
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

/* ------------------------------------------------------- hot paths */

/* d[k] = v and d[k] as Python calls them most: every argument of a cffi
 * call costs about a hundred instructions, and these are the calls whose
 * cost a user sees.  cmplen = klen, the lock not held, one wait slice
 * (100 ms); on any result but 0 (and, for fetch, ENOTFOUND) the caller
 * takes the general path, which retries or raises. */
#define HOT_SLICE_NS 100000000LL

int shms_dict_store(shms_heap_t *h, const char *key, uint64_t klen, const char *val,
                    uint64_t vlen)
{
    uint64_t res[1];
    return shms_dict_set(h, key, klen, klen, val, vlen, 0, res, 0, HOT_SLICE_NS);
}

int shms_dict_fetch(shms_heap_t *h, const char *key, uint64_t klen, char *out, uint64_t cap,
                    uint64_t *res)
{
    return shms_dict_get(h, key, klen, klen, out, cap, res, 0, HOT_SLICE_NS);
}

/* ------------------------------------------------------- read cache */

static int versions_body(shms_heap_t *h, void *arg)
{
    shms_dtab_t *t;
    int rc = shms_dict_table(h, 0, &t);
    *(const volatile uint64_t **)arg = t ? stripes(h, t) : NULL;
    return rc;
}

/* The version stripes (SHMS_DICT_NVER of them; NULL while the dict has no
 * table), for lock-free cache checks.  The block stays where it is for the
 * life of the dict, in an extent this handle keeps attached. */
int shms_dict_versions(shms_heap_t *h, const volatile uint64_t **out, int held,
                       int64_t timeout_ns)
{
    *out = NULL;
    return shms_run_op(h, held, timeout_ns, versions_body, (void *)out);
}
