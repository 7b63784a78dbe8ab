/* cffi declarations for list.c (see its opening comment and list_int.h). */
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
int shms_list_fetch_split(shms_heap_t *h, int64_t i, int remove, char *out, uint64_t cap,
                          char *raw, uint64_t raw_cap, uint64_t *res, int held,
                          int64_t timeout_ns);
int shms_list_peek(shms_heap_t *h, int64_t i, int remove, shms_peek_cb cb, void *ctx);
int shms_list_insert_parts(shms_heap_t *h, int64_t i, const char *head, uint64_t hlen,
                           const char *val, uint64_t vlen, const char *tail, uint64_t tlen,
                           int held, int64_t timeout_ns);
int shms_list_push(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen);
int shms_list_store(shms_heap_t *h, int64_t i, const char *val, uint64_t vlen);
int shms_list_splice(shms_heap_t *h, int64_t start, int64_t stop, const char *vals,
                     const uint64_t *vlens, uint64_t nvals, uint64_t expect, int held,
                     int64_t timeout_ns);
int shms_list_rebuild(shms_heap_t *h, const int64_t *plan, uint64_t m, const char *vals,
                      const uint64_t *vlens, uint64_t nvals, uint64_t expect, int held,
                      int64_t timeout_ns);
int shms_list_clear(shms_heap_t *h, int held, int64_t timeout_ns);
int shms_list_read(shms_heap_t *h, int64_t start, int64_t stop, char *out, uint64_t cap,
                   uint64_t *res, int held, int64_t timeout_ns);
