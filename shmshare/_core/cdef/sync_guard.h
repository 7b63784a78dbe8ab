/* cffi declarations for sync_guard.c (see its opening comment). */
typedef struct shms_sync_guard {
    void *rec; uint32_t kind; uint64_t token; uint64_t *state;
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
