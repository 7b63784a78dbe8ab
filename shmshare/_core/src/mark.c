/* Reachability marking, shared by recovery (recover.c) and the check
 * (check.c): walk every extent by block sizes recording block starts (W1,
 * heap.c), then let the root kind mark every block it reaches.  Every ref
 * followed is checked first, so a damaged heap makes marking fail with a
 * reason, never read outside the extents.
 */
#include "mark_int.h"
#include "list_int.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const shms_kind_ops_t shms_kinds[SHMS_NKINDS] = {
    [SHMS_KIND_DICT] = {shms_dict_mark, shms_dict_repair, shms_dict_check_root,
                        shms_dict_count},
    [SHMS_KIND_LIST] = {shms_list_mark, shms_list_repair, shms_list_check_root,
                        shms_list_count},
};

void shms_mark_fail(shms_markctx_t *c, const char *fmt, ...)
{
    va_list ap;
    if (c->failed++ || !c->cap)
        return;
    va_start(ap, fmt);
    vsnprintf(c->msg, c->cap, fmt, ap);
    va_end(ap);
}

void shms_mark_free(shms_markctx_t *c)
{
    unsigned e;
    for (e = 0; e < SHMS_MAX_EXT; e++) {
        free(c->starts[e]);
        free(c->marks[e]);
    }
}

int shms_mark_init(shms_markctx_t *c, shms_heap_t *h, char *msg, size_t cap)
{
    unsigned e;
    memset(c, 0, sizeof *c);
    c->h = h;
    c->msg = msg;
    c->cap = cap;
    for (e = 0; e < SHMS_MAX_EXT; e++) {
        size_t words = (size_t)(h->end[e] >> 10) + 1;
        if (!h->base[e])
            continue;
        c->starts[e] = calloc(words, 8);
        c->marks[e] = calloc(words, 8);
        if (!c->starts[e] || !c->marks[e]) {
            shms_mark_free(c);
            return ENOMEM;
        }
    }
    return 0;
}

/* Step 2: walk extent e by sizes, recording block starts. */
static int walk(shms_markctx_t *c, unsigned e)
{
    shms_heap_t *h = c->h;
    uint64_t pos = h->first[e], s;
    while (pos < h->end[e]) {
        s = shms_blk_at(h, e, pos)->size & SHMS_SIZE_MASK;
        if (s < SHMS_MIN_BLOCK || s > h->end[e] - pos) {
            shms_mark_fail(c, "extent %u: block at offset %llu has bad size %llu", e,
                           (unsigned long long)pos, (unsigned long long)s);
            return -1;
        }
        shms_mark_setbit(c->starts[e], pos);
        pos += s;
    }
    return 0;
}

int shms_mark_walk(shms_markctx_t *c)
{
    unsigned e;
    for (e = 0; e < SHMS_MAX_EXT; e++)
        if (c->h->base[e] && walk(c, e))
            return -1;
    return 0;
}

int shms_mark(shms_markctx_t *c, uint64_t ref, uint64_t min)
{
    shms_heap_t *h = c->h;
    unsigned e = shms_ref_ext(ref);
    uint64_t off = shms_ref_off(ref) - SHMS_BLK_HDR;
    if (e >= SHMS_MAX_EXT || !c->starts[e] || shms_ref_off(ref) < h->first[e] + SHMS_BLK_HDR ||
        off >= h->end[e] || (off & 15) || !shms_mark_bit(c->starts[e], off)) {
        shms_mark_fail(c, "ref %#llx is not a block", (unsigned long long)ref);
        return -1;
    }
    if ((shms_blk_at(h, e, off)->size & SHMS_SIZE_MASK) - SHMS_BLK_HDR < min) {
        shms_mark_fail(c, "block %#llx smaller than %llu", (unsigned long long)ref,
                       (unsigned long long)min);
        return -1;
    }
    if (shms_mark_bit(c->marks[e], off)) {
        shms_mark_fail(c, "block %#llx referenced twice", (unsigned long long)ref);
        return -1;
    }
    shms_mark_setbit(c->marks[e], off);
    return 0;
}

void *shms_mark_ptr(shms_markctx_t *c, uint64_t ref)
{
    return shms_ptr(c->h, ref);
}

uint64_t shms_mark_payload(shms_markctx_t *c, uint64_t ref)
{
    return shms_payload_size(c->h, ref);
}

int shms_mark_root(shms_markctx_t *c)
{
    shms_heap_hdr_t *H = c->h->hdr;
    uint64_t kind = H->root_kind, root = H->root;
    if (kind >= SHMS_NKINDS || (kind == SHMS_KIND_NONE && root)) {
        shms_mark_fail(c, "bad root kind %llu", (unsigned long long)kind);
        return -1;
    }
    if (!root || !shms_kinds[kind].mark)
        return 0;
    return shms_kinds[kind].mark(c, root);
}
