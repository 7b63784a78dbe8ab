/* Online growth: extents 1..63 are SysV segments created under the heap
 * lock when no free block fits.
 *
 * KEYS ARE DERIVED FROM THE HEAP, so that every segment a heap may have
 * created can be found again from the heap's main segment alone, even when
 * nothing was ever written into the segment:
 *     key(M, slot, try) = (M & 0x7FFF) << 9 | slot << 3 | try
 * with M the shmid of the main segment (extent 0), slot 1..63 and try 0..7
 * (the next try after EEXIST).  Keys are below 2^24, while ftok keys carry
 * proj_id (1..255) in their top byte: they never collide.
 *
 * KEYS MAY BE SHARED.  M & 0x7FFF is the low 15 bits of M's index in the
 * kernel's table of segments.  With IPCMNI 2^15 no other live segment holds
 * it, but a kernel booted with ipcmni_extend (IPCMNI 2^24, shmid = seq << 24
 * | index) lets two live mains agree in those bits, and then their heaps
 * derive the same keys.  So nothing assumes a key is this heap's:
 *   - growth steps over a taken key (EEXIST: next try);
 *   - a finished extent ("SHMSEXT") is attached, or removed as this heap's,
 *     only if its header names M and the heap's token;
 *   - a PENDING slot's segment (creator pid and size match) is removed only
 *     if unfinished, or finished and naming M and the token: one process
 *     may have grown both heaps, with the same sizes;
 *   - an unfinished segment (magic zero or "SHMSNEW": nobody named yet) is
 *     removed only when no live segment but the remover's own main holds an
 *     index with these key bits (shms_key_bits_free).  Only the main of the
 *     heap creating it can, and that main holds its index from before the
 *     shmget until after the header is written (its creator has it
 *     attached), so the test never removes an extent in the making.
 * Tests narrow the bits (shms_test_idx_mask) to force sharing on any kernel.
 *
 * COMMIT POINTS of shms_ext_grow (ext[i] is the slot's table entry):
 *   A  ext[i] = {key, pid, size} then state := PENDING (before shmget);
 *   -  shmget(key, IPC_CREAT|IPC_EXCL) (EEXIST: state := FREE, next try;
 *      ENOSPC/ENOMEM: again at half the size, down to what the request
 *      needs), shmat, magic := "SHMSNEW" (the first store), the first free
 *      block, {token, index, size, main}, then magic := "SHMSEXT";
 *   B  ext[i].shmid := id, then state := READY  (the extent now exists);
 *   -  generation += 1, bins/counters updated (derived).
 * A process dying between A and B leaves a PENDING slot: recovery removes
 * the segment if it still exists under that key and was created by the
 * recorded pid with the recorded size, then frees the slot.
 *
 * SOLE USER.  If, when the extent is created, the main segment is marked
 * for removal (anonymous, or unlinked) and attached by this process alone,
 * the extent is IPC_RMID'd right after its shmat, so it dies with its users
 * even if all of them are killed.  That is safe: every process that can
 * reach the heap later is either a fork of one holding it (and inherits the
 * attachment) or attaches the main segment by shmid, and Heap.open then
 * attaches every extent at once, under the lock (if the lock is busy, at its
 * first operation: the holder has them all attached meanwhile).  A newcomer
 * whose last other user dies before that gets SHMS_EEXTGONE: an anonymous
 * object lives only while someone is attached.  A process that dies before B leaves
 * nothing then: the segment is destroyed with its last attachment.
 *
 * WHO REMOVES AN EXTENT otherwise.  An extent grown while other processes
 * hold the main segment is not IPC_RMID'd while its heap can be used (one
 * of them may be idle and attach it at its next operation, so removing it
 * early would lose data, and watching attach counts would cost a syscall
 * per operation).  It goes when the main segment goes:
 *   1  whoever removes the main segment while it is the only process
 *      attached removes them at once (shms_ext_reap, force; an unfinished
 *      one only if no other heap shares the keys, else 2 or 3 does later;
 *      skipped when the header, read after the IPC_RMID, is whole and counts
 *      one slot: shms_heap_never_grew);
 *   2  every process, right after it detached the main segment, checks
 *      whether it still exists (one IPC_STAT); if not, it was the last user
 *      (or one of the last, racing), and it removes every segment under the
 *      heap's keys that is ours: an "SHMSEXT" one naming M and the heap's
 *      token, or an unfinished one provided no index with its key bits is
 *      held (else a heap sharing the keys may be creating it); when the
 *      header counted one slot right before its shmdt, only slot 1's keys
 *      are asked first (shms_ext_reap_detached);
 *   3  when every user was killed, `gc` (shms_ext_sweep) removes an extent
 *      whose recorded main segment is gone, or an unfinished one whose key
 *      bits no held index has.  Both tests are sound (KEYS MAY BE SHARED).
 * So every segment a heap creates is, from the instant shmget returns, one
 * that 1, 2 or 3 finds: there is no window in which it can be orphaned
 * unseen, and no step depends on timing.  A heap whose header is damaged is
 * still removable: 1 needs only M, never the heap's header.
 *
 * ATTACHING.  Other processes follow the table by shmid whenever the
 * generation differs from their handle's (shms_ext_sync, run by every
 * locked operation; an unchanged generation costs no syscall) and verify
 * magic + token + index + size, because a removed segment's shmid can be
 * reused by an unrelated segment.
 */
#include "heap_int.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <time.h>

static int verify_ext(shms_heap_t *h, unsigned i, const char *p)
{
    const shms_ext_hdr_t *x = (const shms_ext_hdr_t *)p;
    return memcmp(x->magic, SHMS_EXT_MAGIC, 8) == 0 && x->token == h->hdr->token &&
           x->index == i && x->size == h->hdr->ext[i].size &&
           (!x->main || x->main == (uint64_t)h->main_shmid + 1);
}

static int attach(shms_heap_t *h, unsigned i)
{
    shms_ext_ent_t *E = &h->hdr->ext[i];
    struct shmid_ds ds;
    void *p;
    /* The table is in shared memory: never map less than it claims. */
    if (E->size < SHMS_EXT_HDR + SHMS_MIN_BLOCK || E->size > SHMS_OFF_MASK ||
        E->shmid < 0 || E->shmid > INT32_MAX ||
        shmctl((int)E->shmid, IPC_STAT, &ds) != 0 || ds.shm_segsz < E->size)
        return SHMS_EEXTGONE;
    p = shmat((int)E->shmid, NULL, 0);
    if (p == (void *)-1)
        return errno == EINVAL || errno == EIDRM ? SHMS_EEXTGONE : errno;
    if (!verify_ext(h, i, p)) {
        shmdt(p);
        return SHMS_EEXTGONE;
    }
    shms_ext_setup_local(h, i, p, E->size);
    return 0;
}

static void detach_local(shms_heap_t *h, unsigned i)
{
    if (i && h->base[i]) {
        shmdt(h->base[i]);
        h->base[i] = NULL;
    }
}

int shms_ext_attach_all(shms_heap_t *h)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t gen = shms_load64(&H->generation);
    unsigned i;
    int rc;
    if (H->n_extents > SHMS_MAX_EXT)
        return SHMS_ECORRUPT;
    for (i = 1; i < H->n_extents; i++) {
        if (H->ext[i].state == SHMS_EXT_READY && !h->base[i]) {
            if ((rc = attach(h, i)))
                return rc;
        } else if (H->ext[i].state != SHMS_EXT_READY) {
            detach_local(h, i);
        }
    }
    h->generation = gen;
    return 0;
}

int shms_ext_sync(shms_heap_t *h)
{
    if (shms_load64(&h->hdr->generation) == h->generation)
        return 0;
    return shms_ext_attach_all(h);
}

static uint64_t page_up(uint64_t v)
{
    long pg = sysconf(_SC_PAGESIZE);
    uint64_t p = pg > 0 ? (uint64_t)pg : 4096;
    return (v + p - 1) / p * p;
}

/* Size of the next extent: at least the heap's total so far (so the heap
 * doubles) and at least what the request needs (*min); capped by shmmax. */
static int next_size(shms_heap_t *h, uint64_t need, uint64_t *out, uint64_t *min_out)
{
    shms_heap_hdr_t *H = h->hdr;
    shms_limits_t lim;
    uint64_t total = 0, want, min = page_up(need + SHMS_EXT_HDR + 16);
    unsigned i;
    for (i = 0; i < H->n_extents; i++)
        if (H->ext[i].state == SHMS_EXT_READY)
            total += H->ext[i].size;
    want = page_up(total > min ? total : min);
    if (want > SHMS_OFF_MASK)
        want = SHMS_OFF_MASK & ~0xFFFFULL;
    if (shms_limits(&lim) == 0 && want > lim.shmmax)
        want = lim.shmmax / 4096 * 4096;
    h->last_ask = min;
    if (want < min)
        return EINVAL;                  /* the request alone exceeds shmmax */
    *out = want;
    *min_out = min;
    return 0;
}

static int free_slot(shms_heap_hdr_t *H)
{
    int i;
    for (i = 1; i < SHMS_MAX_EXT; i++)
        if (H->ext[i].state == SHMS_EXT_FREE)
            return i;
    return -1;
}

/* ---------------------------------------------------------------- keys */

int64_t shms_index_holder(unsigned idx)
{
    struct shmid_ds ds;
    int id;
#ifdef SHM_STAT_ANY
    id = shmctl((int)idx, SHM_STAT_ANY, &ds);
    if (id >= 0 || errno != EINVAL)
        return id >= 0 ? id : -2;       /* -2: there, but unreadable */
#endif
    id = shmctl((int)idx, SHM_STAT, &ds);
    return id >= 0 ? id : (errno == EACCES ? -2 : -1);
}

/* 1 if no segment but `except` holds an index with these key bits.  Only
 * the indexes up to the highest in use (SHM_INFO) are asked: one SHM_STAT
 * unless the system has more segments than the mask covers.  A main created
 * during the scan is no creator of a segment that existed before it. */
int shms_key_bits_free(uint64_t bits, int64_t except)
{
    struct shm_info info;
    int top = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&info);
    uint64_t idx;
    if (top < 0)
        return 0;                       /* unknown: keep the segment */
    for (idx = bits; idx <= (uint64_t)top && idx <= INT32_MAX; idx += shms_idx_mask + 1) {
        int64_t holder = shms_index_holder((unsigned)idx);
        if (holder != -1 && !(except >= 0 && holder == except))
            return 0;
    }
    return 1;
}

uint64_t shms_idx_mask = SHMS_IDX_MASK;
static int test_fail_point;

/* Tests only: 1 makes the process _exit right after an extent's shmget, 2
 * right after commit point A (before the shmget). */
void shms_test_fail_point(int point)
{
    test_fail_point = point;
}

/* Tests only: key bits mask & 0x7FFF (a 2^k - 1), so that two live main
 * segments share them as on a kernel booted with ipcmni_extend; 0 restores. */
void shms_test_idx_mask(uint64_t mask)
{
    mask = mask ? mask & SHMS_IDX_MASK : SHMS_IDX_MASK;
    if (!(mask & (mask + 1)))
        shms_idx_mask = mask;
}

/* Commit point A, then shmget; returns the shmid or -errno / -SHMS_ENOKEY. */
static int create_segment(shms_heap_t *h, unsigned i, uint64_t size)
{
    shms_heap_hdr_t *H = h->hdr;
    shms_ext_ent_t *E = &H->ext[i];
    unsigned try;
    int id, err;
    for (try = 0; try < SHMS_KEY_TRIES; try++) {
        key_t key = shms_ext_key(h->main_shmid, i, try);
        E->key = (uint64_t)key;
        E->pid = getpid();
        E->size = size;
        E->shmid = -1;
        shms_store64(&E->state, SHMS_EXT_PENDING);          /* A */
        if (H->n_extents <= i)
            shms_store64(&H->n_extents, i + 1);
        if (test_fail_point == 2)
            _exit(70);
        id = shmget(key, size, IPC_CREAT | IPC_EXCL | (int)(H->mode & 0777));
        if (id >= 0) {
            if (test_fail_point == 1)
                _exit(70);
            return id;
        }
        err = errno;
        shms_store64(&E->state, SHMS_EXT_FREE);
        if (err != EEXIST)
            return -err;
    }
    return -SHMS_ENOKEY;                /* every key of this slot is taken */
}

static void init_extent(shms_heap_t *h, unsigned i, char *p, uint64_t size)
{
    shms_ext_hdr_t *x = (shms_ext_hdr_t *)p;
    shms_blk_t *b = (shms_blk_t *)(p + SHMS_EXT_HDR);
    memcpy(x->magic, SHMS_EXT_BEGUN, 8);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    b->size = (size & SHMS_SIZE_MASK) - SHMS_EXT_HDR;
    b->prev = 0;
    x->token = h->hdr->token;
    x->index = i;
    x->size = size;
    x->main = (uint64_t)h->main_shmid + 1;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(x->magic, SHMS_EXT_MAGIC, 8);
}

/* The main segment is marked for removal and attached here only (the top). */
static int sole_user(shms_heap_t *h)
{
    struct shmid_ds ds;
    return shmctl((int)h->main_shmid, IPC_STAT, &ds) == 0 && ds.shm_nattch == 1 &&
           (ds.shm_perm.mode & SHM_DEST);
}

int shms_ext_grow(shms_heap_t *h, uint64_t need)
{
    shms_heap_hdr_t *H = h->hdr;
    shms_ext_ent_t *E;
    uint64_t size, min, bs;
    int i = free_slot(H), id, rc;
    void *p;
    if (i < 0)
        return SHMS_ETOOMANY;
    if ((rc = next_size(h, need, &size, &min)))
        return rc;
    if (h->main_shmid < 0)
        return SHMS_ENOKEY;
    E = &H->ext[i];
    while (1) {
        h->last_ask = size;
        if ((id = create_segment(h, (unsigned)i, size)) >= 0)
            break;
        /* shmall (ENOSPC) or memory (ENOMEM) may still allow a smaller one. */
        if ((id != -ENOSPC && id != -ENOMEM) || size <= min)
            return -id;
        size = page_up(size / 2) > min ? page_up(size / 2) : min;
    }
    p = shmat(id, NULL, 0);
    if (p == (void *)-1) {
        rc = errno;
        shmctl(id, IPC_RMID, NULL);
        shms_store64(&E->state, SHMS_EXT_FREE);
        return rc;
    }
    if (sole_user(h))
        shmctl(id, IPC_RMID, NULL);
    init_extent(h, (unsigned)i, p, size);
    E->shmid = id;
    shms_store64(&E->state, SHMS_EXT_READY);                 /* B */
    shms_store64(&H->generation, H->generation + 1);
    h->generation = H->generation;
    shms_ext_setup_local(h, (unsigned)i, p, size);
    bs = h->end[i] - h->first[i];
    H->bytes_total += bs;
    H->bytes_free += bs;
    shms_bin_insert(h, (unsigned)i, h->first[i]);
    return 0;
}

int shms_ext_resolve_pending(shms_heap_t *h)
{
    shms_heap_hdr_t *H = h->hdr;
    unsigned i, n = 0;
    for (i = 1; i < H->n_extents && i < SHMS_MAX_EXT; i++) {
        if (H->ext[i].state != SHMS_EXT_PENDING)
            continue;
        shms_ext_remove_pending(h->main_shmid, H->token, &H->ext[i]);
        detach_local(h, i);
        shms_store64(&H->ext[i].state, SHMS_EXT_FREE);
        n++;
    }
    if (n)
        shms_store64(&H->generation, H->generation + 1);
    return (int)n;
}

/* CLOSING.  Another thread of this process may be inside a call on h (every
 * call releases the GIL; one waiting for the lock or a change stays up to a
 * slice): close refuses new calls, waits for those inside to leave, then
 * detaches the extents -- and only then may the caller unmap extent 0.  The
 * handle stays, closed, for the calls that still hold it (each then answers
 * SHMS_ECLOSED); shms_heap_free frees it once nothing can call with it. */
void shms_heap_close(shms_heap_t *h)
{
    static const struct timespec pause = {0, 20000};
    unsigned i;
    if (!h || __atomic_exchange_n(&h->closing, 1, __ATOMIC_SEQ_CST))
        return;
    while (shms_inside(h))
        nanosleep(&pause, NULL);
    for (i = 1; i < SHMS_MAX_EXT; i++)
        detach_local(h, i);
}

void shms_heap_free(shms_heap_t *h)
{
    shms_heap_close(h);
    free(h);
}
