/* Removing extents: by the last user, by whoever removes the main segment,
 * and by gc.  The protocol and the argument that nothing is ever orphaned
 * unseen are at the top of extent.c ("WHO REMOVES AN EXTENT"); this file only
 * recomputes a heap's keys and recognises what it finds under them.
 */
#include "heap_int.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/shm.h>

/* What a segment found under one of a heap's keys is (extent.c, the top). */
enum { EXT_FOREIGN, EXT_UNFINISHED, EXT_DONE };

static int classify(const void *p, uint64_t size, int64_t *main)
{
    static const char zero[8];
    const shms_ext_hdr_t *x = p;
    *main = -1;
    if (size < SHMS_EXT_HDR + SHMS_MIN_BLOCK)
        return EXT_FOREIGN;
    if (!memcmp(x->magic, SHMS_EXT_MAGIC, 8)) {
        *main = x->main ? (int64_t)(x->main - 1) : -1;
        return EXT_DONE;
    }
    if (!memcmp(x->magic, SHMS_EXT_BEGUN, 8) || !memcmp(x->magic, zero, 8))
        return EXT_UNFINISHED;
    return EXT_FOREIGN;
}

/* A segment of this user that may be an extent: its stat, or -1. */
static int ours(int id, struct shmid_ds *ds)
{
    uid_t me = geteuid();
    if (shmctl(id, IPC_STAT, ds) != 0 || ds->shm_perm.uid != me || ds->shm_perm.cuid != me)
        return -1;
    return 0;
}

static int main_gone(int64_t main)
{
    struct shmid_ds ds;
    return main >= 0 && main <= INT32_MAX && shmctl((int)main, IPC_STAT, &ds) != 0 &&
           (errno == EINVAL || errno == EIDRM);
}

/* The segments at the extent keys of M, found by walking the kernel's table
 * when it holds fewer indexes than M has keys (SHM_INFO: the highest index in
 * use; SHM_STAT_ANY: an index's shmid and key, whatever its permissions, as
 * shmget(key, 0, 0) finds it whatever they are).  A typical table holds a
 * few dozen segments, against 504 keys to probe: removing a heap costs a few
 * syscalls, not 504.  A segment created during the walk may be missed, as it
 * may by the probes (created under a key already probed); the callers'
 * arguments never rely on seeing one (extent.c, the top).  -1: walk not
 * possible or not cheaper (no SHM_STAT_ANY: kernel < 4.17), probe the keys. */
static int scan_indexes(int64_t main, int32_t *ids, unsigned cap)
{
#ifdef SHM_STAT_ANY
    struct shm_info info;
    struct shmid_ds ds;
    int top = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&info), idx, seen = 0;
    unsigned n = 0;
    const int64_t base = (int64_t)(((uint64_t)main & shms_idx_mask) << 9);
    if (top < 0 || top + 1 >= (SHMS_MAX_EXT - 1) * SHMS_KEY_TRIES)
        return -1;
    for (idx = 0; idx <= top; idx++) {
        int id = shmctl(idx, SHM_STAT_ANY, &ds);
        int64_t key;
        if (id < 0)
            continue;                   /* EINVAL: a free index */
        seen++;
        key = (int64_t)ds.shm_perm.__key;
        if ((key & ~(int64_t)0x1FF) == base && ((key >> 3) & 63) && n < cap)
            ids[n++] = id;
    }
    /* Segments in use, none readable: SHM_STAT_ANY is unknown to this kernel. */
    if (!seen && info.used_ids > 0)
        return -1;
    return (int)n;
#else
    (void)main; (void)ids; (void)cap;
    return -1;
#endif
}

/* The segments at the extent keys of M, found by key alone (nothing is
 * attached, so a reader such as 'shmshare ls' changes no nattch).  An entry
 * may be a stale extent of an earlier M' with the same index, or a stranger:
 * only its header can tell (shms_ext_reap, 'shmshare check'). */
int shms_ext_candidates(int64_t main, int32_t *ids, unsigned cap)
{
    unsigned slot, try, n = 0;
    int found;
    if (main < 0 || main > INT32_MAX)
        return 0;
    found = scan_indexes(main, ids, cap);
    if (found >= 0)
        return found;
    for (slot = 1; slot < SHMS_MAX_EXT; slot++)
        for (try = 0; try < SHMS_KEY_TRIES; try++) {
            int id = shmget(shms_ext_key(main, slot, try), 0, 0);
            if (id >= 0 && n < cap)
                ids[n++] = id;
        }
    return (int)n;
}

/* Remove the heap's extents: force when the caller holds main M and no other
 * process does (point 1 at the top of extent.c); else only if M is gone (2).
 * token 0: unknown (a damaged header), then a finished extent is recognised
 * by naming M alone.  Returns how many segments were removed. */
static int reap(int64_t main, uint64_t token, int force);

int shms_ext_reap(int64_t main, uint64_t token, int force)
{
    if (main < 0 || main > INT32_MAX || (!force && !main_gone(main)))
        return 0;
    return reap(main, token, force);
}

/* shms_ext_reap once its checks have passed. */
static int reap(int64_t main, uint64_t token, int force)
{
    int32_t ids[SHMS_MAX_EXT * SHMS_KEY_TRIES];
    int i, count, n = 0;
    count = shms_ext_candidates(main, ids, SHMS_MAX_EXT * SHMS_KEY_TRIES);
    for (i = 0; i < count; i++) {
        struct shmid_ds ds;
        int64_t named;
        int id = ids[i], kind, mine;
        void *p;
        if (ours(id, &ds))
            continue;
        p = shmat(id, NULL, SHM_RDONLY);        /* pins the shmid */
        if (p == (void *)-1)
            continue;
        kind = classify(p, ds.shm_segsz, &named);
        if (kind == EXT_DONE)
            mine = named == main &&
                   (!token || ((const shms_ext_hdr_t *)p)->token == token);
        else    /* force: main is ours alone, so nobody grows it */
            mine = kind == EXT_UNFINISHED &&
                   shms_key_bits_free((uint64_t)main & shms_idx_mask, force ? main : -1);
        if (mine && shmctl(id, IPC_RMID, NULL) == 0)
            n++;
        shmdt(p);
    }
    return n;
}

/* 1 if the heap at BASE (SIZE bytes, its main segment's) is whole and never
 * grew: every slot is counted in n_extents before its shmget (commit point
 * A, extent.c), so read after the main segment's IPC_RMID, 1 means no extent
 * existed then for the force reap (point 1) to find.  One grown later, by a
 * process that attached by shmid since, is the last detacher's to reap
 * (point 2), as it always was.  0: grown, or not a heap we can read. */
int shms_heap_never_grew(const void *base, uint64_t size)
{
    const shms_heap_hdr_t *H = base;
    uint64_t n;
    if (!base || size < shms_heap_header_size() || memcmp(H->magic, SHMS_HEAP_MAGIC, 8) ||
        H->header_size != (uint32_t)shms_heap_header_size() || H->heap_size != size ||
        H->ident_sum != shms_ident_sum(H))
        return 0;
    n = __atomic_load_n(&H->n_extents, __ATOMIC_ACQUIRE);
    return n == 1;
}

/* Point 2, by a process that just detached main M: reap if M is gone.
 * FRESH: M's header counted one slot right before that shmdt.  An extent
 * grown since was grown by a process attached beside this one (so under a
 * key: no sole user's), in slot 1 first (the lowest free; slot 2 only while
 * slot 1 is ready, and a ready slot's segment goes only with the heap).  So
 * when none of slot 1's keys holds a segment, nothing is left to reap, and
 * the walk of the kernel's table is skipped; any segment there (even
 * another heap's, KEYS MAY BE SHARED) makes it reap in full. */
int shms_ext_reap_detached(int64_t main, uint64_t token, int fresh)
{
    unsigned try;
    if (main < 0 || main > INT32_MAX || !main_gone(main))
        return 0;
    for (try = 0; fresh && try < SHMS_KEY_TRIES; try++)
        if (shmget(shms_ext_key(main, 1, try), 0, 0) >= 0 || errno != ENOENT)
            fresh = 0;
    return fresh ? 0 : reap(main, token, 0);       /* M is gone: checked above */
}

/* gc (point 3): 1 if shmid is an extent of this user whose heap is gone
 * (removed unless dry_run; *main_out: the main it names, or -1), else 0. */
int shms_ext_sweep(int64_t shmid, int dry_run, int64_t *main_out)
{
    struct shmid_ds ds;
    key_t key;
    int64_t named;
    int kind, orphan;
    void *p;
    *main_out = -1;
    if (shmid < 0 || shmid > INT32_MAX || ours((int)shmid, &ds))
        return 0;
    key = ds.shm_perm.__key;
    if (key <= 0 || key >= (1 << 24) || !((key >> 3) & 63) || ds.shm_nattch)
        return 0;
    p = shmat((int)shmid, NULL, SHM_RDONLY);        /* pins the shmid */
    if (p == (void *)-1)
        return 0;
    kind = classify(p, ds.shm_segsz, &named);
    if (kind == EXT_DONE)
        orphan = main_gone(named);
    else
        orphan = kind == EXT_UNFINISHED && shms_key_bits_free((uint64_t)key >> 9, -1);
    if (orphan && !dry_run)
        orphan = shmctl((int)shmid, IPC_RMID, NULL) == 0;
    shmdt(p);
    *main_out = kind == EXT_DONE ? named : -1;
    return orphan;
}

/* The segment a dead creator left PENDING in table entry E: removed if it is
 * still under E's key, made by E's pid with E's size, and not a finished
 * extent of another heap (keys are shared by heaps whose main shmids agree
 * in the key bits, and one process may have grown both). */
void shms_ext_remove_pending(int64_t main, uint64_t token, const shms_ext_ent_t *E)
{
    struct shmid_ds ds;
    int64_t named;
    int id = shmget((key_t)E->key, 0, 0), kind;
    void *p;
    if (id < 0 || shmctl(id, IPC_STAT, &ds) != 0 || ds.shm_cpid != (pid_t)E->pid ||
        ds.shm_segsz != E->size)
        return;
    p = shmat(id, NULL, SHM_RDONLY);                /* pins the shmid */
    if (p == (void *)-1)
        return;
    kind = classify(p, ds.shm_segsz, &named);
    if (kind == EXT_UNFINISHED ||
        (kind == EXT_DONE && named == main && ((const shms_ext_hdr_t *)p)->token == token))
        shmctl(id, IPC_RMID, NULL);
    shmdt(p);
}

/* Called by whoever removes the main segment while no other process is
 * attached: IPC_RMID every extent.  Not locked: the heap is being destroyed. */
int shms_heap_destroy_extents(shms_heap_t *h)
{
    shms_heap_hdr_t *H = h->hdr;
    unsigned i;
    for (i = 1; i < H->n_extents && i < SHMS_MAX_EXT; i++)
        if (H->ext[i].state == SHMS_EXT_READY && h->base[i])   /* surely ours */
            shmctl((int)H->ext[i].shmid, IPC_RMID, NULL);
    shms_ext_reap(h->main_shmid, H->token, 1);
    return 0;
}
