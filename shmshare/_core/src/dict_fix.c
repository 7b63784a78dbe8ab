/* Recovery and checking for the heap dict (see dict.c for the invariants).
 *
 * shms_dict_mark validates everything recovery will trust -- the table
 * header against its block size, n_used <= cap, seqs strictly increasing,
 * every blob ref a real block whose lengths fit it -- and marks the table
 * and the blobs.  Loops are bounded by the validated n_used.
 * shms_dict_repair then rebuilds the derived data: index, n_live,
 * n_filled, next_seq.  shms_dict_check_root verifies all of that, read-only.
 */
#include "dict_int.h"
#include <stdio.h>
#include <string.h>

int shms_dict_mark(shms_markctx_t *c, uint64_t root)
{
    shms_dtab_t *t;
    shms_dent_t *en;
    uint64_t i;
    if (shms_mark(c, root, sizeof *t))
        return -1;
    t = shms_mark_ptr(c, root);
    if (!shms_dtab_ok(t, shms_mark_payload(c, root))) {
        shms_mark_fail(c, "dict table header is invalid (cap %llu, n_used %llu)",
                       (unsigned long long)t->cap, (unsigned long long)t->n_used);
        return -1;
    }
    if (t->vers) {
        if (shms_mark(c, t->vers, SHMS_DICT_NVER * 8))
            return -1;
    }
    en = shms_dents(t);
    for (i = 0; i < t->n_used; i++) {
        if (i && en[i].seq <= en[i - 1].seq) {
            shms_mark_fail(c, "dict entry %llu: seq not increasing", (unsigned long long)i);
            return -1;
        }
        if (!en[i].blob)
            continue;
        if (shms_mark(c, en[i].blob, sizeof(shms_dblob_t)))
            return -1;
        if (!shms_dblob_ok(shms_mark_ptr(c, en[i].blob), shms_mark_payload(c, en[i].blob))) {
            shms_mark_fail(c, "dict entry %llu: blob lengths overflow", (unsigned long long)i);
            return -1;
        }
    }
    return 0;
}

/* Hashes are recomputed from the keys (a damaged hash would hide its key);
 * two live entries with one key cannot be repaired: SHMS_ECORRUPT. */
int shms_dict_repair(shms_heap_t *h, uint64_t root)
{
    shms_dtab_t *t = shms_ptr(h, root);
    shms_dent_t *en = shms_dents(t);
    uint64_t i, live = 0, slot;
    shms_dict_bump(h, t, 0, 1);   /* what a dead writer did is never cached */
    memset(shms_dindex(t), 0xFF, t->isize * 4);
    for (i = 0; i < t->n_used; i++) {
        shms_dblob_t *b;
        if (!en[i].blob)
            continue;
        b = shms_ptr(h, en[i].blob);
        en[i].hash = shms_hash64(shms_dblob_key(b), b->cmplen, h->hdr->seed);
        if (shms_dict_lookup(h, t, en[i].hash, shms_dblob_key(b), b->cmplen, &slot) !=
                SHMS_LK_ABSENT || slot == UINT64_MAX)
            return SHMS_ECORRUPT;
        shms_dindex(t)[slot] = (uint32_t)i;
        live++;
    }
    t->n_live = t->n_filled = live;
    if (t->n_used && t->next_seq <= en[t->n_used - 1].seq)
        t->next_seq = en[t->n_used - 1].seq + 1;
    return 0;
}

static int fail(char *msg, size_t cap, const char *what, uint64_t i)
{
    snprintf(msg, cap, "dict: %s (entry %llu)", what, (unsigned long long)i);
    return 1;
}

static int check_entries(shms_heap_t *h, shms_dtab_t *t, char *msg, size_t cap)
{
    shms_dent_t *en = shms_dents(t);
    uint64_t i, live = 0, slot;
    for (i = 0; i < t->n_used; i++) {
        shms_dblob_t *b;
        if (!en[i].blob)
            continue;
        live++;
        b = shms_ptr(h, en[i].blob);
        if (en[i].hash != shms_hash64(shms_dblob_key(b), b->cmplen, h->hdr->seed))
            return fail(msg, cap, "stored hash differs from the key's hash", i);
        if (shms_dict_lookup(h, t, en[i].hash, shms_dblob_key(b), b->cmplen, &slot) != (int64_t)i)
            return fail(msg, cap, "index does not lead to the entry (or duplicate key)", i);
    }
    if (live != t->n_live)
        return fail(msg, cap, "n_live differs from the live entries", live);
    if (t->n_used && t->next_seq <= en[t->n_used - 1].seq)
        return fail(msg, cap, "next_seq not above the last seq", t->n_used - 1);
    return 0;
}

static int check_index(shms_dtab_t *t, char *msg, size_t cap)
{
    uint32_t *ix = shms_dindex(t);
    uint64_t i, filled = 0, live = 0;
    for (i = 0; i < t->isize; i++) {
        if (ix[i] == SHMS_IX_EMPTY)
            continue;
        filled++;
        if (ix[i] == SHMS_IX_DUMMY)
            continue;
        live++;
        if (ix[i] >= t->n_used || !shms_dents(t)[ix[i]].blob)
            return fail(msg, cap, "index slot names a missing entry", ix[i]);
    }
    if (filled != t->n_filled || live != t->n_live)
        return fail(msg, cap, "index counts differ (filled/live)", filled);
    return 0;
}

int shms_dict_check_root(shms_heap_t *h, uint64_t root, char *msg, size_t cap)
{
    shms_dtab_t *t = shms_ptr(h, root);
    return check_entries(h, t, msg, cap) || check_index(t, msg, cap);
}
