/* Large buffer values in one copy each way (objects/codec.py split_pickle,
 * _core/heap_dict.py dict_store_parts and _read_split).
 *
 * pickle.dumps(a, 5) of a 10 MiB numpy array copies its data into a fresh
 * 10 MiB bytes object, the store copies that into the heap, and a read copies
 * the heap's bytes out and pickle.loads copies them once more into the new
 * array.  Instead, the caller pickles the array with its data out of band
 * (buffer_callback) and hands the store the three parts of the ordinary
 * in-band pickle: the head, the data as it lies in the array, the tail.  The
 * value stored is
 *
 *     PROTO 5 | BININT <off> | POP | head... | BYTEARRAY8 <n> | n bytes | tail...
 *
 * where <off> (int32, little-endian) is the offset of the n bytes in the
 * value.  BININT, POP pushes an int and drops it: any unpickler reads the
 * value as the array's ordinary pickle (items(), pop(), the Manager, the CLI,
 * an older shmshare).  A read that knows the layout copies, under the heap
 * lock, the n bytes straight into the buffer that becomes the new array's
 * memory, and the rest, with BYTEARRAY8 <n> replaced by NEXT_BUFFER, into a
 * small one; pickle.loads(rest, buffers=[data]) then builds the same object
 * without copying again (NEXT_BUFFER pushes the bytearray BYTEARRAY8 would
 * have made).  A value that does not have exactly this layout is not split:
 * SHMS_ENOSPLIT, and the caller reads it whole.
 */
#include "dict_int.h"
#include "split.h"

typedef struct {
    shms_dop_t a;
    char *raw;                  /* the data's destination */
    uint64_t raw_cap;
} split_t;

static int fetch_split_body(shms_heap_t *h, void *arg)
{
    split_t *s = arg;
    shms_dop_t *a = &s->a;
    shms_dtab_t *t;
    shms_dblob_t *b;
    int64_t i;
    int rc = shms_dict_entry(h, a->key, a->cmplen, &t, &i);
    a->res[2] = UINT64_MAX;                   /* no stripe: a large value is never cached */
    if (rc)
        return rc;
    b = shms_ptr(h, shms_dents(t)[i].blob);
    return shms_split_copy(shms_dblob_val(b), b->vlen, a->out, a->cap, s->raw, s->raw_cap,
                           a->res);
}

/* See shms.h. */
int shms_split_copy(const char *val, uint64_t vlen, char *out, uint64_t cap, char *raw,
                    uint64_t raw_cap, uint64_t *res)
{
    uint64_t off, n, rest;
    res[0] = vlen;
    res[1] = 0;
    if (!shms_split_at(val, vlen, &off, &n))
        return SHMS_ENOSPLIT;
    rest = shms_split_rest_len(vlen, n);
    res[1] = n;
    if (n > raw_cap || rest > cap)
        return SHMS_ETOOSMALL;
    shms_split_rest(out, val, vlen, off, n);
    memcpy(raw, val + off, n);
    res[3] = rest;
    return 0;
}

/* Read key's split value: the data into raw (raw_cap bytes), the rest, with
 * NEXT_BUFFER in place of BYTEARRAY8 <n>, into out (cap bytes).  res[0]: the
 * stored length; res[1]: the data's; res[3]: the rest's.  SHMS_ENOSPLIT: the
 * value is not split (nothing copied); SHMS_ETOOSMALL: a buffer is too small
 * (res[0], res[1] say how large they must be). */
int shms_dict_fetch_split(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                          char *out, uint64_t cap, char *raw, uint64_t raw_cap, uint64_t *res,
                          int held, int64_t timeout_ns)
{
    split_t s = {.a = {.key = key, .klen = klen, .cmplen = cmplen, .out = out, .cap = cap,
                       .res = res},
                 .raw = raw, .raw_cap = raw_cap};
    return shms_dict_check_key(klen, cmplen) ?: shms_run_op(h, held, timeout_ns,
                                                            fetch_split_body, &s);
}

/* As shms_dict_set, the value stored being head, then val, then tail: one
 * copy of val, from where it lies (a split value: the head ends BYTEARRAY8 <n>). */
int shms_dict_set_parts(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                        const char *head, uint64_t hlen, const char *val, uint64_t vlen,
                        const char *tail, uint64_t tlen, uint64_t *res, int held,
                        int64_t timeout_ns)
{
    shms_dop_t a = {.key = key, .klen = klen, .cmplen = cmplen, .vhead = head, .vhlen = hlen,
                    .val = val, .vlen = vlen, .vtail = tail, .vtlen = tlen, .res = res};
    return shms_dict_check_key(klen, cmplen) ?:
           shms_run_op(h, held, timeout_ns, shms_dict_set_body, &a);
}
