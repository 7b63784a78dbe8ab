/* cffi declarations for heap.c, alloc.c, extent*.c, recover.c, mark.c, check.c, dict*.c
 * (see src/heap_int.h and the comment blocks of those files). */
#define SHMS_RECOVERED ...
#define SHMS_ECORRUPT ...
#define SHMS_ETOOSMALL ...
#define SHMS_ENOTFOUND ...
#define SHMS_EBADHEAP ...
#define SHMS_ETOOMANY ...
#define SHMS_EWRONGKIND ...
#define SHMS_EEXTGONE ...
#define SHMS_ENOKEY ...
#define SHMS_EGROW ...
#define SHMS_ENOSPLIT ...
#define SHMS_F_ANONYMOUS ...
#define SHMS_MAX_EXT ...
#define SHMS_DICT_NVER ...

typedef struct shms_heap shms_heap_t;

size_t shms_heap_header_size(void);
int  shms_heap_create(void *base, uint64_t size, uint32_t mode, uint32_t flags,
                      shms_heap_t **out);
int  shms_heap_open(void *base, uint64_t size, shms_heap_t **out);
void shms_heap_close(shms_heap_t *h);
void shms_heap_free(shms_heap_t *h);
/* Bumped in every forked child (heap.c), once a handle was made. */
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
int shms_dict_fetch_split(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                          char *out, uint64_t cap, char *raw, uint64_t raw_cap, uint64_t *res,
                          int held, int64_t timeout_ns);
int shms_dict_set_parts(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                        const char *head, uint64_t hlen, const char *val, uint64_t vlen,
                        const char *tail, uint64_t tlen, uint64_t *res, int held,
                        int64_t timeout_ns);
typedef int (*shms_peek_cb)(void *, const char *, uint64_t, uint64_t, uint64_t);
int shms_dict_peek(shms_heap_t *h, const char *key, uint64_t klen, shms_peek_cb cb,
                   void *ctx, int held);
int shms_dict_versions(shms_heap_t *h, const volatile uint64_t **out, int held,
                       int64_t timeout_ns);
int shms_dict_popitem(shms_heap_t *h, char *out, uint64_t cap, uint64_t *res,
                      int held, int64_t timeout_ns);
int shms_dict_scan(shms_heap_t *h, int64_t after_seq, int reverse, int values,
                   char *out, uint64_t cap, uint64_t *res, int held, int64_t timeout_ns);
uint64_t shms_hash64(const void *p, uint64_t n, uint64_t seed);
