/* Internal layout of the list root kind (list.c, list_fix.c).
 *
 * The heap root is a LIST RECORD, allocated once with the list and never
 * moved or freed, so its address is fixed while the heap is attached:
 *   magic  SHMS_LIST_MAGIC
 *   lenw   derived: the length n and its complement in one word
 *          (shms_list_lenw), stored after every commit; read without the
 *          lock (Python maps it) and rewritten by the repair;
 *   arr    durable: ref of the REF ARRAY (the commit point of rebuilds).
 * The ref array is one block: {cap, hn} then uint64 refs[cap], a ring: item
 * i is the ITEM BLOCK refs[(head + i) % cap], head and n packed in hn
 * (head << 32 | n; the commit point of every in-place change).  An item block
 * is {uint64 vlen, uint64 tag, then vlen bytes}.  Slots outside the live range hold
 * whatever was there: nothing reads them.
 */
#ifndef SHMS_LIST_INT_H
#define SHMS_LIST_INT_H

#include "heap_int.h"

#define SHMS_LIST_MAGIC 0x5453494c534d4853ULL   /* "SHMSLIST" */
#define SHMS_LIST_MAX   0xF0000000ULL           /* most items (and slots) */
#define SHMS_LIST_MINCAP 8ULL

typedef struct {
    uint64_t magic;
    uint64_t lenw;
    uint64_t arr;
    uint64_t pad;
} shms_lrec_t;

typedef struct {
    uint64_t cap;
    uint64_t hn;
} shms_larr_t;

typedef struct {
    uint64_t vlen;
    uint64_t tag;        /* shms_litem_tag(its own ref, vlen) */
} shms_litem_t;

/* An item block names its own ref: a damaged ref that lands on some other
 * used block (or inside one) is seen as damage, not read as an item. */
static inline uint64_t shms_litem_tag(uint64_t ref, uint64_t vlen)
{
    return ((ref ^ 0x4d4554494c534853ULL) * 0x9E3779B97F4A7C15ULL) ^ vlen;
}

static inline uint64_t shms_list_lenw(uint64_t n)
{
    return (n & 0xFFFFFFFFULL) | ((n ^ 0xFFFFFFFFULL) << 32);
}
static inline uint64_t shms_hn_head(uint64_t hn) { return hn >> 32; }
static inline uint64_t shms_hn_n(uint64_t hn) { return hn & 0xFFFFFFFFULL; }
static inline uint64_t shms_hn(uint64_t head, uint64_t n) { return (head << 32) | n; }
static inline uint64_t *shms_lrefs(shms_larr_t *a) { return (uint64_t *)(a + 1); }
/* The slot of item i (i < cap, head < cap). */
static inline uint64_t shms_lslot(const shms_larr_t *a, uint64_t i)
{
    uint64_t s = shms_hn_head(a->hn) + i;
    return s < a->cap ? s : s - a->cap;
}

/* A ref array header consistent with a block of `payload` bytes. */
static inline int shms_larr_ok(const shms_larr_t *a, uint64_t payload)
{
    uint64_t hn = a->hn;
    return a->cap >= 1 && a->cap <= SHMS_LIST_MAX &&
           sizeof *a + a->cap * 8 <= payload && shms_hn_head(hn) < a->cap &&
           shms_hn_n(hn) <= a->cap;
}

/* The arguments of one list operation (the body run by shms_run_op). */
typedef struct {
    int64_t i, j;                       /* index; start, stop */
    const char *vals;                   /* values, concatenated */
    const uint64_t *vlens;
    uint64_t nvals;
    const char *vhead, *vtail;          /* one value stored as vhead, vals, vtail */
    uint64_t vhlen, vtlen;              /* (a split item: dict_split.c) */
    const int64_t *plan;                /* rebuild: the new list */
    uint64_t m, expect;                 /* plan length; the length it was made for */
    char *out;
    uint64_t cap;
    uint64_t *res;
    const volatile uint64_t **lenp;
} lop_t;

/* list.c: the record and ref array, validated (made if the heap has none);
 * an item block, validated (NULL: damaged); a new item block; items
 * [start, stop) replaced by the values (in place at an end, else by a
 * rebuild); the list made anew from a plan (list_ops.c: shms_list_rebuild). */
int shms_list_of(shms_heap_t *h, shms_lrec_t **rp, shms_larr_t **ap);
shms_litem_t *shms_litem_at(shms_heap_t *h, uint64_t ref);
int shms_litem_make(shms_heap_t *h, const char *val, uint64_t vlen, uint64_t *ref);
/* Value t of o (at offset off of o->vals) as a new item block. */
int shms_litem_make_of(shms_heap_t *h, const lop_t *o, uint64_t t, uint64_t off, uint64_t *ref);
/* o's values (o NULL: none) in place of items [start, stop). */
int shms_list_splice_in(shms_heap_t *h, shms_lrec_t *r, shms_larr_t *a, uint64_t start,
                        uint64_t stop, const lop_t *o);
int shms_list_rebuild_body(shms_heap_t *h, void *arg);

/* list_fix.c */
int shms_list_mark(shms_markctx_t *c, uint64_t root);
int shms_list_repair(shms_heap_t *h, uint64_t root);
int shms_list_check_root(shms_heap_t *h, uint64_t root, char *msg, size_t cap);
uint64_t shms_list_count(shms_heap_t *h, uint64_t root);

#endif
