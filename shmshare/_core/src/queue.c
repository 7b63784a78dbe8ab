/* The queue: items in the heap dict, counters in a sync record, one C call
 * per put or get.
 *
 * Item i (head <= i < tail) is the dict value under the 9-byte key
 * 'Q' + i (little-endian); the record (sync_int.h, kind K_QUEUE) holds head,
 * tail, unfinished and maxsize (`value`).  Every change runs under the heap
 * lock, in one shms_run_op; nobody sleeps holding it.
 *
 * COMMIT POINTS (a process may die at any instruction):
 *   put   item written under key tail; tail := tail+1 (commit); unfinished++.
 *         Killed before the commit: the item is not queued, and the next put
 *         overwrites the key.
 *   get   item copied out (into the caller's buffer, or by the GIL-holding
 *         taker of ext/hotqueue.c straight into the object it returns);
 *         head := head+1 (commit); key head-1 deleted -- the same lookup
 *         (shms_dict_take) -- and key head-2 too (left behind by a get
 *         killed after its commit).
 * So an item is got at most once, and is lost only with the consumer that
 * got it.  unfinished is bumped after the commit: a put killed in between
 * leaves it one short, which only makes join() return earlier by one item.
 *
 * qsize, empty and full read tail and head without any lock.
 *
 * WAKING (unbounded queues; see sync.c's WAITING).  Only getters sleep for
 * items (putters never wait; join() is woken by task_done, for all).  A put
 * wakes one sleeping getter, and only if no wake-up is already on its way:
 * `gen` is 1 from the FUTEX_WAKE that woke a getter until that getter runs
 * again (it clears it on waking, whatever woke it: a getter killed before
 * then leaves it set for one slice at most).  A put that finds it set makes
 * no system call: on 2 cores shared by 8 processes a woken getter may wait
 * long to run, and every put meanwhile used to pay a FUTEX_WAKE that woke
 * nobody.  The item that put left is not forgotten: a getter that gets an
 * item and sees more queued wakes the next sleeper (the same way), so
 * sleepers are woken one by one for as long as items remain.  A get makes
 * no other wake-up: it frees nothing a getter waits for.  Bounded queues
 * (putters and getters asleep on one futex) wake everyone at every change.
 *
 * DAMAGE.  head <= tail always, and tail - head <= maxsize when bounded: a
 * record that breaks either is damaged, and put, get and qsize say so
 * (SHMS_EDAMAGED; qsize UINT64_MAX) instead of "full" forever, "empty", or a
 * count past the bound.
 */
#include "sync_int.h"
#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define QKEY 9

static int q_damaged(uint64_t head, uint64_t tail, uint64_t maxsize)
{
    return head > tail || (maxsize && tail - head > maxsize);
}

static void qkey(char *k, uint64_t i)
{
    k[0] = 'Q';
    memcpy(k + 1, &i, 8);
}

typedef struct {
    sync_rec_t *r;
    shms_heap_t *h;
    const char *val;
    uint64_t vlen;
    int bytes;              /* put: val is a bytes object's payload, stored as its pickle */
    const char *vhead, *vtail;  /* put: stored as vhead, val, vtail (a split item) */
    uint64_t vhlen, vtlen;
    char *out;
    uint64_t cap;
    char *raw;              /* get: where a split item's data goes (dict_split.c) */
    uint64_t raw_cap;
    uint64_t *res;
    int held;
    int64_t lock_ns;
    shms_take_cb take;      /* get: hands the item's bytes on (copy_out, or the caller's) */
    void *take_ctx;
    uint64_t head;          /* get: the item being taken */
} q_arg_t;

static int put_body(shms_heap_t *h, void *p)
{
    q_arg_t *a = p;
    sync_rec_t *r = a->r;
    uint64_t tail = r->tail, res[2];
    char k[QKEY];
    int rc;
    if (q_damaged(r->head, tail, r->value))
        return SHMS_EDAMAGED;
    if (r->value && tail - r->head >= r->value)
        return EAGAIN;                                  /* full */
    qkey(k, tail);
    if (a->vhead)
        rc = shms_dict_set_parts(h, k, QKEY, QKEY, a->vhead, a->vhlen, a->val, a->vlen,
                                 a->vtail, a->vtlen, res, 1, 0);
    else
        rc = a->bytes ? shms_dict_set_bytes(h, k, QKEY, a->val, a->vlen, res, 1, 0)
                      : shms_dict_set(h, k, QKEY, QKEY, a->val, a->vlen, 0, res, 1, 0);
    if (rc)
        return rc;
    __atomic_store_n(&r->tail, tail + 1, __ATOMIC_SEQ_CST);       /* commit */
    __atomic_add_fetch(&r->unfinished, 1, __ATOMIC_SEQ_CST);
    return 0;
}

/* shms_queue_get's taker: the item into the caller's buffer, if it fits; a
 * split item's data into raw, the rest into it (res[1]: the data's length). */
static int copy_out(void *p, const char *val, uint64_t vlen)
{
    q_arg_t *a = p;
    int rc = shms_split_copy(val, vlen, a->out, a->cap, a->raw, a->raw_cap, a->res);
    if (rc != SHMS_ENOSPLIT)
        return rc;
    if (vlen > a->cap)
        return SHMS_ETOOSMALL;                          /* res[0] = length */
    memcpy(a->out, val, vlen);
    return 0;
}

/* Called by shms_dict_take where the item lies: handed on, then committed
 * (the entry is deleted after this returns). */
static int take_item(void *p, const char *val, uint64_t vlen)
{
    q_arg_t *a = p;
    int rc = a->take(a->take_ctx, val, vlen);
    if (rc)
        return rc;                                      /* nothing taken */
    shms_ahead_note(a->h, val + vlen);                  /* the next items lie past it */
    __atomic_store_n(&a->r->head, a->head + 1, __ATOMIC_SEQ_CST);  /* commit */
    return 0;
}

static int get_body(shms_heap_t *h, void *p)
{
    q_arg_t *a = p;
    sync_rec_t *r = a->r;
    uint64_t head = r->head, res[2];
    char k[QKEY];
    int rc;
    if (q_damaged(head, r->tail, r->value))
        return SHMS_EDAMAGED;
    if (head == r->tail)
        return EAGAIN;                                  /* empty */
    qkey(k, head);
    a->head = head;
    rc = shms_dict_take(h, k, QKEY, take_item, a);     /* one lookup: copy, commit, delete */
    if (rc == SHMS_ENOTFOUND)
        return SHMS_EDAMAGED;                           /* a queued item must exist */
    if (rc)
        return rc;
    if (head) {                                         /* a killed get's leftover */
        qkey(k, head - 1);
        shms_dict_pop(h, k, QKEY, QKEY, NULL, 0, res, 1, 0);
    }
    return 0;
}

/* Wake one getter of an unbounded queue, unless a wake-up is on its way. */
static void wake_getter(sync_rec_t *r)
{
    uint64_t idle = 0;
    __atomic_add_fetch(&r->seq, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&r->nwait, __ATOMIC_SEQ_CST) ||
        !__atomic_compare_exchange_n(&r->gen, &idle, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        return;
    /* Nobody asleep yet (a waiter between counting itself and sleeping sees
     * seq moved): no wake-up is on its way after all. */
    if (syscall(SYS_futex, &r->seq, FUTEX_WAKE, 1, NULL, NULL, 0) <= 0)
        __atomic_store_n(&r->gen, 0, __ATOMIC_SEQ_CST);
}

/* grow 0: the heap is never grown (SHMS_EGROW instead: shms_run_op_no_grow). */
static int try_op(sync_rec_t *r, void *p, shms_op_body_t body, int put, int grow)
{
    q_arg_t *a = p;
    /* Full or empty is seen without the lock: no lock taken just to wait.
     * head before tail: a get between the loads only makes tail - head look
     * larger, never head > tail; damage (or that) is judged under the lock. */
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_SEQ_CST);
    uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST);
    if (!q_damaged(head, tail, r->value) &&
        (put ? r->value && tail - head >= r->value : head == tail))
        return EAGAIN;
    return (grow ? shms_run_op : shms_run_op_no_grow)(a->h, a->held, a->lock_ns, body, a);
}

static int try_put(sync_rec_t *r, void *p) { return try_op(r, p, put_body, 1, 1); }
static int try_get(sync_rec_t *r, void *p) { return try_op(r, p, get_body, 0, 1); }

/* The wake-ups a successful put or get owes (WAKING, above). */
static void after_put(sync_rec_t *r)
{
    if (r->value)                       /* bounded: putters may be asleep beside getters */
        shms_sync_wake(r, 1);
    else
        wake_getter(r);
}

static void after_get(sync_rec_t *r)
{
    if (r->value)
        shms_sync_wake(r, 1);
    else if (__atomic_load_n(&r->head, __ATOMIC_SEQ_CST) !=
             __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST))
        wake_getter(r);                 /* more queued: pass the wake-up on */
}

/* A put that waits while full, up to timeout_ns: 0 queued, ETIMEDOUT.  Every
 * call here is inside the handle while it touches the record and the heap
 * (heap_int.h, calls inside a handle): a detach waits for it. */
static int put_waiting(q_arg_t *a, void *rec, int64_t timeout_ns)
{
    int rc = shms_enter(a->h);
    if (rc)
        return rc;
    if (!(a->r = shms_sync_rec(rec, K_QUEUE))) {
        shms_leave(a->h);
        return EINVAL;
    }
    a->lock_ns = timeout_ns > 0 ? timeout_ns : 100000000;
    rc = shms_sync_wait_for(a->r, try_put, a, timeout_ns);
    if (rc == 0)
        after_put(a->r);
    shms_leave(a->h);
    return rc == EBUSY ? ETIMEDOUT : rc;
}

/* 0 queued; ETIMEDOUT full (or the heap lock busy) until timeout_ns. */
int shms_queue_put(shms_heap_t *h, void *rec, const char *val, uint64_t vlen, int held,
                   int64_t timeout_ns)
{
    q_arg_t a = {.h = h, .val = val, .vlen = vlen, .held = held};
    return put_waiting(&a, rec, timeout_ns);
}

/* As shms_queue_put, the item stored as head, then val, then tail (a split
 * item, dict_split.c: one copy of val, from where it lies). */
int shms_queue_put_parts(shms_heap_t *h, void *rec, const char *head, uint64_t hlen,
                         const char *val, uint64_t vlen, const char *tail, uint64_t tlen,
                         int held, int64_t timeout_ns)
{
    q_arg_t a = {.h = h, .vhead = head, .vhlen = hlen, .val = val, .vlen = vlen,
                 .vtail = tail, .vtlen = tlen, .held = held};
    return put_waiting(&a, rec, timeout_ns);
}

/* For a caller that holds the GIL (ext/hotqueue.c): one try, the heap lock
 * tried once and the heap never grown.  0 queued; else nothing changed and
 * the code (EAGAIN full, EBUSY the lock taken, SHMS_EGROW, ...) sends the
 * caller to shms_queue_put. */
static int put_try(shms_heap_t *h, void *rec, const char *val, uint64_t vlen, int bytes)
{
    q_arg_t a = {.h = h, .val = val, .vlen = vlen, .bytes = bytes};
    sync_rec_t *r;
    int rc = shms_enter(h);
    if (rc)
        return rc;
    if (!(r = a.r = shms_sync_rec(rec, K_QUEUE)))
        rc = EINVAL;
    else if (!(rc = try_op(r, &a, put_body, 1, 0)))
        after_put(r);
    shms_leave(h);
    return rc;
}

int shms_queue_put_try(shms_heap_t *h, void *rec, const char *val, uint64_t vlen)
{
    return put_try(h, rec, val, vlen, 0);
}

/* As shms_queue_put_try, the item being the bytes object whose n bytes are at b:
 * its pickle is written straight from them (STORE OF BYTES in dict_hot.c). */
int shms_queue_put_bytes_try(shms_heap_t *h, void *rec, const char *b, uint64_t n)
{
    return put_try(h, rec, b, n, 1);
}

/* 0 got (res[0] = its length, in out; res[1] = 0), or a split item got
 * (res[1] = its data's length, in raw; res[3] = the rest's, in out: see
 * dict_split.c); SHMS_ETOOSMALL: res[0] is the length needed (res[1]: in raw,
 * res[0] - res[1] - 8 in out), nothing taken; ETIMEDOUT empty until timeout_ns. */
int shms_queue_get(shms_heap_t *h, void *rec, char *out, uint64_t cap, char *raw,
                   uint64_t raw_cap, uint64_t *res, int held, int64_t timeout_ns)
{
    q_arg_t a = {.h = h, .out = out, .cap = cap, .raw = raw, .raw_cap = raw_cap,
                 .res = res, .held = held, .lock_ns = timeout_ns > 0 ? timeout_ns : 100000000,
                 .take = copy_out};
    sync_rec_t *r;
    int rc = shms_enter(h);
    if (rc)
        return rc;
    if (!(r = a.r = shms_sync_rec(rec, K_QUEUE))) {
        shms_leave(h);
        return EINVAL;
    }
    a.take_ctx = &a;
    rc = shms_sync_wait_for(r, try_get, &a, timeout_ns);
    if (rc == 0)
        after_get(r);
    shms_leave(h);
    return rc == EBUSY ? ETIMEDOUT : rc;
}

/* For a caller that holds the GIL (ext/hotqueue.c): one try, the heap lock
 * tried once.  0: the oldest item was handed to cb, under the lock, where it
 * lies, and taken; else nothing taken, and the code (EAGAIN empty, EBUSY the
 * lock taken, cb's own) sends the caller to shms_queue_get. */
int shms_queue_take(shms_heap_t *h, void *rec, shms_take_cb cb, void *ctx)
{
    sync_rec_t *r = shms_sync_rec(rec, K_QUEUE);
    q_arg_t a = {.r = r, .h = h, .take = cb, .take_ctx = ctx};
    int rc;
    if (!r)
        return EINVAL;
    if (!(rc = try_get(r, &a)))
        after_get(r);
    return rc;
}

/* EINVAL when called more times than items were put. */
int shms_queue_task_done(void *rec)
{
    sync_rec_t *r = shms_sync_rec(rec, K_QUEUE);
    uint64_t u;
    if (!r)
        return EBADF;
    u = __atomic_load_n(&r->unfinished, __ATOMIC_SEQ_CST);
    do {
        if (!u)
            return EINVAL;
    } while (!__atomic_compare_exchange_n(&r->unfinished, &u, u - 1, 0, __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST));
    if (u == 1)
        shms_sync_wake(r, 1);
    return 0;
}

static int try_join(sync_rec_t *r, void *p)
{
    (void)p;
    return __atomic_load_n(&r->unfinished, __ATOMIC_SEQ_CST) ? EAGAIN : 0;
}

int shms_queue_join(void *rec, int64_t timeout_ns)
{
    sync_rec_t *r = shms_sync_rec(rec, K_QUEUE);
    if (!r)
        return EBADF;
    return shms_sync_wait_for(r, try_join, NULL, timeout_ns);
}

/* out = {qsize, maxsize, unfinished}, read without a lock. */
void shms_queue_state(void *rec, uint64_t *out)
{
    sync_rec_t *r = rec;
    uint64_t head, tail;
    if (!r) {
        out[0] = out[1] = out[2] = 0;
        return;
    }
    head = __atomic_load_n(&r->head, __ATOMIC_SEQ_CST);
    tail = __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST);
    /* head first: a sound queue never reads head > tail so.  tail - head may
     * read high (gets and puts between the loads): past the bound, read again
     * tail first, which can only read it low. */
    out[0] = tail > head ? tail - head : 0;
    if (head > tail) {
        out[0] = UINT64_MAX;
    } else if (r->value && tail - head > r->value) {
        tail = __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST);
        head = __atomic_load_n(&r->head, __ATOMIC_SEQ_CST);
        out[0] = tail > head ? tail - head : 0;
        if (tail >= head && tail - head > r->value)
            out[0] = UINT64_MAX;
    }
    out[1] = r->value;
    out[2] = __atomic_load_n(&r->unfinished, __ATOMIC_SEQ_CST);
}
