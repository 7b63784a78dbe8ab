/* Online growth: extents 1..63 are SysV segments created under the heap
 * lock when no free block fits.
 *
 * COMMIT POINTS of shms_ext_grow (ext[i] is the slot's table entry):
 *   A  ext[i] = {key, pid, size} then state := PENDING  (before shmget, so
 *      a segment can never exist that the table does not name);
 *   -  shmget(key, IPC_CREAT|IPC_EXCL) (EEXIST: state := FREE, new key),
 *      shmat, [ANONYMOUS: IPC_RMID at once], write the first free block
 *      and then the extent header {magic, token, index, size};
 *   B  ext[i].shmid := id, then state := READY  (the extent now exists);
 *   -  generation += 1, bins/counters updated (derived).
 * A process dying between A and B leaves a PENDING slot: recovery removes
 * the segment if it still exists under that key and was created by the
 * recorded pid with the recorded size (so a foreign segment that made our
 * shmget fail with EEXIST is never touched), then frees the slot.
 *
 * Keys are random in [1, 2^24): their top byte is 0, while ftok keys carry
 * proj_id (1..255) in the top byte, so they can never collide with them.
 *
 * ANONYMOUS heaps want extents that die with their last user, i.e. that
 * are IPC_RMID'd.  Doing so at creation would lose the extent if its
 * creator exits before any other process attached it (a removed segment
 * is destroyed when its attach count drops to 0, even though extent 0 and
 * the table still need it).  So an extent is SETTLED (IPC_RMID'd, removed
 * := 1) only once its attach count reaches extent 0's, i.e. every process
 * that can reach the heap holds it too; shms_ext_settle runs after every
 * lock while hdr->unsettled != 0.  Until then it is a keyed segment that
 * shms_heap_destroy_extents still removes.  Fork keeps both counts equal.
 *
 * RETIRING.  A named heap whose main segment is removed (unlink) while other
 * processes still use it becomes ANONYMOUS from then on (shms_heap_retire,
 * under the lock): its extents are settled like an anonymous heap's, so the
 * processes still attached keep every extent they may need, and an extent
 * grown afterwards dies with its last user too.  The last user of an
 * ANONYMOUS heap removes whatever is still unsettled when it detaches
 * (shms_heap_last_detach), e.g. extents whose grower exited before anyone
 * else attached them.
 *
 * ATTACHING.  Other processes follow the table by shmid whenever the
 * generation differs from their handle's (shms_ext_sync, run by every
 * locked operation) and verify magic + token + index + size, because a
 * removed segment's shmid can be reused by an unrelated segment.
 */
#include "heap_int.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/random.h>
#include <sys/shm.h>

static int verify_ext(shms_heap_t *h, unsigned i, const char *p)
{
    const shms_ext_hdr_t *x = (const shms_ext_hdr_t *)p;
    return memcmp(x->magic, SHMS_EXT_MAGIC, 8) == 0 && x->token == h->hdr->token &&
           x->index == i && x->size == h->hdr->ext[i].size;
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
 * doubles) and at least what the request needs; capped by shmmax. */
static int next_size(shms_heap_t *h, uint64_t need, uint64_t *out)
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
    if (want < min)
        return EINVAL;                  /* the request alone exceeds shmmax */
    *out = want;
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

/* Commit point A, then shmget; returns the shmid or -errno. */
static int create_segment(shms_heap_t *h, unsigned i, uint64_t size)
{
    shms_heap_hdr_t *H = h->hdr;
    shms_ext_ent_t *E = &H->ext[i];
    int tries, id, err = EEXIST;
    uint32_t r;
    for (tries = 0; tries < 256; tries++) {
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            return -EIO;
        r &= 0xFFFFFFu;
        if (!r)
            continue;
        E->key = r;
        E->pid = getpid();
        E->size = size;
        E->shmid = -1;
        shms_store64(&E->state, SHMS_EXT_PENDING);          /* A */
        if (H->n_extents <= i)
            shms_store64(&H->n_extents, i + 1);
        id = shmget((key_t)r, size, IPC_CREAT | IPC_EXCL | (int)(H->mode & 0777));
        if (id >= 0)
            return id;
        err = errno;
        shms_store64(&E->state, SHMS_EXT_FREE);
        if (err != EEXIST)
            return -err;
    }
    return -err;
}

static void init_extent(shms_heap_t *h, unsigned i, char *p, uint64_t size)
{
    shms_ext_hdr_t *x = (shms_ext_hdr_t *)p;
    shms_blk_t *b = (shms_blk_t *)(p + SHMS_EXT_HDR);
    b->size = (size & SHMS_SIZE_MASK) - SHMS_EXT_HDR;
    b->prev = 0;
    x->token = h->hdr->token;
    x->index = i;
    x->size = size;
    x->main = h->main_shmid >= 0 ? (uint64_t)h->main_shmid + 1 : 0;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(x->magic, SHMS_EXT_MAGIC, 8);
}

int shms_ext_grow(shms_heap_t *h, uint64_t need)
{
    shms_heap_hdr_t *H = h->hdr;
    shms_ext_ent_t *E;
    uint64_t size, bs;
    int i = free_slot(H), id, rc;
    void *p;
    if (i < 0)
        return SHMS_ETOOMANY;
    if ((rc = next_size(h, need, &size)))
        return rc;
    E = &H->ext[i];
    if ((id = create_segment(h, (unsigned)i, size)) < 0)
        return -id;
    p = shmat(id, NULL, 0);
    if (p == (void *)-1) {
        rc = errno;
        shmctl(id, IPC_RMID, NULL);
        shms_store64(&E->state, SHMS_EXT_FREE);
        return rc;
    }
    E->removed = 0;
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
    if (H->flags & SHMS_F_ANONYMOUS) {
        H->unsettled++;
        shms_ext_settle(h);
    }
    return 0;
}

static uint64_t nattch(int64_t shmid)
{
    struct shmid_ds ds;
    return shmctl((int)shmid, IPC_STAT, &ds) == 0 ? (uint64_t)ds.shm_nattch : 0;
}

/* A process that exits detaches its segments one at a time, in no set
 * order: for a moment it may count among extent 0's users no more, yet still
 * among an extent's.  Comparing counts then would settle an extent that a
 * user who never attached it still needs.  So nothing is settled within
 * SHMS_SETTLE_QUIET seconds of the last detach of extent 0 (a Python detach
 * drops extents before extent 0, so only exits are concerned, and an exit's
 * teardown takes milliseconds); a later lock, or the last user's detach
 * (shms_heap_last_detach), settles it. */
#define SHMS_SETTLE_QUIET 2

/* ANONYMOUS: IPC_RMID every extent that all users of extent 0 attached. */
void shms_ext_settle(shms_heap_t *h)
{
    shms_heap_hdr_t *H = h->hdr;
    struct shmid_ds ds;
    uint64_t main, left = 0;
    unsigned i;
    if (!(H->flags & SHMS_F_ANONYMOUS) || !H->unsettled || h->main_shmid < 0 ||
        shmctl((int)h->main_shmid, IPC_STAT, &ds) != 0 || !(main = ds.shm_nattch) ||
        (ds.shm_dtime && time(NULL) - ds.shm_dtime < SHMS_SETTLE_QUIET))
        return;
    for (i = 1; i < H->n_extents && i < SHMS_MAX_EXT; i++) {
        shms_ext_ent_t *E = &H->ext[i];
        if (E->state != SHMS_EXT_READY || E->removed)
            continue;
        if (h->base[i] && nattch(E->shmid) >= main) {
            shmctl((int)E->shmid, IPC_RMID, NULL);
            shms_store64(&E->removed, 1);
        } else {
            left++;
        }
    }
    H->unsettled = left;
}

void shms_heap_retire(shms_heap_t *h)
{
    shms_heap_hdr_t *H = h->hdr;
    uint64_t i, n = 0;
    H->flags |= SHMS_F_ANONYMOUS;
    for (i = 1; i < H->n_extents && i < SHMS_MAX_EXT; i++)
        n += H->ext[i].state == SHMS_EXT_READY && !H->ext[i].removed;
    H->unsettled = n;
    /* No settling here: the caller's handle may have attached extents just
     * for this, and would be counted as a user; the next lock settles. */
}

/* Before this process detaches an ANONYMOUS heap's main segment: if it is
 * the last process attached, remove the extents not yet settled. */
void shms_heap_last_detach(shms_heap_t *h)
{
    if ((h->hdr->flags & SHMS_F_ANONYMOUS) && h->main_shmid >= 0 &&
        nattch(h->main_shmid) <= 1)
        shms_heap_destroy_extents(h);
}

/* Remove the segment a dead creator left PENDING in slot i, if it is ours. */
static void remove_pending(shms_heap_hdr_t *H, unsigned i)
{
    shms_ext_ent_t *E = &H->ext[i];
    struct shmid_ds ds;
    int id = shmget((key_t)E->key, 0, 0);
    if (id >= 0 && shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_cpid == (pid_t)E->pid &&
        ds.shm_segsz == E->size)
        shmctl(id, IPC_RMID, NULL);
}

int shms_ext_resolve_pending(shms_heap_t *h)
{
    shms_heap_hdr_t *H = h->hdr;
    unsigned i, n = 0;
    for (i = 1; i < H->n_extents && i < SHMS_MAX_EXT; i++) {
        if (H->ext[i].state != SHMS_EXT_PENDING)
            continue;
        remove_pending(H, i);
        detach_local(h, i);
        shms_store64(&H->ext[i].state, SHMS_EXT_FREE);
        n++;
    }
    if (n)
        shms_store64(&H->generation, H->generation + 1);
    return (int)n;
}

/* Called by whoever removes the main segment: IPC_RMID every extent that
 * is still ours.  Not locked: the heap is being destroyed. */
int shms_heap_destroy_extents(shms_heap_t *h)
{
    shms_heap_hdr_t *H = h->hdr;
    unsigned i;
    void *p;
    for (i = 1; i < H->n_extents && i < SHMS_MAX_EXT; i++) {
        shms_ext_ent_t *E = &H->ext[i];
        if (E->state == SHMS_EXT_PENDING) {
            remove_pending(H, i);
            continue;
        }
        if (E->state != SHMS_EXT_READY || E->removed)
            continue;                   /* settled anonymous extents are RMID'd */
        if (h->base[i]) {               /* attached here: surely ours */
            shmctl((int)E->shmid, IPC_RMID, NULL);
            continue;
        }
        p = shmat((int)E->shmid, NULL, SHM_RDONLY);
        if (p == (void *)-1)
            continue;                   /* already gone */
        if (verify_ext(h, i, p))
            shmctl((int)E->shmid, IPC_RMID, NULL);
        shmdt(p);
    }
    return 0;
}

/* For gc: 1 if p starts with a finished extent header; *main = the shmid
 * of its heap's main segment, or -1 if unknown. */
int shms_ext_probe(const void *p, int64_t *main)
{
    const shms_ext_hdr_t *x = (const shms_ext_hdr_t *)p;
    if (memcmp(x->magic, SHMS_EXT_MAGIC, 8) != 0)
        return 0;
    *main = x->main ? (int64_t)(x->main - 1) : -1;
    return 1;
}

void shms_heap_close(shms_heap_t *h)
{
    unsigned i;
    if (!h)
        return;
    for (i = 1; i < SHMS_MAX_EXT; i++)
        detach_local(h, i);
    free(h);
}
