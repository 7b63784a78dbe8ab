/* cffi declarations for lock.c. */
size_t shms_mutex_size(void);
int shms_mutex_init(void *m);
int shms_mutex_lock(void *m, int64_t timeout_ns);
int shms_mutex_consistent(void *m);
int shms_mutex_unlock(void *m);
int shms_mutex_destroy(void *m);
int64_t shms_mutex_owner(const void *m);
int shms_mutex_kind_ok(const void *m);
