/* Internal declarations shared by the C files of the shmshare core.
 *
 * Every exported symbol carries the shms_ prefix: glibc >= 2.34 exports C11
 * <threads.h> functions such as mtx_lock, and a helper of ours with such a
 * plain name would silently bind to glibc's non-robust version instead.
 *
 * Convention: functions return 0 or an errno value (never -1 + errno), so
 * the Python layer never depends on errno surviving between calls.
 */
#ifndef SHMS_H
#define SHMS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- segment.c ---- */
typedef struct {
    int64_t key;
    int64_t shmid;
    uint64_t size;
    uint32_t uid, gid, cuid, cgid;
    uint32_t mode;          /* permission bits only (0777) */
    int32_t  dest;          /* 1 if marked for destruction (SHM_DEST) */
    int32_t  locked;        /* 1 if SHM_LOCKed in memory */
    int64_t  cpid, lpid;
    uint64_t nattch;
    int64_t  atime, dtime, ctime;
} shms_stat_t;

typedef struct {
    uint64_t shmmax, shmmin, shmmni, shmseg, shmall;
    uint64_t used_ids, shm_tot, shm_rss, shm_swp;
    uint64_t page_size;
} shms_limits_t;

int shms_ftok(const char *path, int proj_id, int64_t *key_out);
int shms_shmget(int64_t key, uint64_t size, int flags, int64_t *shmid_out);
int shms_shmat(int64_t shmid, int readonly, void **addr_out);
int shms_shmdt(void *addr);
int shms_stat(int64_t shmid, shms_stat_t *out);
int shms_set(int64_t shmid, int64_t uid, int64_t gid, int64_t mode);
int shms_rmid(int64_t shmid);
int shms_memlock(int64_t shmid, int lock);
int shms_limits(shms_limits_t *out);
int shms_list_ids(int64_t *ids, int cap, int *n_out);

/* ---- lock.c ---- */
size_t shms_mutex_size(void);
int shms_mutex_init(void *m);
int shms_mutex_lock(void *m, int64_t timeout_ns);
int shms_mutex_consistent(void *m);
int shms_mutex_unlock(void *m);
int shms_mutex_destroy(void *m);

#endif
