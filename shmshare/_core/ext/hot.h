/* What the files of shmshare._core._hotpath share: the HotPath object
 * (hotpath.c), its read cache's entries (read_cache.c), and what QueuePath
 * (hotqueue.c) and LengthWord (hotslots.c) use of it -- its heap pointer, the
 * recognizer of a pickled bytes object, a list's length word.
 *
 * A read cache is a dict of key -> [bytes, stripe, version]: the pickled
 * bytes this process last read, valid while the dict's version stripe
 * (READ CACHE in src/dict.c) still reads that version.
 */
#ifndef SHMS_HOT_H
#define SHMS_HOT_H

#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030A0000
#include <Python.h>
#include <stdint.h>
#include <errno.h>

#include "shms.h"

/* The one-call paths' C functions (src/dict_hot.c): their last argument is held
 * (0: the lock tried once; 1: run under the calling thread's hold). */
typedef int (*peek_fn)(shms_heap_t *, const char *, uint64_t, shms_peek_cb, void *, int);
typedef int (*store_fn)(shms_heap_t *, const char *, uint64_t, const char *, uint64_t, int);
typedef int (*list_peek_fn)(shms_heap_t *, int64_t, int, shms_peek_cb, void *);
typedef int (*dict_len_fn)(shms_heap_t *, uint64_t *, int, int64_t);
typedef int (*take_fn)(shms_heap_t *, const char *, uint64_t, shms_take_cb, void *, int);

/* Bytes objects from this size up are stored by store_bytes (STORE OF BYTES
 * in src/dict_hot.c): pickle's frame size, past which the stored bytes are
 * exactly pickle's. */
#define HOT_DIRECT_BYTES_MIN (64 * 1024)

typedef struct {
    PyObject_HEAD
    shms_heap_t *heap;    /* NULL once closed (Heap.close) */
    peek_fn peek;
    store_fn store;
    store_fn store_bytes; /* (heap, key, klen, payload, n): the pickle of bytes */
    uint64_t max_value;
    PyObject *loads, *not_read;   /* pickle.loads; what get returns for "not read" */
    uint64_t cached_bytes, cache_cap;
    /* The dict's version stripes (READ CACHE in dict.c), once this process
     * maps them (versions_mapped); they live as long as the heap. */
    const uint64_t *versions;
    /* A list's length word (LENGTH WORD in list.c), once this process maps
     * it (list_mapped); cleared with heap. */
    const volatile uint64_t *list_len;
    list_peek_fn list_peek;   /* shms_list_peek, given with list_len */
    /* The heap handle's guard (guarded()), once made: when a try finds the lock
     * taken and this thread is the one holding it there, the op runs again
     * held, under that hold.  guard_owner keeps its memory alive; both are
     * cleared with heap. */
    const shms_guard_t *guard;
    PyObject *guard_owner;
    dict_len_fn dict_len;     /* shms_dict_len (HotPath's 9th argument), or NULL */
    take_fn take;             /* shms_dict_take_try (its 10th), or NULL */
} HotPath;

#define HOT_HIDDEN __attribute__((visibility("hidden")))

extern PyObject *shms_hot_type;     /* HotPath, once the module is initialised */

/* The payload of a pickle that is exactly one bytes object -- PROTO 5, an
 * optional FRAME, SHORT_BINBYTES / BINBYTES / BINBYTES8, an optional
 * MEMOIZE, STOP: what pickle.dumps(b, 5) makes -- or NULL.  pickle.loads of
 * it returns a bytes object equal to the payload, and runs no code. */
const char *shms_hot_bytes_payload(const char *val, uint64_t vlen, uint64_t *n);

/* Add QueuePath (hotqueue.c), and LengthWord, ViewItems and DictItems
 * (hotslots.c, dictitems.c) to the module; 0, or -1 with an exception set. */
int shms_hot_add_queue_path(PyObject *module);
int shms_hot_add_slot_types(PyObject *module);
/* Add DictItems and AttrItems (dictitems.c), for shms_hot_add_slot_types; 0, or -1 set. */
HOT_HIDDEN int shms_hot_add_dict_items(PyObject *module);
/* len(obj) by obj._length_slow(), the general path of LengthWord's and
 * DictItems' len() (hotslots.c); -1 with an exception set on error. */
HOT_HIDDEN Py_ssize_t hot_length_slow(PyObject *op);
/* module.name = PyType_FromSpec(spec) (hotslots.c); 0, or -1 with an exception set. */
HOT_HIDDEN int hot_add_type(PyObject *module, PyType_Spec *spec, const char *name);
/* Add uninit_bytearray and SPLIT_MIN (buffers.c); 0, or -1 with an exception set. */
int shms_hot_add_buffer_funcs(PyObject *module);
/* Add parse_scan (hotscan.c); 0, or -1 with an exception set. */
int shms_hot_add_scan_funcs(PyObject *module);
/* Values from this size up that d[k] = v leaves to the general path, which
 * stores them split (src/dict_split.c): a bytearray or an array (buffers.c). */
#define HOT_SPLIT_MIN (1 << 20)
HOT_HIDDEN int shms_hot_large_buffer(PyObject *value);

/* The key bytes the hot paths encode themselves (hotkeys.c): a non-empty
 * str's UTF-8 (*kp then points into the str); an int that fits 64 bits, a
 * bytes key, or a tuple of those, str and None, tagged as objects/codec.py
 * tags them (written in buf, at most HOT_KEY_MAX bytes).  1: *kp and *klen
 * are the key's bytes, its compared length too; 0: another key, the general
 * path's (no exception set); -1: an exception set. */
#define HOT_KEY_MAX 256
HOT_HIDDEN int hot_key(PyObject *key, char buf[HOT_KEY_MAX], const char **kp, Py_ssize_t *klen);
/* Whether the calling thread holds the heap lock through the guard of the
 * heap's handle (HotPath.guarded): then a try that found the lock busy runs
 * again held (hotops.c). */
HOT_HIDDEN int hot_held(const HotPath *self);
/* A try's rc says the lock is taken -- by another (EBUSY), or by this very
 * thread (EDEADLK: the mutex checks errors) -- and this thread's guard holds
 * it: the op runs again held.  The guard decides, not the mutex alone: a
 * thread of another PID namespace may have the same thread id. */
#define hot_retry_held(self, rc) (((rc) == EBUSY || (rc) == EDEADLK) && hot_held(self))
/* len() of the dict: its length read under the lock, tried once (or under this
 * thread's hold of it), or -1: the general path decides (hotops.c). */
HOT_HIDDEN Py_ssize_t hot_dict_len(HotPath *self);
/* HotPath.store, .store_key, .len, .pop and .guarded themselves (hotops.c). */
HOT_HIDDEN PyObject *hot_store(PyObject *op, PyObject *const *args, Py_ssize_t nargs);
HOT_HIDDEN PyObject *hot_store_key(PyObject *op, PyObject *const *args, Py_ssize_t nargs);
HOT_HIDDEN PyObject *hot_len(PyObject *op, PyObject *unused);
HOT_HIDDEN PyObject *hot_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs);
HOT_HIDDEN PyObject *hot_guarded(PyObject *op, PyObject *args);
/* HotPath.get(cache, key, default) (hotpath.c), cache a dict: the value,
 * not_read, NULL with *absent set (the key is not in the dict; no exception
 * set), or NULL with an exception set.  DictItems' d[k] calls it directly. */
HOT_HIDDEN PyObject *hot_get_key(HotPath *self, PyObject *cache, PyObject *key, int *absent);
/* HotPath.list_read_bytes and list_mapped (hotlist.c). */
HOT_HIDDEN PyObject *hot_list_read_bytes(PyObject *op, PyObject *const *args,
                                         Py_ssize_t nargs);
HOT_HIDDEN PyObject *hot_list_mapped(PyObject *op, PyObject *const *args, Py_ssize_t nargs);
/* The bytes of entry (borrowed) if its stripe still reads its version. */
HOT_HIDDEN PyObject *hot_cache_valid_bytes(HotPath *self, PyObject *entry);
/* cache[key] = [value, stripe, version], entry (borrowed, or NULL) being
 * cache[key] now; 0, or -1 with an exception set. */
HOT_HIDDEN int hot_cache_keep(HotPath *self, PyObject *cache, PyObject *key, PyObject *entry,
                              PyObject *value, uint64_t stripe, uint64_t version);
/* del cache[key] if it is there; 0, or -1 with an exception set. */
HOT_HIDDEN int hot_cache_drop(PyObject *cache, PyObject *key);
/* HotPath.keep itself (its method-table entry): the arguments checked and
 * kept (hot_cache_keep); None, or NULL with an exception set. */
HOT_HIDDEN PyObject *hot_cache_keep_args(PyObject *op, PyObject *const *args,
                                         Py_ssize_t nargs);
/* HotPath.has itself (read_cache.c): key in d for a hot_key key; True, False,
 * not_read, or NULL with an exception set. */
HOT_HIDDEN PyObject *hot_cache_has(PyObject *op, PyObject *const *args, Py_ssize_t nargs);
/* loads(data), holding a reference to data meanwhile. */
HOT_HIDDEN PyObject *hot_cache_unpickle(HotPath *self, PyObject *data);

#endif
