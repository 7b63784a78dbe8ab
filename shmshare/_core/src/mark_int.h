/* Internals of marking (mark.c), shared with recover.c and check.c. */
#ifndef SHMS_MARK_INT_H
#define SHMS_MARK_INT_H
#include "heap_int.h"

struct shms_markctx {
    shms_heap_t *h;
    uint64_t *starts[SHMS_MAX_EXT];     /* 1 bit per 16 bytes */
    uint64_t *marks[SHMS_MAX_EXT];
    char *msg;
    size_t cap;
    int failed;
};

/* The operations of each root kind (mark.c). */
extern const shms_kind_ops_t shms_kinds[SHMS_NKINDS];

/* One bit per 16 bytes of an extent: block starts, marks. */
static inline int shms_mark_bit(const uint64_t *m, uint64_t off)
{
    return (int)((m[off >> 10] >> ((off >> 4) & 63)) & 1);
}
static inline void shms_mark_setbit(uint64_t *m, uint64_t off)
{
    m[off >> 10] |= 1ULL << ((off >> 4) & 63);
}

/* Bitmaps for every attached extent; ENOMEM (nothing to free) or 0. */
int  shms_mark_init(shms_markctx_t *c, shms_heap_t *h, char *msg, size_t cap);
void shms_mark_free(shms_markctx_t *c);
/* Step 2 of recovery: record every extent's block starts; -1 on a bad size. */
int  shms_mark_walk(shms_markctx_t *c);
/* Step 3: the root kind marks what it reaches; -1 with the reason. */
int  shms_mark_root(shms_markctx_t *c);

#endif
