/* cffi declarations for queue.c (see its opening comment). */
int shms_queue_put(shms_heap_t *h, void *rec, const char *val, uint64_t vlen, int held,
                   int64_t timeout_ns);
int shms_queue_get(shms_heap_t *h, void *rec, char *out, uint64_t cap, char *raw,
                   uint64_t raw_cap, uint64_t *res, int held, int64_t timeout_ns);
int shms_queue_put_parts(shms_heap_t *h, void *rec, const char *head, uint64_t hlen,
                         const char *val, uint64_t vlen, const char *tail, uint64_t tlen,
                         int held, int64_t timeout_ns);
typedef int (*shms_take_cb)(void *, const char *, uint64_t);
int shms_queue_put_try(shms_heap_t *h, void *rec, const char *val, uint64_t vlen);
int shms_queue_put_bytes_try(shms_heap_t *h, void *rec, const char *b, uint64_t n);
int shms_queue_take(shms_heap_t *h, void *rec, shms_take_cb cb, void *ctx);
/* A dict's one-call pop (dict_hot.c), here beside the callback type it takes. */
int shms_dict_take_try(shms_heap_t *h, const char *key, uint64_t klen, shms_take_cb cb,
                       void *ctx, int held);
int shms_queue_task_done(void *rec);
int shms_queue_join(void *rec, int64_t timeout_ns);
void shms_queue_state(void *rec, uint64_t *out);
