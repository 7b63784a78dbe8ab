/* Process-shared robust mutex.
 *
 * PTHREAD_MUTEX_ROBUST: when the owner dies, the kernel walks the dead
 * thread's robust list and marks the futex word; the next locker gets
 * EOWNERDEAD, repairs the protected data, and calls shms_mutex_consistent().
 * Unlocking without that makes the mutex permanently ENOTRECOVERABLE, so
 * the Python layer always repairs (or declares the object corrupt) first.
 *
 * PTHREAD_MUTEX_ERRORCHECK: relocking from the owning thread returns EDEADLK
 * instead of hanging forever.
 */
#include "shms.h"
#include <errno.h>
#include <pthread.h>
#include <linux/futex.h>
#include <time.h>

size_t shms_mutex_size(void)
{
    return sizeof(pthread_mutex_t);
}

int shms_mutex_init(void *m)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc)
        return rc;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!rc)
        rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    if (!rc)
        rc = pthread_mutex_init((pthread_mutex_t *)m, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

/* timeout_ns < 0: wait forever; 0: try once (EBUSY); > 0: relative timeout
 * measured on CLOCK_MONOTONIC, so wall-clock jumps cannot stretch it. */
int shms_mutex_lock(void *m, int64_t timeout_ns)
{
    pthread_mutex_t *mx = (pthread_mutex_t *)m;
    struct timespec ts;
    int rc;
    if (timeout_ns < 0)
        return pthread_mutex_lock(mx);
    if (timeout_ns == 0)
        return pthread_mutex_trylock(mx);
    /* Uncontended: skip computing a deadline (clock_gettime) altogether. */
    rc = pthread_mutex_trylock(mx);
    if (rc != EBUSY)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(timeout_ns / 1000000000LL);
    ts.tv_nsec += (long)(timeout_ns % 1000000000LL);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_mutex_clocklock(mx, CLOCK_MONOTONIC, &ts);
}

int shms_mutex_consistent(void *m)
{
    return pthread_mutex_consistent((pthread_mutex_t *)m);
}

int shms_mutex_unlock(void *m)
{
    return pthread_mutex_unlock((pthread_mutex_t *)m);
}

int shms_mutex_destroy(void *m)
{
    return pthread_mutex_destroy((pthread_mutex_t *)m);
}

/* The thread id in the lock word of a locked mutex; 0 when unlocked or when
 * this C library's layout is unknown; -1 when the word is set but names no
 * thread (only flag bits: no one can ever unlock it).  (glibc keeps the owner's TID in the
 * futex word of robust mutexes; the kernel relies on that to mark it
 * OWNER_DIED when the owner exits.)  Used to tell a damaged lock word, which
 * would make every locker wait forever, from a live holder. */
int64_t shms_mutex_owner(const void *m)
{
#ifdef __GLIBC__
    unsigned word = (unsigned)((const pthread_mutex_t *)m)->__data.__lock;
    return word && !(word & FUTEX_TID_MASK) ? -1 : (int64_t)(word & FUTEX_TID_MASK);
#else
    (void)m;
    return 0;
#endif
}

/* 1 if the mutex's type word is the one shms_mutex_init writes (robust,
 * process-shared, error-checking), else 0; 1 when the layout is unknown. */
int shms_mutex_kind_ok(const void *m)
{
#ifdef __GLIBC__
    pthread_mutex_t fresh;
    int kind;
    if (shms_mutex_init(&fresh))
        return 1;
    kind = fresh.__data.__kind;        /* read first: destroy overwrites it */
    pthread_mutex_destroy(&fresh);
    return ((const pthread_mutex_t *)m)->__data.__kind == kind;
#else
    (void)m;
    return 1;
#endif
}
