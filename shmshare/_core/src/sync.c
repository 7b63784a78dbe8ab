/* Synchronisation records: Lock, RLock, Event here; Semaphore in semaphore.c,
 * Condition and Barrier in waits.c, the queue in queue.c (one record layout:
 * sync_int.h).
 *
 * WHERE.  A record is the value of the key "rec" in its object's heap dict,
 * allocated once (zeroed, 64 bytes of slack) and then changed in place, never
 * rewritten: a dict value's blob does not move (resizes move entries, not
 * blobs; recovery frees only unreachable blocks), so the record's address is
 * fixed for as long as the heap is attached.  The record is 64-byte aligned
 * inside the value.  shms_sync_open initialises it under the heap lock.
 *
 * WHO.  Holders and waiters are named by process tokens (proc.c): the kernel
 * says when a token's process died, whatever its PID namespace, and a reused
 * pid cannot stand in for it.
 *
 * WAITING.  Every record has `seq`, a futex word bumped (release order) by
 * every change a waiter may wait for, and `nwait`, the number of sleepers.  A
 * waiter increments nwait, reads seq, re-checks its condition, then sleeps on
 * seq; a changer changes, bumps seq, and wakes only if nwait > 0 (all four
 * accesses sequentially consistent): a wake-up cannot be lost, and an
 * uncontended operation makes no system call.  A waiter killed asleep leaves
 * nwait one too high: later changes pay a needless FUTEX_WAKE, nothing more.
 * Nobody ever sleeps holding a lock, and every sleep is bounded by the
 * caller's slice, so the Python layer sees signals and deadlines.
 *
 * COMMIT POINTS.  Lock/RLock: one compare-and-swap of `owner` (0 or a token).
 * Event: one store of `flag`, then `gen` is bumped.  Semaphore, Condition
 * and Barrier change several words under the record's own robust mutex
 * (never held while sleeping); semaphore changes write an undo record first,
 * so a process killed inside one leaves the semaphore exactly as before it.
 * Condition and Barrier state is a table of one-word entries whose every
 * store is a complete change.
 *
 * RECOVERY, exactly once.  A lock whose owner token is dead is taken by the
 * one waiter whose compare-and-swap of that very token succeeds; the owner's
 * RLock depth is the owner's own business, so there is nothing else to give
 * back.  A semaphore permit held (with-statement) by a dead process is given
 * back by whoever clears that process's holder entry under the mutex.
 */
#include "sync_int.h"
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(pthread_mutex_t) <= 64, "record mutex slot");

size_t shms_sync_size(void) { return sizeof(sync_rec_t) + 64; }

/* ------------------------------------------------------------- helpers */

void shms_sync_wake(sync_rec_t *r, int all)
{
    __atomic_add_fetch(&r->seq, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->nwait, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, &r->seq, FUTEX_WAKE, all ? INT_MAX : 1, NULL, NULL, 0);
}

/* Sleep while seq == seen, at most ns (> 0).  0, or ETIMEDOUT. */
static int sleep_on(sync_rec_t *r, uint32_t seen, int64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000LL), .tv_nsec = (long)(ns % 1000000000LL)};
    long rc = syscall(SYS_futex, &r->seq, FUTEX_WAIT, seen, &ts, NULL, 0);
    return rc != 0 && errno == ETIMEDOUT ? ETIMEDOUT : 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

sync_rec_t *shms_sync_rec(void *p, uint32_t kind)
{
    sync_rec_t *r = p;
    return r && r->magic == SYNC_MAGIC && r->kind == kind ? r : NULL;
}

/* The record mutex, repaired if its holder died inside a change. */
static void undo(sync_rec_t *r)
{
    if (r->undo_active) {
        if (r->undo_slot < SHMS_SYNC_SLOTS) {
            r->ent[r->undo_slot].token = r->undo_token;
            r->ent[r->undo_slot].count = r->undo_count;
        }
        r->value = r->undo_value;
        __atomic_store_n(&r->undo_active, 0, __ATOMIC_RELEASE);
    }
}

static int lock_within(sync_rec_t *r, int64_t timeout_ns)
{
    int rc = shms_mutex_lock(r->mutex, timeout_ns);
    if (rc == EOWNERDEAD) {
        undo(r);
        rc = shms_mutex_consistent(r->mutex);
    }
    return rc;
}

int shms_sync_lock(sync_rec_t *r) { return lock_within(r, -1); }

/* One try: EBUSY when held (nothing changed). */
int shms_sync_trylock(sync_rec_t *r) { return lock_within(r, 0); }

void shms_sync_unlock(sync_rec_t *r) { shms_mutex_unlock(r->mutex); }

int shms_sync_wait_for(sync_rec_t *r, shms_try_fn try, void *arg, int64_t timeout_ns)
{
    int64_t deadline;
    int rc, spins;
    if ((rc = try(r, arg)) != EAGAIN || timeout_ns == 0)
        return rc == EAGAIN ? ETIMEDOUT : rc;
    for (spins = 0; spins < 64; spins++) {          /* short spin: a holder about to let go */
        __builtin_ia32_pause();
        if ((rc = try(r, arg)) != EAGAIN)
            return rc;
    }
    deadline = now_ns() + timeout_ns;
    for (;;) {
        uint32_t seen;
        int64_t left;
        __atomic_add_fetch(&r->nwait, 1, __ATOMIC_SEQ_CST);
        seen = __atomic_load_n(&r->seq, __ATOMIC_SEQ_CST);
        rc = try(r, arg);
        left = deadline - now_ns();
        if (rc == EAGAIN && left > 0) {
            sleep_on(r, seen, left);
            if (r->kind == K_QUEUE)     /* awake: the wake-up on its way has arrived */
                __atomic_store_n(&r->gen, 0, __ATOMIC_SEQ_CST);
            rc = ETIMEDOUT;             /* one sleep per call: the caller loops */
        } else if (rc == EAGAIN) {
            rc = ETIMEDOUT;
        }
        __atomic_sub_fetch(&r->nwait, 1, __ATOMIC_SEQ_CST);
        if (rc == ETIMEDOUT && (rc = try(r, arg)) == EAGAIN)
            rc = ETIMEDOUT;             /* one last look at the deadline */
        if (rc != EAGAIN)
            return rc;
    }
}

/* ------------------------------------------------------------ open */

typedef struct {
    const char *key;
    uint64_t klen, cmplen;
    uint32_t kind;
    uint64_t value, bound;
    void **out;
} open_arg_t;

static int open_body(shms_heap_t *h, void *p)
{
    open_arg_t *a = p;
    shms_dtab_t *t;
    uint64_t payload;
    shms_dblob_t *b;
    sync_rec_t *r;
    int64_t i;
    int rc = shms_dict_entry(h, a->key, a->cmplen, &t, &i);
    if (rc)
        return rc;
    if (!(b = shms_dblob_at(h, shms_dents(t)[i].blob)) || b->vlen < shms_sync_size())
        return SHMS_EWRONGKIND;
    (void)payload;
    r = (sync_rec_t *)(((uintptr_t)shms_dblob_val(b) + 63) & ~(uintptr_t)63);
    if (r->magic == 0) {                 /* first open: initialise (heap lock held) */
        int m;
        memset(r, 0, sizeof *r);
        r->kind = a->kind;
        r->value = a->value;
        r->bound = a->bound;
        if ((m = shms_mutex_init(r->mutex)))
            return m;
        __atomic_store_n(&r->magic, SYNC_MAGIC, __ATOMIC_RELEASE);
    } else if (r->magic != SYNC_MAGIC || r->kind != a->kind) {
        return SHMS_EWRONGKIND;
    }
    *a->out = r;
    return 0;
}

/* The record under key (whose zeroed value the caller stored, at least
 * shms_sync_size() bytes), initialised on first open.  SHMS_EWRONGKIND: the
 * value is not a record of this kind. */
int shms_sync_open(shms_heap_t *h, const char *key, uint64_t klen, uint64_t cmplen,
                   uint32_t kind, uint64_t value, uint64_t bound, void **out, int held,
                   int64_t timeout_ns)
{
    open_arg_t a = {.key = key, .klen = klen, .cmplen = cmplen, .kind = kind, .value = value,
                    .bound = bound, .out = out};
    return shms_run_op(h, held, timeout_ns, open_body, &a);
}

/* Wake every waiter of the record (in every process): each returns to its
 * caller, which looks again.  Used before this process unmaps the record. */
void shms_sync_kick(void *p)
{
    if (p)
        shms_sync_wake(p, 1);
}

/* Processes' threads asleep on the record now (approximate: see WAITING). */
uint32_t shms_sync_sleepers(void *p)
{
    return p ? __atomic_load_n(&((sync_rec_t *)p)->nwait, __ATOMIC_ACQUIRE) : 0;
}

uint64_t shms_sync_recoveries(void *p)
{
    sync_rec_t *r = p;
    return r ? __atomic_load_n(&r->recoveries, __ATOMIC_ACQUIRE) : 0;
}

/* ------------------------------------------------------- Lock, RLock */

typedef struct {
    uint64_t token;
    uint64_t *other;     /* a holder whose table is not known here (SHMS_EUNKNOWN) */
} lock_arg_t;

static int try_lock(sync_rec_t *r, void *p)
{
    lock_arg_t *a = p;
    uint64_t o = 0;
    int alive;
    if (__atomic_compare_exchange_n(&r->owner, &o, a->token, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED))
        return 0;
    if (!o)
        return EAGAIN;                  /* freed meanwhile: the next try takes it */
    alive = shms_proc_token_alive(o);
    if (alive < 0) {
        *a->other = o;
        return SHMS_EUNKNOWN;
    }
    if (alive)
        return EAGAIN;
    /* The holder died: the one whose swap of that very token wins recovers. */
    if (__atomic_compare_exchange_n(&r->owner, &o, a->token, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED)) {
        __atomic_add_fetch(&r->recoveries, 1, __ATOMIC_RELEASE);
        return SHMS_RECOVERED;
    }
    return EAGAIN;
}

/* 0 taken; SHMS_RECOVERED taken from a dead holder; ETIMEDOUT (timeout_ns 0:
 * tried once); SHMS_EUNKNOWN: *other holds it and its table must be learnt
 * (proc.learn), then call again. */
int shms_lock_acquire(void *p, uint32_t kind, uint64_t token, int64_t timeout_ns,
                      uint64_t *other)
{
    sync_rec_t *r = shms_sync_rec(p, kind);
    lock_arg_t a = {.token = token, .other = other};
    uint64_t zero = 0;
    if (!r || !token)
        return EINVAL;
    if (__atomic_compare_exchange_n(&r->owner, &zero, token, 0, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED))
        return 0;                       /* the uncontended path: one CAS, no syscall */
    return shms_sync_wait_for(r, try_lock, &a, timeout_ns);
}

/* One compare-and-swap, nothing else (sync_guard.c's fast take): 0 taken,
 * EBUSY held (by anyone, dead or alive: judging that is the full acquire's). */
int shms_lock_try(void *p, uint32_t kind, uint64_t token)
{
    sync_rec_t *r = shms_sync_rec(p, kind);
    uint64_t zero = 0;
    if (!r || !token)
        return EINVAL;
    return __atomic_compare_exchange_n(&r->owner, &zero, token, 0, __ATOMIC_ACQUIRE,
                                       __ATOMIC_RELAXED) ? 0 : EBUSY;
}

/* any: a Lock, which anyone may release; else only the owner (EPERM). */
int shms_lock_release(void *p, uint32_t kind, uint64_t token, int any)
{
    sync_rec_t *r = shms_sync_rec(p, kind);
    uint64_t o;
    if (!r)
        return EINVAL;
    o = __atomic_load_n(&r->owner, __ATOMIC_RELAXED);
    do {
        if (!o || (!any && o != token))
            return EPERM;
    } while (!__atomic_compare_exchange_n(&r->owner, &o, 0, 0, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
    shms_sync_wake(r, 0);
    return 0;
}

uint64_t shms_lock_owner(void *p)
{
    sync_rec_t *r = p;
    return r ? __atomic_load_n(&r->owner, __ATOMIC_ACQUIRE) : 0;
}

/* -------------------------------------------------------------- Event */

int shms_event_set(void *p, int flag)
{
    sync_rec_t *r = shms_sync_rec(p, K_EVENT);
    if (!r)
        return EINVAL;
    if (!flag) {
        __atomic_store_n(&r->value, 0, __ATOMIC_SEQ_CST);
        return 0;
    }
    if (__atomic_exchange_n(&r->value, 1, __ATOMIC_SEQ_CST))
        return 0;                       /* already set: nobody is waiting */
    __atomic_add_fetch(&r->gen, 1, __ATOMIC_SEQ_CST);
    shms_sync_wake(r, 1);
    return 0;
}

typedef struct { uint64_t gen; } ev_arg_t;

static int try_event(sync_rec_t *r, void *p)
{
    ev_arg_t *a = p;
    /* Set now, or set since the wait began (even if cleared again at once). */
    return __atomic_load_n(&r->value, __ATOMIC_SEQ_CST) ||
           __atomic_load_n(&r->gen, __ATOMIC_SEQ_CST) != a->gen ? 0 : EAGAIN;
}

/* gen: from shms_event_gen when the wait began.  0 set (or pulsed), ETIMEDOUT. */
int shms_event_wait(void *p, uint64_t gen, int64_t timeout_ns)
{
    sync_rec_t *r = shms_sync_rec(p, K_EVENT);
    ev_arg_t a = {.gen = gen};
    if (!r)
        return EINVAL;
    return shms_sync_wait_for(r, try_event, &a, timeout_ns);
}

uint64_t shms_event_gen(void *p)
{
    sync_rec_t *r = p;
    return r ? __atomic_load_n(&r->gen, __ATOMIC_SEQ_CST) : 0;
}

