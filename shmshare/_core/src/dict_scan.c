/* Ordered iteration (scan) and the key hash of the heap dict.
 *
 * Scan copies, under the lock, as many consecutive live records as fit
 * into the caller's buffer, starting strictly after (or, reverse,
 * strictly before) a given seq.  Seqs increase along entries[0, n_used),
 * and resize/compaction keep them, so the position is found by binary
 * search and iteration survives concurrent mutation without torn data.
 *
 * Bounded: every record a batch returns has a seq strictly beyond `after`
 * and beyond the record before it, or the batch fails as damage (then the
 * rebuild finds the seqs out of order and marks the heap corrupt).  So the
 * caller's position moves on with every batch, and a table of n entries is
 * done in at most n batches, whatever its seqs hold: a damaged seq can
 * never make iteration return the same batch forever.
 *
 * Record layout (8-byte aligned): u64 seq, u64 klen, u64 vlen
 * (UINT64_MAX when values were not asked for), key bytes, value bytes,
 * zero padding to a multiple of 8.
 */
#include "dict_int.h"
#include <string.h>

/* ------------------------------------------------------------ hash */
/* A multiply-fold hash keyed by the heap's random seed: each 16-byte block
 * is folded into the state by a 64x64->128 multiply whose halves are xored;
 * one operand is always state-dependent, so a block cannot cancel it
 * without knowing the seed. */
#define SHMS_K0 0x9E3779B97F4A7C15ULL
#define SHMS_K1 0xC2B2AE3D27D4EB4FULL
#define SHMS_K2 0x165667B19E3779F9ULL
#define SHMS_K3 0xD6E8FEB86659FD93ULL

static inline uint64_t fold(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint64_t shms_hash64(const void *data, uint64_t n, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t len = n, s0 = seed ^ SHMS_K0, h = fold(seed ^ SHMS_K1, n ^ SHMS_K2), a = 0, b = 0;
    while (n > 16) {
        h = fold(rd64(p) ^ s0, rd64(p + 8) ^ h);
        p += 16;
        n -= 16;
    }
    if (n >= 8) {
        a = rd64(p);
        b = rd64(p + n - 8);
    } else if (n >= 4) {
        a = rd32(p);
        b = rd32(p + n - 4);
    } else if (n) {
        a = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
    }
    h = fold(a ^ s0 ^ SHMS_K3, b ^ h);
    return fold(h ^ SHMS_K1, len ^ seed ^ SHMS_K0);
}

/* ------------------------------------------------------------ scan */

/* First entry number whose seq is >= s (n if none). */
static uint64_t first_ge(shms_dent_t *en, uint64_t n, uint64_t s)
{
    uint64_t lo = 0, hi = n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (en[mid].seq < s)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Append entry e's record at out+*pos if it fits: 1; 0 if it does not
 * (*need set); -1 if its blob is damaged. */
static int put_record(shms_heap_t *h, shms_dent_t *e, int values, char *out, uint64_t cap,
                      uint64_t *pos, uint64_t *need)
{
    shms_dblob_t *b = shms_dblob_at(h, e->blob);
    uint64_t vl, hdr[3], sz;
    if (!b)
        return -1;
    vl = values ? b->vlen : 0;
    sz = (24 + b->klen + vl + 7) & ~7ULL;
    if (sz > cap - *pos) {
        *need = sz;
        return 0;
    }
    hdr[0] = e->seq;
    hdr[1] = b->klen;
    hdr[2] = values ? b->vlen : UINT64_MAX;
    memcpy(out + *pos, hdr, 24);
    memcpy(out + *pos + 24, shms_dblob_key(b), b->klen + vl);
    memset(out + *pos + 24 + b->klen + vl, 0, sz - 24 - b->klen - vl);
    *pos += sz;
    return 1;
}

static int scan_body(shms_heap_t *h, void *arg)
{
    shms_dop_t *a = arg;
    shms_dtab_t *t;
    shms_dent_t *en;
    uint64_t n, i, pos = 0, count = 0, need = 0, *res = a->res, last;
    int reverse = a->flag, put, rc = shms_dict_table(h, 0, &t), bounded = a->after >= 0;
    res[0] = res[1] = res[2] = 0;
    if (rc || !t)
        return rc;
    en = shms_dents(t);
    n = t->n_used;
    if (!reverse)
        i = a->after < 0 ? 0 : first_ge(en, n, (uint64_t)a->after + 1);
    else
        i = a->after < 0 ? n : first_ge(en, n, (uint64_t)a->after);
    last = (uint64_t)a->after;
    while (reverse ? i > 0 : i < n) {
        shms_dent_t *e = &en[reverse ? i - 1 : i];
        i = reverse ? i - 1 : i + 1;
        if (!e->blob)
            continue;
        if (bounded && (reverse ? e->seq >= last : e->seq <= last))
            return SHMS_EDAMAGED;       /* seqs out of order: see the top */
        last = e->seq;
        bounded = 1;
        if ((put = put_record(h, e, a->values, a->out, a->cap, &pos, &need)) < 0)
            return SHMS_EDAMAGED;
        if (!put)
            break;
        count++;
    }
    res[0] = count;
    res[1] = pos;
    res[2] = need;
    return count == 0 && need ? SHMS_ETOOSMALL : 0;
}

/* after_seq < 0 starts at the beginning (or, reverse, at the end).
 * res = {records, bytes, size needed by the first record that did not fit}. */
int shms_dict_scan(shms_heap_t *h, int64_t after_seq, int reverse, int values,
                   char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns)
{
    shms_dop_t a = {.out = out, .cap = cap, .res = res, .flag = reverse, .values = values,
                    .after = after_seq};
    return shms_run_op(h, held, timeout_ns, scan_body, &a);
}
