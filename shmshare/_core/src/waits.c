/* Condition and Barrier records (see sync.c for the record, the waiting
 * protocol and the commit points).
 *
 * CONDITION.  ent[i] = {waiter token, ticket << 2 | state}: a waiter enqueues
 * (taking the next ticket) before it lets its lock go, so a notify() that
 * follows cannot miss it; notify(n) marks the n oldest live waiters NOTIFIED,
 * freeing dead waiters' entries on the way, so a wake-up is never spent on a
 * process that is gone.  Every store of an entry's state is a whole change.
 *
 * BARRIER.  value = parties, gen = generation, ent[i] = {token, gen + 1} per
 * party waiting in the current generation: the count is derived from the
 * entries, so an arrival is one store and can never be half-written.  The
 * generation ends by pass (gen++) or reset (gen++ and the old generation is
 * remembered in resets[]); a party found dead breaks the barrier.
 */
#include "sync_int.h"
#include <errno.h>

/* ---------------------------------------------------------- Condition */

/* Enqueue a waiter (before the caller releases its lock): its slot, or -1
 * when SHMS_SYNC_SLOTS waiters wait already.  Dead waiters' slots are reused. */
int shms_cond_enqueue(void *p, uint64_t token, uint64_t *ticket)
{
    sync_rec_t *r = shms_sync_rec(p, K_COND);
    int i, slot = -1;
    if (!r || shms_sync_lock(r))
        return -1;
    for (i = 0; i < SHMS_SYNC_SLOTS && slot < 0; i++)    /* a free slot... */
        if (!r->ent[i].token || (r->ent[i].count & 3) == W_FREE)
            slot = i;
    for (i = 0; i < SHMS_SYNC_SLOTS && slot < 0; i++)    /* ...else a dead waiter's */
        if (shms_proc_token_alive(r->ent[i].token) == 0)
            slot = i;
    if (slot >= 0) {
        /* ticket order: gen counts enqueues, so notify picks the oldest first */
        *ticket = ++r->gen;
        r->ent[slot].count = W_FREE;
        r->ent[slot].token = token;
        __atomic_store_n(&r->ent[slot].count, (*ticket << 2) | W_WAITING, __ATOMIC_RELEASE);
    }
    shms_sync_unlock(r);
    return slot;
}

typedef struct { int slot; uint64_t ticket; } cond_arg_t;

static int try_cond(sync_rec_t *r, void *p)
{
    cond_arg_t *a = p;
    return __atomic_load_n(&r->ent[a->slot].count, __ATOMIC_ACQUIRE) ==
           ((a->ticket << 2) | W_NOTIFIED) ? 0 : EAGAIN;
}

/* Wait until notified.  On ETIMEDOUT the slot is still queued: call
 * shms_cond_leave (which says whether a notification came meanwhile). */
int shms_cond_wait(void *p, int slot, uint64_t ticket, int64_t timeout_ns)
{
    sync_rec_t *r = shms_sync_rec(p, K_COND);
    cond_arg_t a = {.slot = slot, .ticket = ticket};
    if (!r || slot < 0 || slot >= SHMS_SYNC_SLOTS)
        return EINVAL;
    return shms_sync_wait_for(r, try_cond, &a, timeout_ns);
}

/* Free the slot; 1 if it had been notified, else 0. */
int shms_cond_leave(void *p, int slot, uint64_t ticket)
{
    sync_rec_t *r = shms_sync_rec(p, K_COND);
    int notified = 0;
    if (!r || slot < 0 || slot >= SHMS_SYNC_SLOTS || shms_sync_lock(r))
        return 0;
    if (r->ent[slot].count >> 2 == ticket) {
        notified = (r->ent[slot].count & 3) == W_NOTIFIED;
        r->ent[slot].token = 0;
        r->ent[slot].count = W_FREE;
    }
    shms_sync_unlock(r);
    return notified;
}

/* Notify the n oldest live waiters; dead ones are skipped and freed. */
int shms_cond_notify(void *p, uint64_t n)
{
    sync_rec_t *r = shms_sync_rec(p, K_COND);
    uint64_t done = 0;
    if (!r || shms_sync_lock(r))
        return EINVAL;
    while (done < n) {
        int i, best = -1;
        for (i = 0; i < SHMS_SYNC_SLOTS; i++) {
            uint64_t c = r->ent[i].count;
            if (r->ent[i].token && (c & 3) == W_WAITING &&
                (best < 0 || c >> 2 < r->ent[best].count >> 2))
                best = i;
        }
        if (best < 0)
            break;
        if (shms_proc_token_alive(r->ent[best].token) == 0) {
            r->ent[best].token = 0;
            r->ent[best].count = W_FREE;
            continue;
        }
        __atomic_store_n(&r->ent[best].count, (r->ent[best].count & ~3ULL) | W_NOTIFIED,
                         __ATOMIC_RELEASE);
        done++;
    }
    shms_sync_unlock(r);
    if (done)
        shms_sync_wake(r, 1);
    return 0;
}

uint64_t shms_cond_waiting(void *p)
{
    sync_rec_t *r = p;
    uint64_t n = 0;
    int i;
    if (!r)
        return 0;
    for (i = 0; i < SHMS_SYNC_SLOTS; i++)             /* live ones only */
        n += r->ent[i].token && (r->ent[i].count & 3) == W_WAITING &&
             shms_proc_token_alive(r->ent[i].token) != 0;
    return n;
}

/* ------------------------------------------------------------ Barrier */
/* value = parties; gen = generation; ent[i] = {token, gen + 1} per arrival of
 * the current generation (so the count is derived, never half-written). */

static uint64_t arrived(sync_rec_t *r)
{
    uint64_t n = 0;
    int i;
    for (i = 0; i < SHMS_SYNC_SLOTS; i++)
        n += r->ent[i].token && r->ent[i].count == r->gen + 1;
    return n;
}

/* Arrive: *index = arrival index, *gen = generation.  Returns 0 (wait with
 * shms_barrier_wait), 1 (the last: run the action, then shms_barrier_pass or
 * shms_barrier_abort), EPIPE (broken), ENOSPC (too many parties). */
int shms_barrier_arrive(void *p, uint64_t token, uint64_t *index, uint64_t *gen)
{
    sync_rec_t *r = shms_sync_rec(p, K_BARRIER);
    int i, rc = ENOSPC;
    if (!r || shms_sync_lock(r))
        return EINVAL;
    *gen = r->gen;
    *index = arrived(r);
    if (r->broken) {
        rc = EPIPE;
    } else if (*index + 1 >= r->value) {
        rc = 1;
    } else {
        for (i = 0; i < SHMS_SYNC_SLOTS; i++) {
            if (!r->ent[i].token || r->ent[i].count != r->gen + 1) {
                r->ent[i].count = 0;
                r->ent[i].token = token;
                __atomic_store_n(&r->ent[i].count, r->gen + 1, __ATOMIC_RELEASE);
                rc = 0;
                break;
            }
        }
    }
    shms_sync_unlock(r);
    return rc;
}

static void barrier_end(sync_rec_t *r, int reset)
{
    if (reset && arrived(r))
        r->resets[r->n_resets++ % 8] = r->gen + 1;
    r->broken = 0;
    __atomic_add_fetch(&r->gen, 1, __ATOMIC_SEQ_CST);       /* frees every arrival */
}

int shms_barrier_pass(void *p)
{
    sync_rec_t *r = shms_sync_rec(p, K_BARRIER);
    if (!r || shms_sync_lock(r))
        return EINVAL;
    barrier_end(r, 0);
    shms_sync_unlock(r);
    shms_sync_wake(r, 1);
    return 0;
}

int shms_barrier_abort(void *p, int reset)
{
    sync_rec_t *r = shms_sync_rec(p, K_BARRIER);
    if (!r || shms_sync_lock(r))
        return EINVAL;
    if (reset)
        barrier_end(r, 1);
    else
        __atomic_store_n(&r->broken, 1, __ATOMIC_SEQ_CST);
    shms_sync_unlock(r);
    shms_sync_wake(r, 1);
    return 0;
}

typedef struct { uint64_t gen; uint64_t *other; } bar_arg_t;

static int try_barrier(sync_rec_t *r, void *p)
{
    bar_arg_t *a = p;
    int i, k, alive;
    if (__atomic_load_n(&r->gen, __ATOMIC_SEQ_CST) != a->gen) {
        for (k = 0; k < 8; k++)
            if (r->resets[k] == a->gen + 1)
                return EPIPE;          /* the generation ended by reset() */
        return 0;
    }
    if (__atomic_load_n(&r->broken, __ATOMIC_SEQ_CST))
        return EPIPE;
    for (i = 0; i < SHMS_SYNC_SLOTS; i++) {
        if (r->ent[i].token && r->ent[i].count == a->gen + 1) {
            alive = shms_proc_token_alive(r->ent[i].token);
            if (alive < 0) {
                *a->other = r->ent[i].token;
                return SHMS_EUNKNOWN;
            }
            if (!alive) {                /* a party died waiting: break it for all */
                __atomic_store_n(&r->broken, 1, __ATOMIC_SEQ_CST);
                shms_sync_wake(r, 1);
                return EPIPE;
            }
        }
    }
    return EAGAIN;
}

/* 0 passed; EPIPE broken (or reset); ETIMEDOUT (the caller then aborts). */
int shms_barrier_wait(void *p, uint64_t gen, int64_t timeout_ns, uint64_t *other)
{
    sync_rec_t *r = shms_sync_rec(p, K_BARRIER);
    bar_arg_t a = {.gen = gen, .other = other};
    if (!r)
        return EINVAL;
    return shms_sync_wait_for(r, try_barrier, &a, timeout_ns);
}

uint64_t shms_barrier_state(void *p, uint64_t *broken)
{
    sync_rec_t *r = p;
    if (!r)
        return 0;
    *broken = __atomic_load_n(&r->broken, __ATOMIC_ACQUIRE);
    return arrived(r);
}
