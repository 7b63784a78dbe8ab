/* The shmshare heap: a crash-consistent allocator over SysV segments.
 *
 * This file: layout, create/open/close, counters and change waits; the
 * allocator (blocks, bins, alloc, free) is alloc.c.
 *
 * LAYOUT.  Extent 0 is [base, base+heap_size) inside the caller's segment;
 * it starts with shms_heap_hdr_t (heap_int.h), then blocks.  Extents 1..63
 * are segments created on demand (extent.c); each starts with a 64-byte
 * shms_ext_hdr_t, then blocks.  A ref is (extent << 48) | offset of a
 * block's payload within its extent; 0 is the null ref (offset 0 of extent
 * 0 is the heap header, never a payload).  Processes map extents at
 * different addresses, so shared memory only ever holds refs.
 *
 * DURABLE vs DERIVED.  A process may die at any instruction while holding
 * the lock.  Only these are durable (must be valid at every instant):
 *   W1  the walk: from first[e], adding sizes reaches exactly end[e], every
 *       size a multiple of 16 and >= 32;
 *   W2  the extent table (state is the commit point of growth, extent.c);
 *   W3  root_kind/root and what the structure reaches from root (dict.c,
 *       list.c).
 * Everything else -- USED flags, prev sizes, bins, bitmap, byte counts,
 * and the structure's own index/counters -- is DERIVED: recovery
 * (recover.c) recomputes it from W1..W3.  A block is in use iff it is
 * reachable from root, so a block allocated but not yet published, or
 * unpublished but not yet freed, is reclaimed by recovery: no leaks.
 * The allocator keeps W1 by two moves, each one 8-byte store (alloc.c).
 *
 * NORMAL-PATH INVARIANTS (checked by shms_heap_check): USED iff reachable;
 * no two free blocks adjacent; every free block in the bin of its size;
 * prev sizes and byte counts exact.
 */
#include "mark_int.h"
#include <limits.h>
#include <pthread.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

_Static_assert(sizeof(pthread_mutex_t) <= 64, "mutex slot too small");
_Static_assert(sizeof(shms_ext_ent_t) == 64, "extent entry layout");
_Static_assert(sizeof(shms_ext_hdr_t) == SHMS_EXT_HDR, "extent header layout");

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

size_t shms_heap_header_size(void)
{
    return (size_t)align_up(sizeof(shms_heap_hdr_t), 64);
}

/* -------------------------------------------------- create, open, close */

void shms_ext_setup_local(shms_heap_t *h, unsigned e, char *base, uint64_t size)
{
    h->base[e] = base;
    h->first[e] = e ? SHMS_EXT_HDR : shms_heap_header_size();
    h->end[e] = size & SHMS_SIZE_MASK;
}

/* The fork generation of the counts of calls inside (heap_int.h): a forked
 * child starts a new one, in which none of its parent's threads is inside. */
uint32_t shms_fork_generation = 1;
static pthread_once_t fork_hook_once = PTHREAD_ONCE_INIT;

static void new_fork_generation(void)
{
    __atomic_add_fetch(&shms_fork_generation, 1, __ATOMIC_SEQ_CST);
}

static void hook_fork(void)
{
    pthread_atfork(NULL, NULL, new_fork_generation);
}

static shms_heap_t *handle_new(void *base, uint64_t size)
{
    shms_heap_t *h;
    pthread_once(&fork_hook_once, hook_fork);
    h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->hdr = (shms_heap_hdr_t *)base;
    h->main_shmid = -1;
    shms_ext_setup_local(h, 0, (char *)base, size);
    return h;
}

static int random_u64(uint64_t *out)
{
    ssize_t n = getrandom(out, sizeof *out, 0);
    return n == (ssize_t)sizeof *out ? 0 : (errno ? errno : EIO);
}

int shms_heap_create(void *base, uint64_t size, uint32_t mode, uint32_t flags,
                     shms_heap_t **out)
{
    shms_heap_hdr_t *H = (shms_heap_hdr_t *)base;
    shms_heap_t *h;
    shms_blk_t *b;
    uint64_t first = shms_heap_header_size();
    int rc;
    if (((uintptr_t)base & 63) || size > SHMS_OFF_MASK ||
        (size & SHMS_SIZE_MASK) < first + 1024)
        return EINVAL;
    memset(H, 0, first);
    if ((rc = random_u64(&H->token)) || (rc = random_u64(&H->seed)))
        return rc;
    if ((rc = shms_mutex_init(H->mutex)))
        return rc;
    if (!(h = handle_new(base, size)))
        return ENOMEM;
    H->version = SHMS_HEAP_VERSION;
    H->mutex_size = (uint32_t)sizeof(pthread_mutex_t);
    H->header_size = (uint32_t)first;
    H->flags = flags;
    H->mode = mode & 0777;
    H->heap_size = size;
    H->ident_sum = shms_ident_sum(H);
    H->ext[0].state = SHMS_EXT_READY;
    H->ext[0].size = size;
    H->ext[0].shmid = -1;
    H->n_extents = 1;
    b = shms_blk_at(h, 0, first);
    b->size = h->end[0] - first;
    b->prev = 0;
    H->bytes_total = H->bytes_free = b->size;
    shms_bin_insert(h, 0, first);
    /* The magic goes last: a half-created heap is refused by open. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(H->magic, SHMS_HEAP_MAGIC, 8);
    *out = h;
    return 0;
}

int shms_heap_open(void *base, uint64_t size, shms_heap_t **out)
{
    shms_heap_hdr_t *H = (shms_heap_hdr_t *)base;
    shms_heap_t *h;
    if (size < shms_heap_header_size() || memcmp(H->magic, SHMS_HEAP_MAGIC, 8) ||
        H->version != SHMS_HEAP_VERSION ||
        H->mutex_size != (uint32_t)sizeof(pthread_mutex_t) ||
        H->header_size != (uint32_t)shms_heap_header_size() || H->heap_size != size ||
        H->ident_sum != shms_ident_sum(H) || !shms_mutex_kind_ok(H->mutex))
        return SHMS_EBADHEAP;
    if (!(h = handle_new(base, size)))
        return ENOMEM;
    *out = h;
    return 0;
}

/* Every lookup hashes with the seed, and the layout fields say where
 * everything is: one flipped bit there would hide keys silently (lookups
 * miss while len() and iteration still count them), and a rebuild would
 * rehash every entry with the wrong seed.  So they are checksummed at
 * creation and verified at open, at every lock (before recovery; a mismatch
 * marks the heap corrupt: nothing is rewritten) and by check. */
uint64_t shms_ident_sum(const shms_heap_hdr_t *H)
{
    uint64_t v[8] = {H->version, H->mutex_size, H->header_size, H->flags, H->mode,
                     H->token, H->seed, H->heap_size};
    return shms_hash64(v, sizeof v, 0x5348534849444E54ULL) | 1;   /* never 0 */
}

/* A header word read inside the handle (heap_int.h); 0 once it is closed. */
static uint64_t word_inside(shms_heap_t *h, const uint64_t *word)
{
    uint64_t v;
    if (shms_enter(h))
        return 0;
    v = shms_load64(word);
    shms_leave(h);
    return v;
}

uint64_t shms_heap_token(shms_heap_t *h)
{
    return word_inside(h, &h->hdr->token);
}

/* Bytes the last extent shmget asked for (0: none yet), for error messages. */
uint64_t shms_heap_last_grow(shms_heap_t *h)
{
    return h->last_ask;
}

/* The root ref (tests damage the structure through it). */
uint64_t shms_heap_root_ref(shms_heap_t *h)
{
    return word_inside(h, &h->hdr->root);
}

/* A handle of the heap at the start of mapping addr's payload, main segment
 * shmid: extent 0's shmid derives the extents' keys (extent.c), and whoever
 * unmaps addr last reaps the extents once the main segment is gone
 * (shms_unmap_reap_on).  0 or ENOMEM. */
int shms_heap_bind(shms_heap_t *h, int64_t shmid, void *addr)
{
    h->main_shmid = shmid;
    return shms_unmap_reap_on(addr, shmid, h->hdr->token, h->hdr, h->hdr->heap_size);
}

/* The futex word: the low 32 bits of modcount (little-endian: same address). */
static uint32_t *change_word(shms_heap_t *h)
{
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shms_heap_wait_change assumes a little-endian machine"
#endif
    return (uint32_t *)(void *)&h->hdr->modcount;
}

void shms_wake_waiters(shms_heap_t *h)
{
    syscall(SYS_futex, change_word(h), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Sleep until modcount differs from `seen` or timeout_ns passes (then
 * ETIMEDOUT).  The caller reads `seen` under the lock, releases it, then
 * calls this; any change committed after that read ends the wait.  The
 * lock is not held while sleeping, so a process killed here blocks nobody. */
int shms_heap_wait_change(shms_heap_t *h, uint64_t seen, int64_t timeout_ns)
{
    struct timespec ts;
    long rc;
    int err = shms_enter(h);
    if (err)
        return err;
    __atomic_add_fetch(&h->hdr->waiters, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&h->hdr->modcount, __ATOMIC_SEQ_CST) == seen) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
        ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
        rc = syscall(SYS_futex, change_word(h), FUTEX_WAIT, (uint32_t)seen, &ts, NULL, 0);
        if (rc != 0 && errno == ETIMEDOUT)
            err = ETIMEDOUT;  /* EAGAIN (already changed) and EINTR: just return */
    }
    __atomic_sub_fetch(&h->hdr->waiters, 1, __ATOMIC_SEQ_CST);
    shms_leave(h);
    return err;
}

const volatile uint64_t *shms_heap_modcount_ptr(shms_heap_t *h)
{
    return &h->hdr->modcount;
}

/* n_extents only grows (slots are reused, never given back while the heap
 * lives), so Python can notice growth with one read and log it. */
const volatile uint64_t *shms_heap_n_extents_ptr(shms_heap_t *h)
{
    return &h->hdr->n_extents;
}

uint64_t shms_heap_modcount(shms_heap_t *h)
{
    return word_inside(h, &h->hdr->modcount);
}

uint64_t shms_heap_recoveries(shms_heap_t *h)
{
    return h->recoveries;
}

/* out[]: bytes in extents, used, free, extents, generation, entries,
 * recoveries (header total), modcount, used blocks. */
int shms_heap_stats(shms_heap_t *h, uint64_t *out, int n, int held, int64_t timeout_ns)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t v[9], ext = 0, ent = 0, i;
    int rc = shms_op_begin(h, held, timeout_ns);
    if (rc)
        return rc;
    for (i = 0; i < H->n_extents && i < SHMS_MAX_EXT; i++)
        ext += H->ext[i].state == SHMS_EXT_READY;
    if (H->root_kind < SHMS_NKINDS && H->root && shms_kinds[H->root_kind].count)
        ent = shms_kinds[H->root_kind].count(h, H->root);
    v[0] = H->bytes_total; v[1] = H->bytes_used; v[2] = H->bytes_free;
    v[3] = ext; v[4] = H->generation; v[5] = ent; v[6] = H->recoveries;
    v[7] = H->modcount; v[8] = H->n_used_blocks;
    shms_op_end(h, held);
    for (i = 0; i < 9 && (int)i < n; i++)
        out[i] = v[i];
    return 0;
}
