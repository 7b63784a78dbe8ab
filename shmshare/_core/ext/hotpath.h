/* The HotPath object (hotpath.c) and its read cache's entries (read_cache.c).
 *
 * A read cache is a dict of key -> [bytes, stripe, version]: the pickled
 * bytes this process last read, valid while the dict's version stripe
 * (READ CACHE in src/dict.c) still reads that version.
 */
#ifndef SHMS_HOTPATH_H
#define SHMS_HOTPATH_H

#define Py_LIMITED_API 0x030A0000
#include <Python.h>
#include <stdint.h>

#include "shms.h"

typedef int (*peek_fn)(shms_heap_t *, const char *, uint64_t, shms_peek_cb, void *);
typedef int (*store_fn)(shms_heap_t *, const char *, uint64_t, const char *, uint64_t);

typedef struct {
    PyObject_HEAD
    shms_heap_t *heap;
    peek_fn peek;
    store_fn store;
    uint64_t max_value;
    PyObject *loads, *not_read;   /* pickle.loads; what get returns for "not read" */
    uint64_t cached_bytes, cache_cap;
    /* The dict's version stripes (READ CACHE in dict.c), once this process
     * maps them (versions_mapped); they live as long as the heap. */
    const uint64_t *versions;
} HotPath;

#define HOT_HIDDEN __attribute__((visibility("hidden")))

/* The bytes of entry (borrowed) if its stripe still reads its version. */
HOT_HIDDEN PyObject *hot_cache_valid_bytes(HotPath *self, PyObject *entry);
/* cache[key] = [value, stripe, version], entry (borrowed, or NULL) being
 * cache[key] now; 0, or -1 with an exception set. */
HOT_HIDDEN int hot_cache_keep(HotPath *self, PyObject *cache, PyObject *key, PyObject *entry,
                              PyObject *value, uint64_t stripe, uint64_t version);
/* loads(data), holding a reference to data meanwhile. */
HOT_HIDDEN PyObject *hot_cache_unpickle(HotPath *self, PyObject *data);

#endif
