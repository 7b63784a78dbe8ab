/* Thin, errno-returning wrappers over the System V shared-memory calls.
 *
 * Why a C layer at all: shmid_ds and shminfo differ between libcs and
 * architectures, so we copy them into our own fixed-width struct here, and
 * Python never sees a platform struct.
 */
#include "shms.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

int shms_ftok(const char *path, int proj_id, int64_t *key_out)
{
    key_t k;
    if (proj_id < 1 || proj_id > 255)
        return EINVAL;
    k = ftok(path, proj_id);
    if (k == (key_t)-1)
        return errno ? errno : EINVAL;
    *key_out = (int64_t)(int32_t)k;
    return 0;
}

int shms_shmget(int64_t key, uint64_t size, int flags, int64_t *shmid_out)
{
    int id = shmget((key_t)key, (size_t)size, flags);
    if (id < 0)
        return errno;
    *shmid_out = id;
    return 0;
}

int shms_shmat(int64_t shmid, int readonly, void **addr_out)
{
    void *p = shmat((int)shmid, NULL, readonly ? SHM_RDONLY : 0);
    if (p == (void *)-1)
        return errno;
    *addr_out = p;
    return 0;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22       /* Linux 5.14 */
#endif

/* Map [addr, addr + len) in one call instead of a page fault per 4 KiB page:
 * System V segments have no fault-around, unlike files mapped with mmap.
 * The range is widened to whole pages.  Pages of shared memory are mapped
 * writable when the attachment is (shmem needs no write notification), so
 * READ serves writers too.  A kernel without MADV_POPULATE_READ (EINVAL) is
 * not an error: the pages fault in as before.  0, or errno. */
int shms_populate(void *addr, uint64_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)addr & ~(page - 1);
    uintptr_t hi = ((uintptr_t)addr + len + page - 1) & ~(page - 1);
    if (len == 0 || madvise((void *)lo, hi - lo, MADV_POPULATE_READ) == 0)
        return 0;
    return errno == EINVAL ? 0 : errno;
}

/* *addr += v atomically (a word of shared memory that several processes
 * bump at once: a plain read-add-write there loses increments). */
uint64_t shms_atomic_add(void *addr, uint64_t v)
{
    return __atomic_add_fetch((uint64_t *)addr, v, __ATOMIC_SEQ_CST);
}

int shms_shmdt(void *addr)
{
    return shmdt(addr) == 0 ? 0 : errno;
}

/* What unmapping a mapping owes: a heap's extents are reaped after its main
 * segment's last detach (shms_ext_reap).  Registered per address by
 * shms_unmap_reap_on, done by shms_unmap -- the C destructor of a mapping
 * (ffi.gc), so that no Python-level interrupt (a signal handler that raises,
 * which can land inside any Python finalizer) can skip the shmdt. */
typedef struct reap_s {
    void *addr;
    int64_t shmid;
    uint64_t token;
    const void *heap;           /* its header, in the mapping: read before shmdt */
    uint64_t heap_size;
    struct reap_s *next;
} reap_t;
static reap_t *reaps;
static pthread_mutex_t reaps_mu = PTHREAD_MUTEX_INITIALIZER;

static void reaps_child(void) { pthread_mutex_init(&reaps_mu, NULL); }
__attribute__((constructor)) static void reaps_init(void)
{
    pthread_atfork(NULL, NULL, reaps_child);  /* a thread may hold it at fork */
}

int shms_unmap_reap_on(void *addr, int64_t shmid, uint64_t token, const void *heap,
                       uint64_t heap_size)
{
    reap_t *r;
    int rc = 0;
    pthread_mutex_lock(&reaps_mu);
    for (r = reaps; r; r = r->next)
        if (r->addr == addr)
            break;
    if (!r) {
        r = malloc(sizeof *r);
        if (r) {
            r->addr = addr;
            r->shmid = shmid;
            r->token = token;
            r->heap = heap;
            r->heap_size = heap_size;
            r->next = reaps;
            reaps = r;
        } else
            rc = ENOMEM;
    }
    pthread_mutex_unlock(&reaps_mu);
    return rc;
}

void shms_unmap(void *addr)
{
    reap_t *r = NULL, **pp;
    pthread_mutex_lock(&reaps_mu);
    for (pp = &reaps; *pp; pp = &(*pp)->next)
        if ((*pp)->addr == addr) {
            r = *pp;
            *pp = r->next;
            break;
        }
    pthread_mutex_unlock(&reaps_mu);
    {
        int fresh = r && shms_heap_never_grew(r->heap, r->heap_size);
        shmdt(addr);
        if (r) {
            shms_ext_reap_detached(r->shmid, r->token, fresh);
            free(r);
        }
    }
}

int shms_stat(int64_t shmid, shms_stat_t *out)
{
    struct shmid_ds ds;
    if (shmctl((int)shmid, IPC_STAT, &ds) != 0)
        return errno;
    memset(out, 0, sizeof *out);
    out->key = (int64_t)(int32_t)ds.shm_perm.__key;
    out->shmid = shmid;
    out->size = ds.shm_segsz;
    out->uid = ds.shm_perm.uid;
    out->gid = ds.shm_perm.gid;
    out->cuid = ds.shm_perm.cuid;
    out->cgid = ds.shm_perm.cgid;
    out->mode = ds.shm_perm.mode & 0777;
#ifdef SHM_DEST
    out->dest = (ds.shm_perm.mode & SHM_DEST) ? 1 : 0;
#endif
#ifdef SHM_LOCKED
    out->locked = (ds.shm_perm.mode & SHM_LOCKED) ? 1 : 0;
#endif
    out->cpid = ds.shm_cpid;
    out->lpid = ds.shm_lpid;
    out->nattch = ds.shm_nattch;
    out->atime = ds.shm_atime;
    out->dtime = ds.shm_dtime;
    out->ctime = ds.shm_ctime;
    return 0;
}

int shms_set(int64_t shmid, int64_t uid, int64_t gid, int64_t mode)
{
    /* IPC_SET takes uid, gid and mode together: read the current values
     * first so that a caller may change just one of them (-1 = keep). */
    struct shmid_ds ds;
    if (shmctl((int)shmid, IPC_STAT, &ds) != 0)
        return errno;
    if (uid >= 0)
        ds.shm_perm.uid = (uid_t)uid;
    if (gid >= 0)
        ds.shm_perm.gid = (gid_t)gid;
    if (mode >= 0)
        ds.shm_perm.mode = (ds.shm_perm.mode & ~0777) | ((unsigned)mode & 0777);
    if (shmctl((int)shmid, IPC_SET, &ds) != 0)
        return errno;
    return 0;
}

int shms_rmid(int64_t shmid)
{
    return shmctl((int)shmid, IPC_RMID, NULL) == 0 ? 0 : errno;
}

int shms_memlock(int64_t shmid, int lock)
{
    return shmctl((int)shmid, lock ? SHM_LOCK : SHM_UNLOCK, NULL) == 0 ? 0 : errno;
}

int shms_limits(shms_limits_t *out)
{
    struct shminfo info;
    struct shm_info usage;
    long page = sysconf(_SC_PAGESIZE);
    memset(out, 0, sizeof *out);
    /* IPC_INFO and SHM_INFO are Linux extensions: the "shmid_ds *" argument
     * really points to a struct shminfo / shm_info. */
    if (shmctl(0, IPC_INFO, (struct shmid_ds *)(void *)&info) < 0)
        return errno;
    out->shmmax = info.shmmax;
    out->shmmin = info.shmmin;
    out->shmmni = info.shmmni;
    out->shmseg = info.shmseg;
    out->shmall = info.shmall;
    if (shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&usage) < 0)
        return errno;
    out->used_ids = (uint64_t)usage.used_ids;
    out->shm_tot = usage.shm_tot;
    out->shm_rss = usage.shm_rss;
    out->shm_swp = usage.shm_swp;
    out->page_size = page > 0 ? (uint64_t)page : 4096;
    return 0;
}

int shms_list_ids(int64_t *ids, int cap, int *n_out)
{
    /* SHM_INFO returns the highest used index; SHM_STAT_ANY (or SHM_STAT)
     * turns an index into a shmid.  This lists segments without parsing
     * /proc/sysvipc/shm. */
    struct shm_info usage;
    struct shmid_ds ds;
    int maxidx, i, n = 0;
    maxidx = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&usage);
    if (maxidx < 0)
        return errno;
    for (i = 0; i <= maxidx; i++) {
#ifdef SHM_STAT_ANY
        int id = shmctl(i, SHM_STAT_ANY, &ds);
#else
        int id = shmctl(i, SHM_STAT, &ds);
#endif
        if (id < 0)
            continue;
        if (n < cap)
            ids[n] = id;
        n++;
    }
    *n_out = n;
    return 0;
}
