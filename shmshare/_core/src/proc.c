/* The process table: which processes are alive, as the kernel sees it.
 *
 * WHY.  "Did the holder of this lock die?" cannot be answered by pids: a pid
 * is reused, and processes in different PID namespaces that share one IPC
 * namespace see different pids.  The kernel answers it for robust futexes:
 * when a thread dies, however it dies, the kernel walks its robust list and
 * marks every robust mutex it holds OWNER_DIED, clearing the owner's thread
 * id from the lock word (LMDB finds dead readers the same way).
 *
 * HOW.  The table is one System V segment per user: a 64-byte header, then
 * 64-byte slots, each with a robust process-shared mutex.  A process claims
 * a free slot by locking its mutex from a thread that does nothing else and
 * lives as long as the process (a Python thread could end first, which would
 * make the process look dead), bumps the slot's generation, and never
 * unlocks.  Its token is (slot, generation).  A token is alive while the
 * slot's generation is unchanged and the lock word names a thread: reading
 * it takes no lock and no system call, needs no /proc, and means the same
 * in every PID namespace.  A slot whose owner died is claimed again by the
 * next process that finds its mutex OWNER_DIED; the new generation makes
 * old tokens dead for good.
 *
 * Slots are initialised lazily (state 0 -> 1 -> 2 by compare-and-swap), so
 * the segment needs no creator step that could be cut short; a claimer
 * killed between 1 and 2 loses that one slot, nothing else.
 */
#include "shms.h"
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PROC_MAGIC 0x31434f5250534d48ULL   /* "HMSPROC1" */
#define SLOT_SIZE  64
#define SHMS_GEN_MASK 0x1FFFFu

typedef struct {
    uint64_t magic;
    uint64_t pad[7];
} proc_hdr_t;

typedef struct {
    uint32_t state;          /* 0 never used, 1 being initialised, 2 ready */
    uint32_t gen;            /* bumped by each claimer; 0 is never a generation */
    uint32_t pid;            /* the claimer's pid in its namespace (display only) */
    uint32_t pad;
    _Alignas(16) unsigned char mutex[48];
} proc_slot_t;

_Static_assert(sizeof(proc_hdr_t) == SLOT_SIZE, "process table header");
_Static_assert(sizeof(proc_slot_t) == SLOT_SIZE, "process table slot");
_Static_assert(sizeof(pthread_mutex_t) <= 48, "mutex does not fit a process slot");

static proc_slot_t *slot_at(void *table, uint32_t i)
{
    return (proc_slot_t *)((char *)table + SLOT_SIZE * (1 + (size_t)i));
}

uint32_t shms_proc_slots(uint64_t size)
{
    return size < 2 * SLOT_SIZE ? 0 : (uint32_t)(size / SLOT_SIZE - 1);
}

/* 0 if the table is ours (its magic is set now if it was zero), else EINVAL. */
int shms_proc_check(void *table)
{
    uint64_t expected = 0;
    proc_hdr_t *H = table;
    if (__atomic_compare_exchange_n(&H->magic, &expected, PROC_MAGIC, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        return 0;
    return expected == PROC_MAGIC ? 0 : EINVAL;
}

static int try_claim(proc_slot_t *s)
{
    uint32_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE), zero = 0;
    int rc;
    if (st == 0) {
        if (!__atomic_compare_exchange_n(&s->state, &zero, 1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            return EBUSY;
        if ((rc = shms_mutex_init(s->mutex)))
            return rc;                  /* the slot stays at 1: lost, harmless */
        __atomic_store_n(&s->state, 2, __ATOMIC_RELEASE);
    } else if (st != 2) {
        return EBUSY;
    }
    rc = shms_mutex_lock(s->mutex, 0);
    if (rc == EOWNERDEAD)
        rc = shms_mutex_consistent(s->mutex);
    return rc;
}

typedef struct {
    void *table;
    uint32_t nslots, start;
    uint32_t slot, gen;
    int rc;
    uint32_t done;           /* futex word: 1 once slot/gen/rc are set */
} claim_t;

static void *holder_main(void *arg)
{
    claim_t *c = arg;
    uint32_t i, n = c->nslots, sleep_word = 0;
    int rc = ENOSPC;
    for (i = 0; i < n; i++) {
        uint32_t k = (c->start + i) % n;
        proc_slot_t *s = slot_at(c->table, k);
        if (try_claim(s) == 0) {
            uint32_t g = __atomic_load_n(&s->gen, __ATOMIC_RELAXED) + 1;
            if (g == 0 || g > SHMS_GEN_MASK)
                g = 1;                  /* tokens keep 17 bits of the generation */
            s->pid = (uint32_t)getpid();
            __atomic_store_n(&s->gen, g, __ATOMIC_RELEASE);
            c->slot = k;
            c->gen = g;
            rc = 0;
            break;
        }
    }
    c->rc = rc;
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &c->done, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    /* c belongs to the caller from here on.  Hold the slot (if any) for life. */
    for (;;)
        syscall(SYS_futex, &sleep_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    return NULL;
}

/* Claim a slot for this process from a thread that holds it for life.
 * ENOSPC: every slot is held by a live process. */
int shms_proc_register(void *table, uint32_t nslots, uint32_t *slot, uint32_t *gen)
{
    claim_t c = {.table = table, .nslots = nslots, .start = (uint32_t)getpid() % (nslots ? nslots : 1)};
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;
    int rc;
    if (!nslots)
        return EINVAL;
    if ((rc = pthread_attr_init(&attr)))
        return rc;
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* The thread inherits a mask blocking every signal: signals stay for Python. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&t, &attr, holder_main, &c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc)
        return rc;
    while (!__atomic_load_n(&c.done, __ATOMIC_ACQUIRE))
        syscall(SYS_futex, &c.done, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    if (c.rc == 0) {
        *slot = c.slot;
        *gen = c.gen;
    }
    return c.rc;
}

/* 1 while the process that got (slot, gen) from shms_proc_register lives. */
int shms_proc_alive(const void *table, uint32_t nslots, uint32_t slot, uint32_t gen)
{
    const proc_slot_t *s;
    if (slot >= nslots)
        return 0;
    s = slot_at((void *)table, slot);
    if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != 2 ||
        __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE) != gen)
        return 0;
    return shms_mutex_owner(s->mutex) > 0;
}

/* The pid a slot's claimer recorded (in its own PID namespace), for display. */
uint32_t shms_proc_pid(const void *table, uint32_t slot)
{
    return __atomic_load_n(&slot_at((void *)table, slot)->pid, __ATOMIC_RELAXED);
}

/* ------------------------------------------------ tokens, as sync.c sees them
 *
 * A token is uid << 32 | table << 29 | slot << 17 | generation (see proc.py).
 * The Python layer attaches tables and makes them known here, so that a
 * waiter can ask about a holder without leaving C. */
#define KNOWN_MAX 64
static struct { uint64_t id; const void *table; uint32_t nslots; } known[KNOWN_MAX];
static uint32_t n_known;
static pthread_mutex_t known_lock = PTHREAD_MUTEX_INITIALIZER;

void shms_proc_know(uint32_t uid, uint32_t index, const void *table, uint32_t nslots)
{
    uint64_t id = (uint64_t)uid << 3 | index;
    uint32_t i;
    pthread_mutex_lock(&known_lock);
    for (i = 0; i < n_known && known[i].id != id; i++)
        ;
    if (i == n_known && n_known < KNOWN_MAX) {
        known[i].id = id;
        known[i].table = table;
        known[i].nslots = nslots;
        __atomic_store_n(&n_known, n_known + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&known_lock);
}

/* 1 alive, 0 dead (0 is nobody: dead), -1 the token's table is not known here. */
int shms_proc_token_alive(uint64_t token)
{
    uint64_t id = (token >> 32) << 3 | ((token >> 29) & 7);
    uint32_t i, n = __atomic_load_n(&n_known, __ATOMIC_ACQUIRE);
    if (!token)
        return 0;
    for (i = 0; i < n; i++)
        if (known[i].id == id)
            return shms_proc_alive(known[i].table, known[i].nslots,
                                   (uint32_t)(token >> 17) & 0xFFF, (uint32_t)token & SHMS_GEN_MASK);
    return -1;
}
