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
#include <limits.h>

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
int shms_unmap_reap_on(void *addr, int64_t shmid, uint64_t token, const void *heap,
                       uint64_t heap_size);
void shms_unmap(void *addr);
int shms_populate(void *addr, uint64_t len);
uint64_t shms_atomic_add(void *addr, uint64_t v);
int shms_stat(int64_t shmid, shms_stat_t *out);
int shms_set(int64_t shmid, int64_t uid, int64_t gid, int64_t mode);
int shms_rmid(int64_t shmid);
int shms_memlock(int64_t shmid, int lock);
int shms_limits(shms_limits_t *out);
int shms_list_ids(int64_t *ids, int cap, int *n_out);

/* ---- named.c ---- */
#define SHMS_RECORD_MAX 256     /* naming/keys.py RECORD_SIZE */
#define SHMS_NAMED_FIELDS 33    /* the int64_t words shms_named_open fills (named.c) */
#define SHMS_NAMED_STATUS 32    /* ... the last: its result, as the allocator left it */
#define SHMS_NAMED_SLOW (-1)
#define SHMS_NAME_MAX 255       /* naming/header.py _MAX_NAME */
#define SHMS_KIND_MAX 16        /* the kind's bytes in the header */
/* What an open by name looks for (named.c): the project directory, the key
 * file, and the header the segment must carry (name, kind); the caller's
 * IPC namespace and PID namespace (0: unknown). */
typedef struct {
    const char *dir;            /* the caller's: alive until its allocation ran */
    const char *path;
    const char *name;
    const char *kind;
    int readonly;
    int64_t ipcns;
    uint64_t pidns;
} shms_named_req_t;
int shms_named_open(const shms_named_req_t *r, int64_t *out);
void shms_named_release(void *words);
void *shms_named_words(size_t size);
void shms_named_free(void *words);
int shms_open_fd(const char *path, int flags, int mode, void *words);

/* ---- owned_map.c ---- */
#define SHMS_MAP_NOT_RUN (-2)   /* a request's status before its allocation ran it */
int64_t shms_map_shmat(int64_t shmid, int readonly, int64_t *status);
int64_t shms_map_named(const char *dir, const char *path, const char *name, const char *kind,
                       int readonly, int64_t ipcns, uint64_t pidns, void *out);
void *shms_map_alloc(size_t ticket);

/* ---- lock.c ---- */
size_t shms_mutex_size(void);
int shms_mutex_init(void *m);
int shms_mutex_lock(void *m, int64_t timeout_ns);
int shms_mutex_consistent(void *m);
int shms_mutex_unlock(void *m);
int shms_mutex_destroy(void *m);
int64_t shms_mutex_owner(const void *m);
int shms_mutex_kind_ok(const void *m);

/* ---- heap.c, alloc.c, extent*.c, recover.c, mark.c, check.c, dict*.c
 *      (internals: heap_int.h) ---- */
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
#define SHMS_ENOKEY       1008  /* no extent key of this heap is free (extent.c) */
#define SHMS_EUNKNOWN     1009  /* sync.c: a holder's process table is not known yet */
#define SHMS_EGROW        1011  /* the hot store would create an extent (dict.c) */
#define SHMS_ENOSPLIT     1012  /* the value is not stored split (dict_split.c) */

#define SHMS_F_ANONYMOUS  1u

typedef struct shms_heap shms_heap_t;

size_t shms_heap_header_size(void);
int  shms_heap_create(void *base, uint64_t size, uint32_t mode, uint32_t flags,
                      shms_heap_t **out);
int  shms_heap_open(void *base, uint64_t size, shms_heap_t **out);
void shms_heap_close(shms_heap_t *h);
void shms_heap_free(shms_heap_t *h);
/* Bumped in every forked child, once a handle was made (heap.c; heap_int.h,
 * calls inside a handle). */
extern uint32_t shms_fork_generation;
int  shms_heap_bind(shms_heap_t *h, int64_t shmid, void *addr);
int  shms_heap_destroy_extents(shms_heap_t *h);
uint64_t shms_heap_token(shms_heap_t *h);
uint64_t shms_heap_last_grow(shms_heap_t *h);
uint64_t shms_heap_root_ref(shms_heap_t *h);
int  shms_ext_reap(int64_t main_shmid, uint64_t token, int force);
int  shms_ext_candidates(int64_t main_shmid, int32_t *ids, unsigned cap);
int  shms_heap_never_grew(const void *base, uint64_t size);
int  shms_ext_reap_detached(int64_t main_shmid, uint64_t token, int fresh);
int  shms_ext_sweep(int64_t shmid, int dry_run, int64_t *main_out);
void shms_test_fail_point(int point);
void shms_test_idx_mask(uint64_t mask);
int  shms_heap_lock(shms_heap_t *h, int64_t timeout_ns);
int  shms_heap_unlock(shms_heap_t *h);
int  shms_heap_sync_extents(shms_heap_t *h);
int64_t shms_heap_lock_owner(shms_heap_t *h);
int  shms_heap_rebuild(shms_heap_t *h, int held, int64_t timeout_ns);
int  shms_heap_check(shms_heap_t *h, char *msg, size_t cap, int held, int64_t timeout_ns);
uint64_t shms_heap_modcount(shms_heap_t *h);
const volatile uint64_t *shms_heap_modcount_ptr(shms_heap_t *h);
const volatile uint64_t *shms_heap_n_extents_ptr(shms_heap_t *h);
int shms_heap_wait_change(shms_heap_t *h, uint64_t seen, int64_t timeout_ns);
uint64_t shms_heap_recoveries(shms_heap_t *h);
int  shms_heap_stats(shms_heap_t *h, uint64_t *out, int n, int held, int64_t timeout_ns);

/* Version stripes of a dict's read cache (dict.c, READ CACHE). */
#define SHMS_DICT_NVER_BITS 10
#define SHMS_DICT_NVER (1ULL << SHMS_DICT_NVER_BITS)
int shms_dict_get(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns);
int shms_dict_set(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  const char *val, uint64_t vlen, int only_if_absent, uint64_t *res,
                  int held, int64_t timeout_ns);
int shms_dict_pop(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                  char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns);
int shms_dict_len(shms_heap_t *h, uint64_t *res, int held, int64_t timeout_ns);
int shms_dict_clear(shms_heap_t *h, int held, int64_t timeout_ns);
int shms_dict_store(shms_heap_t *h, const char *key, uint64_t klen, const char *val,
                    uint64_t vlen);
int shms_dict_fetch(shms_heap_t *h, const char *key, uint64_t klen, char *out, uint64_t cap,
                    uint64_t *res);
int shms_dict_store_try(shms_heap_t *h, const char *key, uint64_t klen, const char *val,
                        uint64_t vlen, int held);
int shms_dict_store_bytes_try(shms_heap_t *h, const char *key, uint64_t klen, const char *b,
                              uint64_t n, int held);
/* shms_dict_set of the pickle of the n bytes at b (dict_hot.c; for queue.c). */
int shms_dict_set_bytes(shms_heap_t *h, const char *key, uint64_t klen, const char *b,
                        uint64_t n, uint64_t *res, int held, int64_t timeout_ns);
/* Large buffer values in one copy each way (dict_split.c).  shms_split_copy:
 * if the vlen bytes at val are a split value, its data into raw and the rest
 * into out, res[0..3] as for shms_dict_fetch_split; SHMS_ENOSPLIT if not. */
int shms_split_copy(const char *val, uint64_t vlen, char *out, uint64_t cap, char *raw,
                    uint64_t raw_cap, uint64_t *res);
int shms_dict_fetch_split(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                          char *out, uint64_t cap, char *raw, uint64_t raw_cap, uint64_t *res,
                          int held, int64_t timeout_ns);
int shms_dict_set_parts(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                        const char *head, uint64_t hlen, const char *val, uint64_t vlen,
                        const char *tail, uint64_t tlen, uint64_t *res, int held,
                        int64_t timeout_ns);
/* Under the heap lock: key's value handed to cb, then deleted (dict.c). */
typedef int (*shms_take_cb)(void *ctx, const char *val, uint64_t vlen);
int shms_dict_take(shms_heap_t *h, const char *key, uint64_t klen, shms_take_cb cb, void *ctx);
int shms_dict_take_try(shms_heap_t *h, const char *key, uint64_t klen, shms_take_cb cb,
                       void *ctx, int held);
/* dict_hot.c: the value of key handed to cb under the lock, tried once. */
typedef int (*shms_peek_cb)(void *ctx, const char *val, uint64_t vlen, uint64_t stripe,
                            uint64_t version);
int shms_dict_peek(shms_heap_t *h, const char *key, uint64_t klen, shms_peek_cb cb,
                   void *ctx, int held);
int shms_dict_versions(shms_heap_t *h, const volatile uint64_t **out, int held,
                       int64_t timeout_ns);
int shms_dict_popitem(shms_heap_t *h, char *out, uint64_t cap, uint64_t *res,
                      int held, int64_t timeout_ns);
int shms_dict_scan(shms_heap_t *h, int64_t after_seq, int reverse, int values,
                   char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns);
uint64_t shms_hash64(const void *p, uint64_t n, uint64_t seed);

/* ---- guard.c: which thread of this process holds a shared lock ---- */
#define SHMS_GUARD_HEAP   1     /* target is a shms_heap_t (shms_heap_lock) */
#define SHMS_GUARD_MUTEX  2     /* target is a bare robust mutex */
#define SHMS_ECLOSED      1010  /* the guard's target was closed (object detached) */

typedef struct shms_guard {
    void *target;               /* NULL once closed */
    int kind;                   /* SHMS_GUARD_HEAP or SHMS_GUARD_MUTEX */
    uint64_t owner;             /* pthread_self() of the holding thread, 0: none */
    uint64_t depth;             /* reentrant depth of the holder */
} shms_guard_t;

void shms_guard_init(shms_guard_t *g, int kind, void *target);
void shms_guard_close(shms_guard_t *g);
int  shms_guard_acquire(shms_guard_t *g, int64_t timeout_ns, int64_t *ticket);
void shms_guard_undo(shms_guard_t *g, int64_t *ticket);
int  shms_guard_release(shms_guard_t *g);
int  shms_guard_held(shms_guard_t *g);
void shms_guard_forget(shms_guard_t *g);
int64_t shms_guard_owner_tid(shms_guard_t *g);
/* ---- proc.c: the process table (liveness by robust mutex) ---- */
uint32_t shms_proc_slots(uint64_t size);
int shms_proc_check(void *table);
int shms_proc_register(void *table, uint32_t nslots, uint32_t *slot, uint32_t *gen);
int shms_proc_alive(const void *table, uint32_t nslots, uint32_t slot, uint32_t gen);
uint32_t shms_proc_pid(const void *table, uint32_t slot);
void shms_proc_know(uint32_t uid, uint32_t index, const void *table, uint32_t nslots);
int shms_proc_token_alive(uint64_t token);

/* ---- sync.c: records of the sync primitives (cdef/sync.h) ---- */
size_t shms_sync_size(void);
int shms_sync_open(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                   uint32_t kind, uint64_t value, uint64_t bound, void **out, int held,
                   int64_t timeout_ns);
uint64_t shms_sync_recoveries(void *p);
void shms_sync_kick(void *p);
uint32_t shms_sync_sleepers(void *p);
int shms_lock_acquire(void *p, uint32_t kind, uint64_t token, int64_t timeout_ns,
                      uint64_t *other);
int shms_lock_release(void *p, uint32_t kind, uint64_t token, int any);
uint64_t shms_lock_owner(void *p);
int shms_lock_try(void *p, uint32_t kind, uint64_t token);
/* sync_guard.c: take / give back a Lock or a held Semaphore permit in one C call. */
typedef struct shms_sync_guard {
    void *rec;                  /* the record; NULL once closed */
    uint32_t kind;              /* 1 Lock, 3 Semaphore */
    uint64_t token;             /* of the process that last took it */
    uint64_t *state;            /* RLock: {thread, depth}, shared in the process */
} shms_sync_guard_t;
int shms_sync_take(shms_sync_guard_t *g, uint64_t token, int64_t timeout_ns,
                   uint64_t *freed, uint64_t *other, int64_t *ticket);
int shms_sync_undo(shms_sync_guard_t *g, int64_t *ticket);
int shms_sync_exit(void *g);
uint64_t shms_sync_depth(shms_sync_guard_t *g);
uint64_t shms_sync_release_all(shms_sync_guard_t *g);
void shms_sync_set_depth(shms_sync_guard_t *g, uint64_t depth);
void shms_sync_set_me(uint64_t token);
int shms_sync_fast_take(void *g);
int shms_sem_fast_acquire(void *g);
int shms_sem_fast_release(void *g);
int shms_sem_try_hold(void *p, uint64_t token);
uint64_t shms_sync_token_here(void);
int shms_sem_acquire(void *p, uint64_t token, int held, int64_t timeout_ns, uint64_t *freed,
                     uint64_t *other);
int shms_sem_release(void *p, uint64_t token, uint64_t n);
uint64_t shms_sem_value(void *p);
int shms_event_set(void *p, int flag);
int shms_event_wait(void *p, uint64_t gen, int64_t timeout_ns);
uint64_t shms_event_gen(void *p);
int shms_cond_enqueue(void *p, uint64_t token, uint64_t *ticket);
int shms_cond_wait(void *p, int slot, uint64_t ticket, int64_t timeout_ns);
int shms_cond_leave(void *p, int slot, uint64_t ticket);
int shms_cond_notify(void *p, uint64_t n);
uint64_t shms_cond_waiting(void *p);
int shms_barrier_arrive(void *p, uint64_t token, uint64_t *index, uint64_t *gen);
int shms_barrier_pass(void *p);
int shms_barrier_abort(void *p, int reset);
int shms_barrier_wait(void *p, uint64_t gen, int64_t timeout_ns, uint64_t *other);
uint64_t shms_barrier_state(void *p, uint64_t *broken);

/* ---- queue.c: the queue (cdef/queue.h) ---- */
int shms_queue_put(shms_heap_t *h, void *rec, const char *val, uint64_t vlen, int held,
                   int64_t timeout_ns);
int shms_queue_get(shms_heap_t *h, void *rec, char *out, uint64_t cap, char *raw,
                   uint64_t raw_cap, uint64_t *res, int held, int64_t timeout_ns);
int shms_queue_put_parts(shms_heap_t *h, void *rec, const char *head, uint64_t hlen,
                         const char *val, uint64_t vlen, const char *tail, uint64_t tlen,
                         int held, int64_t timeout_ns);
int shms_queue_put_try(shms_heap_t *h, void *rec, const char *val, uint64_t vlen);
int shms_queue_put_bytes_try(shms_heap_t *h, void *rec, const char *b, uint64_t n);
int shms_queue_take(shms_heap_t *h, void *rec, shms_take_cb cb, void *ctx);
int shms_queue_task_done(void *rec);
int shms_queue_join(void *rec, int64_t timeout_ns);
void shms_queue_state(void *rec, uint64_t *out);

/* ---- list.c: the list root kind (cdef/list.h) ---- */
int shms_list_open(shms_heap_t *h, const volatile uint64_t **lenp, int held,
                   int64_t timeout_ns);
int shms_list_len(shms_heap_t *h, uint64_t *res, int held, int64_t timeout_ns);
int shms_list_get(shms_heap_t *h, int64_t i, char *out, uint64_t cap, uint64_t *res, int held,
                  int64_t timeout_ns);
int shms_list_pop(shms_heap_t *h, int64_t i, char *out, uint64_t cap, uint64_t *res, int held,
                  int64_t timeout_ns);
int shms_list_set(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen, uint64_t *res,
                  int held, int64_t timeout_ns);
int shms_list_insert(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen, int held,
                     int64_t timeout_ns);
/* As shms_list_set / shms_list_insert, the value stored as head, val, tail
 * (a split item, dict_split.c: one copy of val, from where it lies). */
int shms_list_set_parts(shms_heap_t *h, int64_t i, const char *head, uint64_t hlen,
                        const char *val, uint64_t vlen, const char *tail, uint64_t tlen,
                        uint64_t *res, int held, int64_t timeout_ns);
int shms_list_insert_parts(shms_heap_t *h, int64_t i, const char *head, uint64_t hlen,
                           const char *val, uint64_t vlen, const char *tail, uint64_t tlen,
                           int held, int64_t timeout_ns);
int shms_list_push(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen);
int shms_list_store(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen);
/* A large item in one copy (list_ops.c): handed to cb under the lock (tried
 * once), or its split data into raw (as shms_dict_fetch_split); with remove,
 * then taken out of the list (a pop). */
int shms_list_peek(shms_heap_t *h, int64_t i, int remove, shms_peek_cb cb, void *ctx);
int shms_list_fetch_split(shms_heap_t *h, int64_t i, int remove, char *out, uint64_t cap,
                          char *raw, uint64_t raw_cap, uint64_t *res, int held,
                          int64_t timeout_ns);
int shms_list_splice(shms_heap_t *h, int64_t start, int64_t stop, const char *vals,
                     const uint64_t *vlens, uint64_t nvals, uint64_t expect, int held,
                     int64_t timeout_ns);
int shms_list_rebuild(shms_heap_t *h, const int64_t *plan, uint64_t m, const char *vals,
                      const uint64_t *vlens, uint64_t nvals, uint64_t expect, int held,
                      int64_t timeout_ns);
int shms_list_clear(shms_heap_t *h, int held, int64_t timeout_ns);
int shms_list_read(shms_heap_t *h, int64_t start, int64_t stop, char *out, uint64_t cap,
                   uint64_t *res, int held, int64_t timeout_ns);

#endif
