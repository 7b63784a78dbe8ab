/* Recovery and checking of the list root kind (layout: list_int.h).
 *
 * shms_list_mark validates everything recovery will trust -- the record's
 * magic, the ref array's header against its block size, and each of the n
 * live refs a real block whose length fits it -- and marks the record, the
 * array and the items (so anything a killed writer had made but not
 * committed, or unlinked but not freed, is reclaimed).  Loops are bounded by
 * the validated n.  shms_list_repair rewrites the derived length word;
 * shms_list_check_root verifies it, read-only.
 */
#include "list_int.h"
#include "mark_int.h"
#include <stdio.h>

int shms_list_mark(shms_markctx_t *c, uint64_t root)
{
    shms_lrec_t *r;
    shms_larr_t *a;
    shms_litem_t *b;
    uint64_t i, n, ref;
    if (shms_mark(c, root, sizeof *r))
        return -1;
    r = shms_mark_ptr(c, root);
    if (r->magic != SHMS_LIST_MAGIC) {
        shms_mark_fail(c, "list record has a bad magic %#llx", (unsigned long long)r->magic);
        return -1;
    }
    if (shms_mark(c, r->arr, sizeof *a)) {
        snprintf(c->msg, c->cap, "list record: its ref array %#llx is not a block",
                 (unsigned long long)r->arr);
        return -1;
    }
    a = shms_mark_ptr(c, r->arr);
    if (!shms_larr_ok(a, shms_mark_payload(c, r->arr))) {
        shms_mark_fail(c, "list ref array header is invalid (cap %llu, head %llu, length %llu)",
                       (unsigned long long)a->cap, (unsigned long long)shms_hn_head(a->hn),
                       (unsigned long long)shms_hn_n(a->hn));
        return -1;
    }
    n = shms_hn_n(a->hn);
    for (i = 0; i < n; i++) {
        ref = shms_lrefs(a)[shms_lslot(a, i)];
        if (shms_mark(c, ref, sizeof(shms_litem_t))) {
            snprintf(c->msg, c->cap, "list item %llu of %llu: ref %#llx is not an item block "
                     "(or is another item's)", (unsigned long long)i, (unsigned long long)n,
                     (unsigned long long)ref);
            return -1;
        }
        b = shms_mark_ptr(c, ref);
        if (b->vlen > shms_mark_payload(c, ref) - sizeof *b ||
            b->tag != shms_litem_tag(ref, b->vlen)) {
            shms_mark_fail(c, "list item %llu of %llu: length %llu past its block, or a "
                           "bad tag", (unsigned long long)i, (unsigned long long)n,
                           (unsigned long long)b->vlen);
            return -1;
        }
    }
    return 0;
}

int shms_list_repair(shms_heap_t *h, uint64_t root)
{
    shms_lrec_t *r = shms_ptr(h, root);
    shms_larr_t *a = shms_ptr(h, r->arr);
    shms_store64(&r->lenw, shms_list_lenw(shms_hn_n(a->hn)));
    return 0;
}

int shms_list_check_root(shms_heap_t *h, uint64_t root, char *msg, size_t cap)
{
    shms_lrec_t *r = shms_ptr(h, root);
    shms_larr_t *a = shms_ptr(h, r->arr);
    uint64_t n = shms_hn_n(a->hn);
    if (r->lenw != shms_list_lenw(n)) {
        snprintf(msg, cap, "list length word %#llx does not say the length %llu",
                 (unsigned long long)r->lenw, (unsigned long long)n);
        return 1;
    }
    return 0;
}

uint64_t shms_list_count(shms_heap_t *h, uint64_t root)
{
    shms_lrec_t *r = shms_used_ptr(h, root, sizeof(shms_lrec_t), NULL);
    shms_larr_t *a;
    uint64_t payload;
    if (!r || r->magic != SHMS_LIST_MAGIC)
        return 0;
    a = shms_used_ptr(h, r->arr, sizeof *a, &payload);
    return a && shms_larr_ok(a, payload) ? shms_hn_n(a->hn) : 0;
}
