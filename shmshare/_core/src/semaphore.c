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

/* EINVAL: would exceed the bound (nothing changed).  The releaser's own held
 * permits are the ones given back first. */
int shms_sem_release(void *p, uint64_t token, uint64_t n)
{
    sync_rec_t *r = shms_sync_rec(p, K_SEM);
    int rc, slot;
    if (!r)
        return EBADF;
    if ((rc = shms_sync_lock(r)))
        return rc;
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

uint64_t shms_sem_value(void *p)
{
    sync_rec_t *r = p;
    return r ? __atomic_load_n(&r->value, __ATOMIC_ACQUIRE) : 0;
}
