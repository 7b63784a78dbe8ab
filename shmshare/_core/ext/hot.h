/* What the two files of shmshare._core._hotpath share: HotPath (hotpath.c),
 * whose heap pointer QueuePath (hotqueue.c) reads, and the recognizer of a
 * pickled bytes object. */
#ifndef SHMS_HOT_H
#define SHMS_HOT_H

#define Py_LIMITED_API 0x030A0000
#include <Python.h>
#include <stdint.h>
#include <errno.h>

#include "shms.h"

typedef int (*peek_fn)(shms_heap_t *, const char *, uint64_t, shms_peek_cb, void *);
typedef int (*store_fn)(shms_heap_t *, const char *, uint64_t, const char *, uint64_t);

typedef struct {
    PyObject_HEAD
    shms_heap_t *heap;    /* NULL once closed (Heap.close) */
    peek_fn peek;
    store_fn store;
    uint64_t max_value;
} HotPath;

extern PyObject *shms_hot_type;     /* HotPath, once the module is initialised */

/* The payload of a pickle that is exactly one bytes object -- PROTO 5, an
 * optional FRAME, SHORT_BINBYTES / BINBYTES / BINBYTES8, an optional
 * MEMOIZE, STOP: what pickle.dumps(b, 5) makes -- or NULL.  pickle.loads of
 * it returns a bytes object equal to the payload, and runs no code. */
const char *shms_hot_bytes_payload(const char *val, uint64_t vlen, uint64_t *n);

/* Adds QueuePath to the module; 0, or -1 with an exception set. */
int shms_hot_add_queue_path(PyObject *module);

#endif
