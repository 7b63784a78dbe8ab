/* cffi declarations for guard.c. */
#define SHMS_GUARD_HEAP ...
#define SHMS_GUARD_MUTEX ...
#define SHMS_ECLOSED ...
typedef struct shms_guard { ...; } shms_guard_t;
void shms_guard_init(shms_guard_t *g, int kind, void *target);
void shms_guard_close(shms_guard_t *g);
int  shms_guard_acquire(shms_guard_t *g, int64_t timeout_ns, int64_t *ticket);
void shms_guard_undo(shms_guard_t *g, int64_t *ticket);
int  shms_guard_release(shms_guard_t *g);
int  shms_guard_held(shms_guard_t *g);
void shms_guard_forget(shms_guard_t *g);
int64_t shms_guard_owner_tid(shms_guard_t *g);
