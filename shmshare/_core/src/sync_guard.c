/* Sync guards: a Lock's lock or a Semaphore's held permit taken and given
 * back where Python cannot interrupt in between, as guard.c does for the
 * objects' own locks (its opening comment says why: a KeyboardInterrupt
 * landing after the C call that took the primitive, or before a Python
 * __exit__ gives it back, leaves it held by a live process, and every other
 * process then waits forever; the robust mutex only helps when the holder
 * dies).
 *
 *  - shms_sync_take takes it and sets *ticket = 1 in the same call; the
 *    caller wraps everything after it in try and calls shms_sync_undo(g,
 *    ticket) in the handler (one C call, no Python frame first).
 *  - shms_sync_exit is ``with``'s __exit__ (through ext/exitcall.c): it gives
 *    back what the last take of this process recorded in the guard, with no
 *    Python frame in between.
 * The guard holds the token of the process that took it: a Lock may be
 * released by any process, a held permit is the taker's.  An RLock's holding
 * thread and depth (in this process) are kept in C too, in the state every
 * handle of the record in this process shares (g->state: thread, depth):
 * a take by the holding thread only deepens it, a give-back by another
 * thread is EPERM, the last one releases the record.  rec is NULL once the
 * record is closed (the object detached): everything then fails EINVAL.
 *
 * FAST TAKE.  shms_sync_fast_take is a Lock's or RLock's uncontended acquire
 * (and a Semaphore's ``with``) as one C function of the guard alone, for
 * ext/exitcall.c's FastCall (the C-level acquire and __enter__: no Python
 * frame, so no ticket either; a frame between taking and returning is what
 * the ticket protects).  It takes a free lock (one compare-and-swap), deepens
 * this thread's RLock or holds a permit (semaphore.c, one mutex try), and
 * otherwise changes nothing and answers non-zero: the caller then runs the
 * full, Python, acquire.  It names the holder by this process's token, cached
 * here by shms_sync_set_me (proc.token()) and cleared in a forked child by
 * pthread_atfork before any code of the child runs: a child never takes a
 * lock under its parent's token, which would hide its death behind the
 * parent's life.  0 (no token yet) takes the full path, which registers one.
 */
#include "shms.h"
#include <errno.h>
#include <pthread.h>

enum { KIND_RLOCK = 2, KIND_SEMAPHORE = 3 };   /* sync_int.h's K_RLOCK, K_SEM */

static uint64_t self_id(void)
{
    return (uint64_t)pthread_self();
}

static uint64_t me;                 /* this process's token; 0: not known here (yet) */

static void forget_me(void) { me = 0; }

static void watch_forks(void) { pthread_atfork(NULL, NULL, forget_me); }

/* This process's token, for the fast take (proc.token() calls it once per process). */
void shms_sync_set_me(uint64_t token)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, watch_forks);
    me = token;
}

/* This process's token as the fast paths know it (0: not yet, or a forked
 * child before its first full operation). */
uint64_t shms_sync_token_here(void)
{
    return me;
}

/* 0: taken (a free Lock/RLock, or this thread's RLock deepened); else nothing
 * was changed, and the full take must run (held, contended, recovery, no
 * permit or holder slot left, a closed record, no token yet). */
int shms_sync_fast_take(void *gp)
{
    shms_sync_guard_t *g = gp;
    uint64_t tok = me;
    if (!g->rec || !tok)
        return EAGAIN;
    if (g->kind == KIND_SEMAPHORE) {
        if (shms_sem_try_hold(g->rec, tok))
            return EBUSY;
        g->token = tok;
        return 0;
    }
    if (g->kind == KIND_RLOCK) {
        if (!g->state)
            return EINVAL;
        if (g->state[0] == self_id()) {
            g->state[1]++;
            return 0;
        }
    }
    if (shms_lock_try(g->rec, g->kind, tok))
        return EBUSY;
    g->token = tok;
    if (g->kind == KIND_RLOCK) {
        g->state[0] = self_id();
        g->state[1] = 1;
    }
    return 0;
}

int shms_sync_take(shms_sync_guard_t *g, uint64_t token, int64_t timeout_ns,
                   uint64_t *freed, uint64_t *other, int64_t *ticket)
{
    int rc;
    if (!g->rec || (g->kind == KIND_RLOCK && !g->state))
        return EINVAL;
    if (g->kind == KIND_RLOCK && g->state[0] == self_id()) {
        g->state[1]++;
        *ticket = 1;
        return 0;
    }
    if (g->kind == KIND_SEMAPHORE)
        rc = shms_sem_acquire(g->rec, token, 1, timeout_ns, freed, other);
    else
        rc = shms_lock_acquire(g->rec, g->kind, token, timeout_ns, other);
    if (rc == 0 || rc == SHMS_RECOVERED) {
        g->token = token;
        if (g->kind == KIND_RLOCK) {
            g->state[0] = self_id();
            g->state[1] = 1;
        }
        *ticket = 1;
    }
    return rc;
}

static int give_back(shms_sync_guard_t *g)
{
    if (!g->rec)
        return EINVAL;
    if (g->kind == KIND_RLOCK) {
        if (!g->state || g->state[0] != self_id() || !g->state[1])
            return EPERM;
        if (--g->state[1])
            return 0;
        g->state[0] = 0;
        return shms_lock_release(g->rec, g->kind, g->token, 0);
    }
    if (g->kind == KIND_SEMAPHORE)
        return shms_sem_release(g->rec, g->token, 1);
    return shms_lock_release(g->rec, g->kind, g->token, 1);
}

int shms_sync_undo(shms_sync_guard_t *g, int64_t *ticket)
{
    if (!*ticket)
        return 0;
    *ticket = 0;
    return give_back(g);
}

int shms_sync_exit(void *g)
{
    return give_back(g);
}

/* RLock, for Condition.wait: the calling thread's depth (0: not the holder). */
uint64_t shms_sync_depth(shms_sync_guard_t *g)
{
    return g->state && g->state[0] == self_id() ? g->state[1] : 0;
}

/* RLock, for Condition.wait: give back every level at once; the depth it had. */
uint64_t shms_sync_release_all(shms_sync_guard_t *g)
{
    uint64_t depth = shms_sync_depth(g);
    if (depth) {
        g->state[1] = 1;
        give_back(g);
    }
    return depth;
}

/* RLock, after Condition.wait took it again: the depth it had before. */
void shms_sync_set_depth(shms_sync_guard_t *g, uint64_t depth)
{
    if (shms_sync_depth(g) && depth)
        g->state[1] = depth;
}
