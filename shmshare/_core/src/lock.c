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
