/* Internal layout of the sync records, shared by sync.c, semaphore.c, waits.c
 * and queue.c. */
#ifndef SHMS_SYNC_INT_H
#define SHMS_SYNC_INT_H

#include "dict_int.h"

#define SYNC_MAGIC   0x434e5953u     /* "SYNC" */
#ifndef __x86_64__
#define __builtin_ia32_pause() __asm__ __volatile__("" ::: "memory")
#endif
#define SHMS_SYNC_SLOTS 128           /* semaphore holders, condition waiters, barrier parties */

enum { K_LOCK = 1, K_RLOCK = 2, K_SEM = 3, K_EVENT = 4, K_COND = 5, K_BARRIER = 6, K_QUEUE = 7 };
enum { W_FREE = 0, W_WAITING = 1, W_NOTIFIED = 2 };

typedef struct {
    uint64_t token;      /* 0: free */
    uint64_t count;      /* semaphore: permits held; condition: state; barrier: generation+1 */
} sync_ent_t;

typedef struct {
    uint32_t magic, kind;
    uint32_t seq;        /* futex word */
    uint32_t nwait;
    uint64_t owner;      /* Lock/RLock holder token */
    uint64_t value;      /* Semaphore permits; Event flag; Barrier parties */
    uint64_t bound;      /* BoundedSemaphore: most permits; 0 unbounded */
    uint64_t recoveries; /* dead holders given back (all processes) */
    uint64_t gen;        /* Event sets; Barrier generation; Condition notifications;
                            Queue: 1 while a wake-up is on its way to a getter (queue.c) */
    uint64_t broken;     /* Barrier */
    uint64_t resets[8];  /* Barrier: generations that ended by reset() (ring) */
    uint64_t n_resets;
    /* undo record of a semaphore change in progress */
    uint64_t undo_active, undo_value, undo_slot, undo_token, undo_count;
    /* Queue: items head..tail-1 live in the heap dict (queue.c) */
    uint64_t head, tail, unfinished;
    _Alignas(64) unsigned char mutex[64];
    sync_ent_t ent[SHMS_SYNC_SLOTS];
} sync_rec_t;


/* sync.c: the waiting protocol (see WAITING there).  try returns 0 when done,
 * EAGAIN to keep waiting, anything else to stop with that result. */
typedef int (*shms_try_fn)(sync_rec_t *r, void *arg);
int  shms_sync_wait_for(sync_rec_t *r, shms_try_fn try, void *arg, int64_t timeout_ns);
void shms_sync_wake(sync_rec_t *r, int all);
sync_rec_t *shms_sync_rec(void *p, uint32_t kind);
/* The record's robust mutex, repaired (undo record) if its holder died. */
int  shms_sync_lock(sync_rec_t *r);
int  shms_sync_trylock(sync_rec_t *r);
void shms_sync_unlock(sync_rec_t *r);

#endif
