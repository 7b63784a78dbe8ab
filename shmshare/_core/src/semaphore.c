/* Semaphore and BoundedSemaphore records (sync.c has the record's rules:
 * where it lives, who holds it, how waiting and recovery work).  Several
 * words change at once, so every change runs under the record's robust
 * mutex and writes an undo record first: a process killed inside one leaves
 * the semaphore exactly as before it.
 */
#include "sync_int.h"
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------- Semaphore */

typedef struct {
    uint64_t token;
    int held;            /* with-statement: the permit comes back if the process dies */
    uint64_t *freed;     /* permits given back from dead holders by this call */
    uint64_t *other;
} sem_arg_t;

static void sem_write(sync_rec_t *r, uint64_t value, int slot, uint64_t token, uint64_t count)
{
    r->undo_value = r->value;
    r->undo_slot = slot < 0 ? UINT64_MAX : (uint64_t)slot;
    if (slot >= 0) {
        r->undo_token = r->ent[slot].token;
        r->undo_count = r->ent[slot].count;
    }
    __atomic_store_n(&r->undo_active, 1, __ATOMIC_RELEASE);        /* undo point */
    r->value = value;
    if (slot >= 0) {
        r->ent[slot].token = token;
        r->ent[slot].count = count;
    }
    __atomic_store_n(&r->undo_active, 0, __ATOMIC_RELEASE);        /* commit */
}

/* Give back the permits of dead holders (mutex held).  -1: a holder's table
 * is unknown (*other). */
static int sem_reap(sync_rec_t *r, uint64_t *freed, uint64_t *other)
{
    int i, alive;
    for (i = 0; i < SHMS_SYNC_SLOTS; i++) {
        sync_ent_t *e = &r->ent[i];
        if (!e->token)
            continue;
        alive = shms_proc_token_alive(e->token);
        if (alive < 0) {
            *other = e->token;
            return -1;
        }
        if (!alive) {
            uint64_t n = e->count;
            sem_write(r, r->value + n, i, 0, 0);
            if (n) {
                *freed += n;
                __atomic_add_fetch(&r->recoveries, 1, __ATOMIC_RELEASE);
            }
        }
    }
    return 0;
}

static int sem_slot(sync_rec_t *r, uint64_t token, int claim)
{
    int i, free_slot = -1;
    for (i = 0; i < SHMS_SYNC_SLOTS; i++) {
        if (r->ent[i].token == token)
            return i;
        if (!r->ent[i].token && free_slot < 0)
            free_slot = i;
    }
    return claim ? free_slot : -1;
}

static int try_sem(sync_rec_t *r, void *p)
{
    sem_arg_t *a = p;
    int rc, slot;
    if ((rc = shms_sync_lock(r)))
        return rc;
    if (!r->value && sem_reap(r, a->freed, a->other) < 0) {
        shms_sync_unlock(r);
        return SHMS_EUNKNOWN;
    }
    if (!r->value) {
        shms_sync_unlock(r);
        return EAGAIN;
    }
    slot = a->held ? sem_slot(r, a->token, 1) : -1;
    if (a->held && slot < 0 && sem_reap(r, a->freed, a->other) == 0)
        slot = sem_slot(r, a->token, 1);        /* dead holders' slots freed */
    if (slot >= 0)
        sem_write(r, r->value - 1, slot, a->token, r->ent[slot].count + 1);
    else                                /* consumed (or no holder slot left) */
        sem_write(r, r->value - 1, -1, 0, 0);
    shms_sync_unlock(r);
    return 0;
}

int shms_sem_acquire(void *p, uint64_t token, int held, int64_t timeout_ns, uint64_t *freed,
                     uint64_t *other)
{
    sync_rec_t *r = shms_sync_rec(p, K_SEM);
    sem_arg_t a = {.token = token, .held = held, .freed = freed, .other = other};
    if (!r || !token)
        return EINVAL;
    *freed = 0;
    return shms_sync_wait_for(r, try_sem, &a, timeout_ns);
}

/* Give n permits back, the mutex held (and let go here); the giver's own
 * held permits are the ones given back first.  EINVAL: that would exceed the
 * bound (nothing changed). */
static int give_back(sync_rec_t *r, uint64_t token, uint64_t n)
{
    int slot;
    if (r->bound && r->value + n > r->bound) {
        shms_sync_unlock(r);
        return EINVAL;
    }
    slot = sem_slot(r, token, 0);
    if (slot >= 0 && r->ent[slot].count) {
        uint64_t c = r->ent[slot].count, k = n < c ? n : c;
        sem_write(r, r->value + n, slot, c - k ? token : 0, c - k);
    } else {
        sem_write(r, r->value + n, -1, 0, 0);
    }
    shms_sync_unlock(r);
    shms_sync_wake(r, n > 1);
    return 0;
}

int shms_sem_release(void *p, uint64_t token, uint64_t n)
{
    sync_rec_t *r = shms_sync_rec(p, K_SEM);
    int rc;
    if (!r)
        return EBADF;
    if ((rc = shms_sync_lock(r)))
        return rc;
    return give_back(r, token, n);
}

/* FAST PATHS: acquire() and release() of one permit as one C function of the
 * guard, for ext/exitcall.c's FastCall (as sync_guard.c's fast take for a
 * Lock: no Python frame).  They run with the GIL held, so the record mutex is
 * only tried -- a holder in another process may be descheduled -- and
 * anything but the plain case (the mutex busy, no permit left, over the
 * bound, no token here yet, a closed record) answers non-zero having changed
 * nothing; the full operation then runs and decides.  A dead holder's mutex
 * is repaired on the way, as every locker does (shms_sync_trylock). */
static int take_one(sync_rec_t *r, uint64_t token, int held)
{
    int slot = -1;
    if (shms_sync_trylock(r))
        return EBUSY;
    /* no permit left (dead holders' to reap?), or no holder slot: the full path */
    if (!r->value || (held && (slot = sem_slot(r, token, 1)) < 0)) {
        shms_sync_unlock(r);
        return EAGAIN;
    }
    if (held)
        sem_write(r, r->value - 1, slot, token, r->ent[slot].count + 1);
    else
        sem_write(r, r->value - 1, -1, 0, 0);    /* consumed, as acquire() is */
    shms_sync_unlock(r);
    return 0;
}

int shms_sem_fast_acquire(void *gp)
{
    shms_sync_guard_t *g = gp;
    sync_rec_t *r = shms_sync_rec(g->rec, K_SEM);
    return r ? take_one(r, 0, 0) : EINVAL;
}

/* ``with``'s take (sync_guard.c, shms_sync_fast_take): a permit held by token. */
int shms_sem_try_hold(void *p, uint64_t token)
{
    sync_rec_t *r = shms_sync_rec(p, K_SEM);
    return r ? take_one(r, token, 1) : EINVAL;
}

int shms_sem_fast_release(void *gp)
{
    shms_sync_guard_t *g = gp;
    sync_rec_t *r = shms_sync_rec(g->rec, K_SEM);
    uint64_t token = shms_sync_token_here();
    if (!r || !token)
        return EINVAL;
    if (shms_sync_trylock(r))
        return EBUSY;
    return give_back(r, token, 1);
}

uint64_t shms_sem_value(void *p)
{
    sync_rec_t *r = p;
    return r ? __atomic_load_n(&r->value, __ATOMIC_ACQUIRE) : 0;
}
