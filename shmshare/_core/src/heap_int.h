/* Internal layout of the shmshare heap, shared by heap.c, alloc.c,
 * extent*.c, recover.c, mark.c, check.c and dict*.c.  Nothing here is seen by Python except through
 * cdef/heap.h (opaque handle + functions + result codes).
 *
 * See heap.c for the invariants and commit points.
 */
#ifndef SHMS_HEAP_INT_H
#define SHMS_HEAP_INT_H

#include "shms.h"
#include <pthread.h>

#define SHMS_HEAP_MAGIC   "SHMSHEAP"
#define SHMS_EXT_MAGIC    "SHMSEXT"      /* 8 bytes with the NUL */
#define SHMS_EXT_BEGUN    "SHMSNEW"      /* first store into a new extent (extent.c) */
#define SHMS_HEAP_VERSION 3u       /* 3: the list root kind (list.c) */
#define SHMS_NBINS        368
#define SHMS_BITMAP_WORDS ((SHMS_NBINS + 63) / 64)
#define SHMS_OFF_BITS     48
#define SHMS_OFF_MASK     ((1ULL << SHMS_OFF_BITS) - 1)
#define SHMS_BLK_HDR      16ULL
#define SHMS_MIN_BLOCK    32ULL
#define SHMS_B_USED       1ULL
#define SHMS_SIZE_MASK    (~15ULL)
#define SHMS_EXT_HDR      64ULL
#define SHMS_SMALL_MAX    (4096ULL + SHMS_BLK_HDR)  /* rounded to a class */


/* Internal only (never returned to Python): an operation found a damaged
 * reference or length; the op wrapper repairs the heap and retries once. */
#define SHMS_EDAMAGED 1100

enum { SHMS_EXT_FREE = 0, SHMS_EXT_PENDING = 1, SHMS_EXT_READY = 2 };
enum { SHMS_KIND_NONE = 0, SHMS_KIND_DICT = 1, SHMS_KIND_LIST = 2, SHMS_NKINDS = 3 };

typedef struct {
    uint64_t key;        /* SysV key used to create it (derived: extent.c) */
    int64_t  shmid;      /* valid once READY */
    uint64_t size;       /* segment size */
    uint64_t state;      /* SHMS_EXT_* ; the commit point of growth */
    int64_t  pid;        /* creator pid (to recognise a PENDING segment) */
    uint64_t pad[3];
} shms_ext_ent_t;        /* 64 bytes */

typedef struct {
    char     magic[8];   /* "SHMSEXT\0" */
    uint64_t token;      /* == heap token: shmids get reused */
    uint64_t index;
    uint64_t size;
    uint64_t main;       /* shmid of the main segment + 1 (0: unknown), for gc */
    uint64_t pad[3];
} shms_ext_hdr_t;        /* 64 bytes == SHMS_EXT_HDR */

typedef struct {
    uint64_t size;       /* total size incl. header | SHMS_B_USED */
    uint64_t prev;       /* size of the previous block, 0 for the first */
} shms_blk_t;            /* a free block's payload holds next, prev refs */

typedef struct {
    /* identity: written once at creation */
    char     magic[8];
    uint32_t version, mutex_size;
    uint32_t header_size, flags;
    uint32_t mode, corrupt;          /* corrupt: sticky, set under the lock */
    uint64_t token, seed;
    uint64_t heap_size;
    uint64_t ident_sum;              /* shms_ident_sum: checksum of the fields above */
    uint64_t needs_recovery;         /* set if a recovery could not finish */
    _Alignas(64) unsigned char mutex[64];
    /* durable state */
    uint64_t generation;             /* bumped when the extent table changes */
    uint64_t n_extents;              /* slots [0, n_extents) may be in use */
    uint64_t modcount;               /* bumped on every mutation */
    uint64_t recoveries;             /* dead-owner recoveries performed */
    uint64_t root_kind, root;        /* the data structure (commit point) */
    uint64_t waiters;                /* processes in shms_heap_wait_change (approx.) */
    /* allocator state: derived, rebuilt by recovery */
    uint64_t bytes_total, bytes_used, bytes_free, n_used_blocks;
    uint64_t bitmap[SHMS_BITMAP_WORDS];
    uint64_t bins[SHMS_NBINS];
    shms_ext_ent_t ext[SHMS_MAX_EXT];
    char     why[192];               /* reason the heap was marked corrupt */
} shms_heap_hdr_t;

struct shms_heap {                   /* process-local, malloc'd */
    shms_heap_hdr_t *hdr;
    char    *base[SHMS_MAX_EXT];     /* NULL: not attached here */
    uint64_t first[SHMS_MAX_EXT];    /* offset of the first block */
    uint64_t end[SHMS_MAX_EXT];      /* offset just past the last block */
    uint64_t generation;
    uint64_t recoveries;             /* recoveries run by this handle */
    int64_t  main_shmid;             /* shmid of extent 0's segment, or -1 */
    uint64_t last_ask;               /* bytes of the last extent shmget tried */
    int      damaged;                /* set by the allocator: derived data is bad */
    int      no_grow;                /* the op under way may not create extents */
    char    *ahead_hint;             /* end of the block the op touched (ahead.c) */
    char    *ahead_lo, *ahead_hi;    /* the window mapped ahead (ahead.c) */
    char    *ahead_end, *ahead_cand;  /* its extent's end; where a walk may start */
    uint64_t inflight;               /* calls inside: fork generation << 32 | count */
    int      closing;                /* set by shms_heap_close: every call refuses */
};

/* ---- calls inside a handle (CLOSING in extent.c) ----
 * Every call into the core releases the GIL, so another thread may close the
 * handle -- and the caller unmap the memory -- while a call is inside, waiting
 * for the lock or a change.  A call that touches the heap enters first and
 * leaves when done; close sets `closing`, then waits until nobody is inside.
 * Both sides store then load, sequentially consistent (Dekker): either the
 * call sees `closing` and touches nothing, or close sees the call inside.
 * The count is of this process's calls: a forked child copies the parent's
 * count, of threads it does not have, so a count is kept with the fork
 * generation it was made in (heap.c) and one of an earlier generation reads
 * as nobody inside. */

static inline uint32_t shms_inside(shms_heap_t *h)
{
    uint64_t s = __atomic_load_n(&h->inflight, __ATOMIC_SEQ_CST);
    return (uint32_t)(s >> 32) == __atomic_load_n(&shms_fork_generation, __ATOMIC_RELAXED)
               ? (uint32_t)s : 0;
}

static inline void shms_leave(shms_heap_t *h)
{
    __atomic_sub_fetch(&h->inflight, 1, __ATOMIC_SEQ_CST);  /* count >= 1: no borrow */
}

static inline int shms_enter(shms_heap_t *h)
{
    uint64_t s = __atomic_load_n(&h->inflight, __ATOMIC_SEQ_CST), n;
    do {
        uint32_t gen = __atomic_load_n(&shms_fork_generation, __ATOMIC_RELAXED);
        n = (uint64_t)gen << 32 | ((uint32_t)(s >> 32) == gen ? (uint32_t)s + 1 : 1);
    } while (!__atomic_compare_exchange_n(&h->inflight, &s, n, 0, __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST));
    if (__atomic_load_n(&h->closing, __ATOMIC_SEQ_CST)) {
        shms_leave(h);
        return SHMS_ECLOSED;
    }
    return 0;
}

/* ---- refs ---- */
static inline uint64_t shms_mkref(unsigned e, uint64_t off)
{
    return ((uint64_t)e << SHMS_OFF_BITS) | off;
}
static inline unsigned shms_ref_ext(uint64_t r) { return (unsigned)(r >> SHMS_OFF_BITS); }
static inline uint64_t shms_ref_off(uint64_t r) { return r & SHMS_OFF_MASK; }
/* Unchecked: only for refs the structure's invariants guarantee valid. */
static inline void *shms_ptr(shms_heap_t *h, uint64_t r)
{
    return h->base[shms_ref_ext(r)] + shms_ref_off(r);
}
static inline shms_blk_t *shms_blk_of(shms_heap_t *h, uint64_t r)
{
    return (shms_blk_t *)((char *)shms_ptr(h, r) - SHMS_BLK_HDR);
}
/* The block whose header is at offset off of extent e. */
static inline shms_blk_t *shms_blk_at(shms_heap_t *h, unsigned e, uint64_t off)
{
    return (shms_blk_t *)(h->base[e] + off);
}
/* GUARDED ACCESS.  Operations follow refs read from shared memory, which
 * a bug elsewhere, a stray write or a hostile process may have damaged.
 * Every ref an operation follows goes through these checks first, so a
 * damaged ref can make an operation fail (SHMS_EDAMAGED) but never read or
 * write outside the heap's extents.  (Recovery has stricter checks of its
 * own: recover.c.) */

/* [ref, ref+n) is inside attached extent e, past its first block header,
 * and ref is 16-byte aligned relative to the extent's first block. */
static inline int shms_ref_in(const shms_heap_t *h, uint64_t ref, uint64_t n)
{
    unsigned e = shms_ref_ext(ref);
    uint64_t off = shms_ref_off(ref);
    return e < SHMS_MAX_EXT && h->base[e] && off >= h->first[e] + SHMS_BLK_HDR &&
           off <= h->end[e] && n <= h->end[e] - off && !((off - h->first[e]) & 15);
}

/* The payload of ref when it is a USED block lying wholly inside its extent
 * with at least min payload bytes (its payload size in *payload); else NULL. */
static inline void *shms_used_ptr(const shms_heap_t *h, uint64_t ref, uint64_t min,
                                  uint64_t *payload)
{
    uint64_t s, off = shms_ref_off(ref);
    char *p;
    if (!shms_ref_in(h, ref, 0))
        return NULL;
    p = h->base[shms_ref_ext(ref)] + off;
    s = ((const shms_blk_t *)(const void *)(p - SHMS_BLK_HDR))->size;
    if (!(s & SHMS_B_USED))
        return NULL;
    s &= SHMS_SIZE_MASK;
    if (s < SHMS_BLK_HDR + min || s - SHMS_BLK_HDR > h->end[shms_ref_ext(ref)] - off)
        return NULL;
    if (payload)
        *payload = s - SHMS_BLK_HDR;
    return p;
}

static inline void shms_store64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline uint64_t shms_load64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
/* Every committed change bumps modcount (under the lock), and wakes the
 * processes sleeping in shms_heap_wait_change on its low 32 bits.  The store
 * and the load of `waiters` are sequentially consistent, paired with the
 * waiter's increment-then-compare, so a wake cannot be lost.  A waiter killed
 * while asleep leaves `waiters` one too high: later changes then pay one
 * needless FUTEX_WAKE each, which is harmless. */
void shms_wake_waiters(shms_heap_t *h);
static inline void shms_bump_modcount(shms_heap_t *h)
{
    __atomic_store_n(&h->hdr->modcount, h->hdr->modcount + 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&h->hdr->waiters, __ATOMIC_SEQ_CST))
        shms_wake_waiters(h);
}

/* ---- heap.c: allocator ---- */
int  shms_alloc(shms_heap_t *h, uint64_t n, uint64_t *ref_out);
void shms_free(shms_heap_t *h, uint64_t ref);
uint64_t shms_payload_size(shms_heap_t *h, uint64_t ref);
void shms_bins_reset(shms_heap_t *h);
void shms_bin_insert(shms_heap_t *h, unsigned e, uint64_t off);
unsigned shms_bin_of(uint64_t size);
void shms_ext_setup_local(shms_heap_t *h, unsigned e, char *base, uint64_t size);

/* ---- ahead.c ---- */
void shms_ahead(shms_heap_t *h);
static inline void shms_ahead_note(shms_heap_t *h, const char *end)
{
    __atomic_store_n(&h->ahead_hint, (char *)end, __ATOMIC_RELAXED);
}

/* ---- extent.c ---- */
/* Extent keys derive from the main segment's shmid (extent.c, the top). */
#define SHMS_KEY_TRIES 8
#define SHMS_IDX_MASK  0x7FFF
/* SHMS_IDX_MASK, or a narrower one set by tests (shms_test_idx_mask) to make
 * colliding key bits easy to produce. */
extern uint64_t shms_idx_mask;
static inline int shms_ext_key(int64_t main, unsigned slot, unsigned try)
{
    return (int)((((uint64_t)main & shms_idx_mask) << 9) | (slot << 3) | try);
}
/* The shmid of the segment at kernel index idx; -1: none; -2: unreadable. */
int64_t shms_index_holder(unsigned idx);
/* 1 if no segment but `except` holds a kernel index whose key bits
 * (index & shms_idx_mask) are `bits`: then no heap is creating a segment
 * under keys with those bits (extent.c, the top). */
int shms_key_bits_free(uint64_t bits, int64_t except);
/* extent_removal.c: remove a PENDING slot's segment if it is this heap's. */
void shms_ext_remove_pending(int64_t main, uint64_t token, const shms_ext_ent_t *E);
int  shms_ext_grow(shms_heap_t *h, uint64_t need);
int  shms_ext_sync(shms_heap_t *h);
int  shms_ext_resolve_pending(shms_heap_t *h);
int  shms_ext_attach_all(shms_heap_t *h);

/* ---- heap.c: the identity checksum (version .. heap_size, incl. the seed
 * every lookup hashes with); verified at open, by recovery and by check. */
uint64_t shms_ident_sum(const shms_heap_hdr_t *H);

/* ---- mark.c: reachability marking, used by recovery and check ---- */
typedef struct shms_markctx shms_markctx_t;
/* Mark the block whose payload is at ref; it must hold >= min bytes.
 * Returns 0, or -1 after recording why (bad ref, not a block, twice). */
int  shms_mark(shms_markctx_t *c, uint64_t ref, uint64_t min);
void shms_mark_fail(shms_markctx_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void *shms_mark_ptr(shms_markctx_t *c, uint64_t ref);
uint64_t shms_mark_payload(shms_markctx_t *c, uint64_t ref);

/* Per root kind: mark (validate + mark every block), repair (rebuild
 * derived data after the allocator was rebuilt), check (read-only). */
typedef struct {
    int (*mark)(shms_markctx_t *c, uint64_t root);
    int (*repair)(shms_heap_t *h, uint64_t root);
    int (*check)(shms_heap_t *h, uint64_t root, char *msg, size_t cap);
    uint64_t (*count)(shms_heap_t *h, uint64_t root);
} shms_kind_ops_t;

/* ---- dict.c ---- */
int shms_dict_mark(shms_markctx_t *c, uint64_t root);
int shms_dict_repair(shms_heap_t *h, uint64_t root);
int shms_dict_check_root(shms_heap_t *h, uint64_t root, char *msg, size_t cap);
uint64_t shms_dict_count(shms_heap_t *h, uint64_t root);

/* ---- recover.c: op prologue/epilogue ---- */
/* The heap lock taken by a caller already inside the handle (shms_enter). */
int  shms_heap_lock_entered(shms_heap_t *h, int64_t timeout_ns);
int  shms_op_begin(shms_heap_t *h, int held, int64_t timeout_ns);
void shms_op_end(shms_heap_t *h, int held);
/* After an op body returned *rc: if it met damage (SHMS_EDAMAGED, or the
 * allocator set h->damaged), rebuild the heap under the lock.  Returns 1
 * when the body should run again (attempt 0 only); otherwise sets *rc to
 * the final result (SHMS_ECORRUPT when the damage survives a rebuild). */
int  shms_op_damage(shms_heap_t *h, int *rc, int attempt);
int  shms_set_corrupt(shms_heap_t *h, const char *why);
/* The whole protocol of a locked operation: op_begin, body (again after a
 * repair, see shms_op_damage), op_end.  Returns the body's result. */
typedef int (*shms_op_body_t)(shms_heap_t *h, void *arg);
int  shms_run_op(shms_heap_t *h, int held, int64_t timeout_ns, shms_op_body_t body, void *arg);
int  shms_run_op_no_grow(shms_heap_t *h, int held, int64_t timeout_ns,
                         shms_op_body_t body, void *arg);


#endif
