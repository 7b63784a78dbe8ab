/* The allocator of the shmshare heap: blocks, bins, alloc and free.
 * (The layout and what is durable: heap.c.)
 *
 * BLOCKS.  Every block starts with {size|USED, prev_size}; size is a
 * multiple of 16 and >= 32.  Free blocks hold {next, prev} refs of their
 * bin's doubly linked list in their payload.  Bins: exact 16-byte classes
 * below 1 KiB, then 8 bins per power of two; requests up to 4 KiB are
 * rounded up to their bin's lower bound so any block of that bin fits.
 *
 * W1 IS KEPT BY TWO MOVES ONLY, each ending in one aligned 8-byte store:
 *   split  write the tail's header inside the block, then shrink the head
 *          (before the store the tail header is payload: harmless);
 *   merge  grow the head over its free successor (the successor's header
 *          becomes payload).
 */
#include "heap_int.h"
#include <errno.h>
#include <string.h>

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

/* ---------------------------------------------------------------- bins */

unsigned shms_bin_of(uint64_t s)
{
    unsigned k;
    if (s < 1024)
        return (unsigned)(s >> 4) - 2;
    k = 63u - (unsigned)__builtin_clzll(s);
    return 62u + (k - 10u) * 8u + (unsigned)((s >> (k - 3u)) & 7u);
}

static uint64_t bin_floor(unsigned b)
{
    unsigned k, sub;
    if (b < 62)
        return ((uint64_t)b + 2) << 4;
    k = 10u + (b - 62u) / 8u;
    sub = (b - 62u) % 8u;
    return (uint64_t)(8u + sub) << (k - 3u);
}

/* Block size for a payload of n bytes (0 on overflow). */
static uint64_t block_size_for(uint64_t n)
{
    uint64_t s;
    if (n > (1ULL << 47))
        return 0;
    s = align_up(n + SHMS_BLK_HDR, 16);
    if (s < SHMS_MIN_BLOCK)
        s = SHMS_MIN_BLOCK;
    if (s >= 1024 && s <= SHMS_SMALL_MAX) {
        unsigned b = shms_bin_of(s);
        if (bin_floor(b) != s)
            s = bin_floor(b + 1);
    }
    return s;
}

static uint64_t *links(shms_heap_t *h, uint64_t ref) /* [0]=next [1]=prev */
{
    return (uint64_t *)shms_ptr(h, ref);
}

static void bit_set(shms_heap_hdr_t *H, unsigned b) { H->bitmap[b / 64] |= 1ULL << (b % 64); }
static void bit_clr(shms_heap_hdr_t *H, unsigned b) { H->bitmap[b / 64] &= ~(1ULL << (b % 64)); }

void shms_bins_reset(shms_heap_t *h)
{
    memset(h->hdr->bins, 0, sizeof h->hdr->bins);
    memset(h->hdr->bitmap, 0, sizeof h->hdr->bitmap);
}

/* A free-list neighbour read from shared memory: 0 or a ref whose links
 * lie inside its extent; anything else marks the handle damaged. */
static int link_ok(shms_heap_t *h, uint64_t ref)
{
    if (!ref || shms_ref_in(h, ref, 16))
        return 1;
    h->damaged = 1;
    return 0;
}

void shms_bin_insert(shms_heap_t *h, unsigned e, uint64_t off)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t ref = shms_mkref(e, off + SHMS_BLK_HDR);
    unsigned b = shms_bin_of(shms_blk_at(h, e, off)->size & SHMS_SIZE_MASK);
    uint64_t head = H->bins[b];
    if (!link_ok(h, head))
        head = 0;                        /* the bin is lost until the repair */
    links(h, ref)[0] = head;
    links(h, ref)[1] = 0;
    if (head)
        links(h, head)[1] = ref;
    H->bins[b] = ref;
    bit_set(H, b);
}

static void bin_remove(shms_heap_t *h, uint64_t ref)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t *l = links(h, ref);
    unsigned b = shms_bin_of(shms_blk_of(h, ref)->size & SHMS_SIZE_MASK);
    if (!link_ok(h, l[0]) || !link_ok(h, l[1]))
        return;                          /* left for the repair */
    if (l[1])
        links(h, l[1])[0] = l[0];
    else
        H->bins[b] = l[0];
    if (l[0])
        links(h, l[0])[1] = l[1];
    if (!H->bins[b])
        bit_clr(H, b);
}

/* First non-empty bin >= b, or SHMS_NBINS. */
static unsigned next_bin(shms_heap_hdr_t *H, unsigned b)
{
    unsigned w = b / 64;
    uint64_t m;
    if (b >= SHMS_NBINS)
        return SHMS_NBINS;
    m = H->bitmap[w] & (~0ULL << (b % 64));
    while (!m) {
        if (++w >= SHMS_BITMAP_WORDS)
            return SHMS_NBINS;
        m = H->bitmap[w];
    }
    return w * 64 + (unsigned)__builtin_ctzll(m);
}

/* A free block of bin b (or, first fit, of at least s bytes): its ref is
 * checked to be a free block lying inside its extent. */
static int free_block_ok(shms_heap_t *h, uint64_t r)
{
    uint64_t sz;
    if (!shms_ref_in(h, r, 16))
        return 0;
    sz = shms_blk_of(h, r)->size;
    return !(sz & SHMS_B_USED) && (sz & SHMS_SIZE_MASK) >= SHMS_MIN_BLOCK &&
           (sz & SHMS_SIZE_MASK) - SHMS_BLK_HDR <= h->end[shms_ref_ext(r)] - shms_ref_off(r);
}

/* Most blocks the attached extents can hold: bounds a free-list walk. */
static uint64_t max_blocks(const shms_heap_t *h)
{
    uint64_t n = 0;
    unsigned e;
    for (e = 0; e < SHMS_MAX_EXT; e++)
        if (h->base[e])
            n += (h->end[e] - h->first[e]) / SHMS_MIN_BLOCK;
    return n;
}

/* A free block of at least s bytes, removed from its bin: 0 and *out = 0
 * if none; SHMS_EDAMAGED if a bin is damaged. */
static int take_fit(shms_heap_t *h, uint64_t s, uint64_t *out)
{
    shms_heap_hdr_t *H = h->hdr;
    unsigned b = shms_bin_of(s);
    uint64_t r, n = 0, limit;
    *out = 0;
    if (bin_floor(b) != s) {             /* large: first fit in own bin */
        limit = max_blocks(h);
        for (r = H->bins[b]; r; r = links(h, r)[0]) {
            if (!free_block_ok(h, r) || ++n > limit)
                return SHMS_EDAMAGED;
            if ((shms_blk_of(h, r)->size & SHMS_SIZE_MASK) >= s)
                goto found;
        }
        b++;
    }
    b = next_bin(H, b);
    if (b >= SHMS_NBINS)
        return 0;
    r = H->bins[b];
    if (!free_block_ok(h, r) || (shms_blk_of(h, r)->size & SHMS_SIZE_MASK) < s)
        return SHMS_EDAMAGED;
found:
    bin_remove(h, r);
    *out = r;
    return 0;
}

/* ------------------------------------------------------ alloc and free */

static void set_next_prev(shms_heap_t *h, unsigned e, uint64_t off, uint64_t size)
{
    if (off + size < h->end[e])
        shms_blk_at(h, e, off + size)->prev = size;
}

/* Split block (e, off) of size bs to s bytes; the tail becomes free. */
static void split(shms_heap_t *h, unsigned e, uint64_t off, uint64_t bs, uint64_t s)
{
    shms_blk_t *b = shms_blk_at(h, e, off);
    shms_blk_t *t = shms_blk_at(h, e, off + s);
    t->size = bs - s;                    /* 1: tail header (in payload) */
    t->prev = s;
    shms_store64(&b->size, s | (b->size & SHMS_B_USED)); /* 2: commit */
    set_next_prev(h, e, off + s, bs - s);
    h->hdr->bytes_free += bs - s;
    shms_bin_insert(h, e, off + s);
}

int shms_alloc(shms_heap_t *h, uint64_t n, uint64_t *ref_out)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t s = block_size_for(n), r, bs, off;
    shms_blk_t *b;
    unsigned e;
    int rc;
    if (!s)
        return ENOMEM;
    while (1) {
        if ((rc = take_fit(h, s, &r)))
            return rc;
        if (r)
            break;
        if (h->no_grow)
            return SHMS_EGROW;
        if ((rc = shms_ext_grow(h, s)))
            return rc;
    }
    e = shms_ref_ext(r);
    off = shms_ref_off(r) - SHMS_BLK_HDR;
    b = shms_blk_at(h, e, off);
    bs = b->size & SHMS_SIZE_MASK;
    H->bytes_free -= bs;
    if (bs - s >= SHMS_MIN_BLOCK)
        split(h, e, off, bs, s);
    else
        s = bs;
    b->size = s | SHMS_B_USED;
    H->bytes_used += s;
    H->n_used_blocks++;
    *ref_out = r;
    shms_ahead_note(h, (char *)b + s);
    return 0;
}

uint64_t shms_payload_size(shms_heap_t *h, uint64_t ref)
{
    return (shms_blk_of(h, ref)->size & SHMS_SIZE_MASK) - SHMS_BLK_HDR;
}

/* The caller passes a ref it validated as a used block (shms_used_ptr).
 * Neighbours are merged only when their sizes agree with the walk; a
 * disagreement is left for the repair (h->damaged). */
void shms_free(shms_heap_t *h, uint64_t ref)
{
    shms_heap_hdr_t *H = h->hdr;
    unsigned e = shms_ref_ext(ref);
    uint64_t off = shms_ref_off(ref) - SHMS_BLK_HDR, ns;
    shms_blk_t *b = shms_blk_at(h, e, off), *nb, *pb;
    uint64_t s = b->size & SHMS_SIZE_MASK;
    H->bytes_used -= s;
    H->n_used_blocks--;
    H->bytes_free += s;
    b->size = s;                                    /* clear USED */
    if (off + s < h->end[e]) {
        nb = shms_blk_at(h, e, off + s);
        ns = nb->size & SHMS_SIZE_MASK;
        if (ns < SHMS_MIN_BLOCK || ns > h->end[e] - off - s)
            h->damaged = 1;
        else if (!(nb->size & SHMS_B_USED)) {       /* merge successor */
            bin_remove(h, shms_mkref(e, off + s + SHMS_BLK_HDR));
            s += ns;
            shms_store64(&b->size, s);
        }
    }
    if (b->prev) {
        if (b->prev > off - h->first[e] || (b->prev & 15) ||
            (shms_blk_at(h, e, off - b->prev)->size & SHMS_SIZE_MASK) != b->prev)
            h->damaged = 1;
        else if (!((pb = shms_blk_at(h, e, off - b->prev))->size & SHMS_B_USED)) {
            off -= b->prev;                         /* merge into predecessor */
            bin_remove(h, shms_mkref(e, off + SHMS_BLK_HDR));
            s += pb->size & SHMS_SIZE_MASK;
            shms_store64(&pb->size, s);
        }
    }
    set_next_prev(h, e, off, s);
    shms_bin_insert(h, e, off);
}
