/* Lock guards: the process-local record of which thread holds a shared lock
 * (a heap's or a bare robust mutex), and how deeply, kept in C so that taking
 * and giving back a level are each one C call.
 *
 * WHY.  CPython runs signal handlers -- and so raises KeyboardInterrupt -- at
 * function entry, after calls and on backward jumps.  A lock taken by one C
 * call and recorded by the Python code after it, or released by Python code
 * that first has to be entered, can be left held by a live process when the
 * exception lands in between: every other process then waits forever (the
 * robust mutex only helps when the holder dies).  So:
 *
 *  - shms_guard_acquire takes the lock (or one more level of it) and records
 *    it, all in one call, and sets *ticket = 1 once the level is taken.  The
 *    Python caller makes the ticket before the call and, in the handler of a
 *    try around everything that follows, calls shms_guard_undo(g, ticket):
 *    an exception anywhere after the lock was taken gives the level back, one
 *    raised before leaves nothing to give back (*ticket still 0).
 *  - shms_guard_release is what ``with`` calls on the way out, through
 *    ext/exitcall.c with no Python frame in between (see guard.py): the level
 *    is given back before Python can run anything else.  A thread that holds
 *    nothing (a child forked inside the block) gets EPERM and gives nothing.
 *
 * THREADS.  owner/depth are only written by the thread that holds the lock
 * (or is taking it); other threads read owner only to compare it with their
 * own id, which a stale value can never equal.
 */
#include "shms.h"
#include <errno.h>
#include <pthread.h>

static uint64_t self_id(void)
{
    return (uint64_t)pthread_self();
}

void shms_guard_init(shms_guard_t *g, int kind, void *target)
{
    g->target = target;
    g->kind = kind;
    g->owner = 0;
    g->depth = 0;
}

static int unlock_target(shms_guard_t *g);

/* The target is going away (the object is detached): refuse from now on.  A
 * hold of the calling thread (``with obj.lock: obj.detach()``) is given back
 * first, while the lock's memory is mapped: after, nobody could give it back
 * -- not even the kernel at this thread's exit, whose robust list would point
 * into memory no longer mapped -- and every other process would wait on it
 * for good. */
void shms_guard_close(shms_guard_t *g)
{
    if (g->target && g->depth && g->owner == self_id())
        unlock_target(g);
    g->target = NULL;
    g->owner = 0;
    g->depth = 0;
}

static int lock_target(shms_guard_t *g, int64_t timeout_ns)
{
    int rc;
    if (g->kind == SHMS_GUARD_HEAP)
        return shms_heap_lock((shms_heap_t *)g->target, timeout_ns);
    rc = shms_mutex_lock(g->target, timeout_ns);
    if (rc == EOWNERDEAD) {
        /* A bare mutex protects no structure of ours: nothing to repair. */
        shms_mutex_consistent(g->target);
        rc = SHMS_RECOVERED;
    }
    return rc;
}

static int unlock_target(shms_guard_t *g)
{
    if (g->kind == SHMS_GUARD_HEAP)
        return shms_heap_unlock((shms_heap_t *)g->target);
    return shms_mutex_unlock(g->target);
}

/* 0 or SHMS_RECOVERED: one more level is held and *ticket is 1; else an
 * error (ETIMEDOUT/EBUSY when the wait ran out) and nothing is held. */
int shms_guard_acquire(shms_guard_t *g, int64_t timeout_ns, int64_t *ticket)
{
    uint64_t me = self_id();
    int rc;
    if (!g->target)
        return SHMS_ECLOSED;
    if (g->depth && __atomic_load_n(&g->owner, __ATOMIC_RELAXED) == me) {
        g->depth++;
        *ticket = 1;
        return 0;
    }
    rc = lock_target(g, timeout_ns);
    if (rc && rc != SHMS_RECOVERED)
        return rc;
    g->depth = 1;
    __atomic_store_n(&g->owner, me, __ATOMIC_RELAXED);
    *ticket = 1;
    return rc;
}

/* 0, or EPERM if the calling thread holds no level. */
int shms_guard_release(shms_guard_t *g)
{
    if (!g->target || !g->depth || __atomic_load_n(&g->owner, __ATOMIC_RELAXED) != self_id())
        return EPERM;
    if (--g->depth)
        return 0;
    __atomic_store_n(&g->owner, 0, __ATOMIC_RELAXED);
    return unlock_target(g);
}

void shms_guard_undo(shms_guard_t *g, int64_t *ticket)
{
    if (*ticket) {
        *ticket = 0;
        shms_guard_release(g);
    }
}

int shms_guard_held(shms_guard_t *g)
{
    return g->depth && __atomic_load_n(&g->owner, __ATOMIC_RELAXED) == self_id();
}

/* In a forked child: the parent's holder thread does not exist here. */
void shms_guard_forget(shms_guard_t *g)
{
    g->owner = 0;
    g->depth = 0;
}

/* The thread id in the lock word (see shms_mutex_owner), 0 once closed. */
int64_t shms_guard_owner_tid(shms_guard_t *g)
{
    if (!g->target)
        return 0;
    if (g->kind == SHMS_GUARD_HEAP)
        return shms_heap_lock_owner((shms_heap_t *)g->target);
    return shms_mutex_owner(g->target);
}
