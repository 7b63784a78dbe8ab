/* cffi declarations for sync.c (see its opening comment). */
#define SHMS_EUNKNOWN ...
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

