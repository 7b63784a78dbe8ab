/* Internal layout of the heap dict (dict.c, dict_table.c, dict_fix.c, dict_scan.c). */
#ifndef SHMS_DICT_INT_H
#define SHMS_DICT_INT_H

#include "heap_int.h"

#define SHMS_IX_EMPTY 0xFFFFFFFFu
#define SHMS_IX_DUMMY 0xFFFFFFFEu
#define SHMS_DICT_MAXCAP 0xF0000000ULL    /* entry numbers fit the uint32 index */
#define SHMS_DICT_MINCAP 8ULL

/* One heap block: header, entries[cap], uint32 index[isize]. */
typedef struct {
    uint64_t cap;        /* durable: written before the table is published */
    uint64_t isize;      /* durable: power of two >= cap * 3/2 */
    uint64_t n_used;     /* durable: entries [0, n_used) exist (commit point) */
    uint64_t n_live;     /* derived: entries with a blob */
    uint64_t n_filled;   /* derived: index slots not EMPTY */
    uint64_t next_seq;   /* derived: > every seq in entries */
    uint64_t vers;       /* durable: ref of the version stripes (0: none), kept by
                          * resize and clear; see "READ CACHE" in dict.c */
    uint64_t pad[1];
} shms_dtab_t;

/* Version stripes: uint64_t[SHMS_DICT_NVER]; a key's stripe is given by the
 * top bits of its hash (the index uses the low ones). */
static inline uint64_t shms_dict_stripe(uint64_t hash)
{
    return hash >> (64 - SHMS_DICT_NVER_BITS);
}

typedef struct {
    uint64_t hash;       /* of the blob's first cmplen key bytes */
    uint64_t blob;       /* ref, 0 = tombstone (commit point of delete) */
    uint64_t seq;        /* strictly increasing along entries */
} shms_dent_t;

typedef struct {
    uint32_t klen, cmplen;
    uint64_t vlen;       /* then key bytes, then value bytes */
} shms_dblob_t;

static inline shms_dent_t *shms_dents(shms_dtab_t *t) { return (shms_dent_t *)(t + 1); }
static inline uint32_t *shms_dindex(shms_dtab_t *t)
{
    return (uint32_t *)(shms_dents(t) + t->cap);
}
static inline uint64_t shms_dtab_bytes(uint64_t cap, uint64_t isize)
{
    return sizeof(shms_dtab_t) + cap * sizeof(shms_dent_t) + isize * 4;
}
static inline char *shms_dblob_key(shms_dblob_t *b) { return (char *)(b + 1); }
static inline char *shms_dblob_val(shms_dblob_t *b) { return (char *)(b + 1) + b->klen; }

/* Table header consistent with a block of `payload` bytes. */
static inline int shms_dtab_ok(const shms_dtab_t *t, uint64_t payload)
{
    return t->cap >= 1 && t->cap <= SHMS_DICT_MAXCAP && t->isize >= 16 &&
           t->isize <= (1ULL << 34) && !(t->isize & (t->isize - 1)) &&
           t->isize > t->cap && shms_dtab_bytes(t->cap, t->isize) <= payload &&
           t->n_used <= t->cap;
}

/* Blob lengths fit a block of `payload` bytes. */
static inline int shms_dblob_ok(const shms_dblob_t *b, uint64_t payload)
{
    uint64_t room = payload - sizeof *b;
    return b->cmplen <= b->klen && b->klen <= room && b->vlen <= room - b->klen;
}

/* Guarded (heap_int.h): the table / blob at ref, or NULL if damaged. */
static inline shms_dtab_t *shms_dtab_at(const shms_heap_t *h, uint64_t ref)
{
    uint64_t n;
    shms_dtab_t *t = shms_used_ptr(h, ref, sizeof *t, &n);
    return t && shms_dtab_ok(t, n) ? t : NULL;
}

static inline shms_dblob_t *shms_dblob_at(const shms_heap_t *h, uint64_t ref)
{
    uint64_t n;
    shms_dblob_t *b = shms_used_ptr(h, ref, sizeof *b, &n);
    return b && shms_dblob_ok(b, n) ? b : NULL;
}

/* The arguments of one dict operation (the body run by shms_run_op). */
typedef struct {
    const char *key;
    uint64_t klen, cmplen;
    const char *val;
    uint64_t vlen;
    /* set: the value stored is vhead, then val, then vtail (a pickle's framing
     * around bytes written straight from the caller's object: dict_hot.c) */
    const char *vhead, *vtail;
    uint64_t vhlen, vtlen;
    char *out;            /* get, pop, popitem, scan: the caller's buffer */
    uint64_t cap;
    uint64_t *res;
    int flag;             /* set: only_if_absent; scan: reverse */
    int values;           /* scan: copy values too */
    int64_t after;        /* scan: start after (reverse: before) this seq */
} shms_dop_t;

/* dict.c */
/* EINVAL unless a key of klen bytes, cmplen of them compared, can be stored. */
int shms_dict_check_key(uint64_t klen, uint64_t cmplen);
/* The body of shms_dict_set (a: shms_dop_t; res[0] = 1 if a key was inserted). */
int shms_dict_set_body(shms_heap_t *h, void *arg);
/* Entry number of key, or SHMS_LK_ABSENT (slot: where to insert, or
 * UINT64_MAX when the index has no free slot), or SHMS_LK_DAMAGED. */
#define SHMS_LK_ABSENT  (-1)
#define SHMS_LK_DAMAGED (-3)
int64_t shms_dict_lookup(shms_heap_t *h, shms_dtab_t *t, uint64_t hash, const char *key,
                         uint64_t cmplen, uint64_t *slot);
/* The dict's table (NULL if none and !create), or SHMS_EWRONGKIND /
 * SHMS_EDAMAGED / an allocation error. */
int shms_dict_table(shms_heap_t *h, int create, shms_dtab_t **out);
void shms_dict_index_insert(shms_dtab_t *t, uint64_t hash, uint32_t i);
/* Bump the version stripe of hash (all stripes: all_keys), before a commit. */
void shms_dict_bump(shms_heap_t *h, shms_dtab_t *t, uint64_t hash, int all_keys);
/* key's entry (a read: no table is made): its table in *tp, its number in *ip;
 * or SHMS_ENOTFOUND (no table, no such key), SHMS_EDAMAGED, the table's error. */
int shms_dict_entry(shms_heap_t *h, const char *key, uint64_t cmplen, shms_dtab_t **tp,
                    int64_t *ip);
/* dict_table.c: the index slot holding entry e of hash (UINT64_MAX: none);
 * the version stripes of t (NULL: none, or damaged and flagged); a new
 * table of cap entries holding old's live ones (old may be NULL); make ref
 * the root (the commit of create, resize, clear); replace *tp by a
 * compacted table with room to grow. */
uint64_t shms_dict_slot_of(shms_dtab_t *t, uint64_t hash, uint32_t e);
uint64_t *shms_dict_stripes(shms_heap_t *h, shms_dtab_t *t);
int shms_dict_build_table(shms_heap_t *h, shms_dtab_t *old, uint64_t cap, uint64_t *ref);
void shms_dict_publish_root(shms_heap_t *h, uint64_t ref);
int shms_dict_resize(shms_heap_t *h, shms_dtab_t **tp);

#endif
