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
int64_t shms_mutex_owner(const void *m);
int shms_mutex_kind_ok(const void *m);

/* ---- heap.c, extent.c, recover.c, dict*.c (internals: heap_int.h) ---- */
#define SHMS_MAX_EXT      64
/* Result codes above the errno range (also declared in cdef/heap.h). */
#define SHMS_RECOVERED    1000  /* lock taken after repairing a dead owner */
#define SHMS_ECORRUPT     1001  /* heap is marked corrupt */
#define SHMS_ETOOSMALL    1002  /* caller buffer too small; needed len set */
#define SHMS_ENOTFOUND    1003  /* key absent / dict empty */
#define SHMS_EBADHEAP     1004  /* bad magic, version or ABI at open */
#define SHMS_ETOOMANY     1005  /* all SHMS_MAX_EXT extent slots in use */
#define SHMS_EWRONGKIND   1006  /* root holds another kind of structure */
#define SHMS_EEXTGONE     1007  /* a READY extent cannot be attached */

#define SHMS_F_ANONYMOUS  1u

typedef struct shms_heap shms_heap_t;

size_t shms_heap_header_size(void);
int  shms_heap_create(void *base, uint64_t size, uint32_t mode, uint32_t flags,
                      shms_heap_t **out);
int  shms_heap_open(void *base, uint64_t size, shms_heap_t **out);
void shms_heap_close(shms_heap_t *h);
void shms_heap_set_main(shms_heap_t *h, int64_t shmid);
int  shms_heap_destroy_extents(shms_heap_t *h);
void shms_heap_retire(shms_heap_t *h);
void shms_heap_last_detach(shms_heap_t *h);
int  shms_ext_probe(const void *p, int64_t *main);
int  shms_heap_lock(shms_heap_t *h, int64_t timeout_ns);
int  shms_heap_unlock(shms_heap_t *h);
int64_t shms_heap_lock_owner(shms_heap_t *h);
int  shms_heap_rebuild(shms_heap_t *h, int held, int64_t timeout_ns);
int  shms_heap_check(shms_heap_t *h, char *msg, size_t cap, int held, int64_t timeout_ns);
uint64_t shms_heap_modcount(shms_heap_t *h);
const volatile uint64_t *shms_heap_modcount_ptr(shms_heap_t *h);
const volatile uint64_t *shms_heap_n_extents_ptr(shms_heap_t *h);
int shms_heap_wait_change(shms_heap_t *h, uint64_t seen, int64_t timeout_ns);
uint64_t shms_heap_recoveries(shms_heap_t *h);
int  shms_heap_stats(shms_heap_t *h, uint64_t *out, int n, int held, int64_t timeout_ns);

int shms_dict_get(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns);
int shms_dict_set(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  const char *val, uint64_t vlen, int only_if_absent, uint64_t *res,
                  int held, int64_t timeout_ns);
int shms_dict_pop(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns);
int shms_dict_len(shms_heap_t *h, uint64_t *res, int held, int64_t timeout_ns);
int shms_dict_clear(shms_heap_t *h, int held, int64_t timeout_ns);
int shms_dict_popitem(shms_heap_t *h, char *out, uint64_t cap, uint64_t *res,
                      int held, int64_t timeout_ns);
int shms_dict_scan(shms_heap_t *h, int64_t after_seq, int reverse, int values,
                   char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns);
uint64_t shms_hash64(const void *p, uint64_t n, uint64_t seed);

#endif
