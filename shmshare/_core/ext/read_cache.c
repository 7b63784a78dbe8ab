/* The read cache's entries for HotPath.get and .keep (hotpath.c): the hit check,
 * the refill in place, the drop of one, the unpickling.  See hot.h. */
#include "hot.h"

/* cache[key] = [value, stripe, version]: entry, the one there (borrowed, or
 * NULL), is updated in place if it is such a list (no new entry, no dict
 * store), else a new list is stored.
 * The bytes kept are counted (the entry replaced is not subtracted, so the
 * count may run ahead of the cache, never behind it); past cache_cap bytes
 * the cache is emptied.  Only bytes and ints are freed here: no Python code
 * runs, so no other thread sees the entry half updated. */
int hot_cache_keep(HotPath *self, PyObject *cache, PyObject *key, PyObject *entry,
                   PyObject *value, uint64_t stripe, uint64_t version)
{
    PyObject *ver, *old;
    if (!(ver = PyLong_FromUnsignedLongLong(version)))
        return -1;
    if (entry && PyList_Check(entry) && PyList_Size(entry) == 3) {
        old = PyList_GetItem(entry, 1);
        if (!PyLong_Check(old) || PyLong_AsUnsignedLongLong(old) != stripe) {
            PyObject *s = PyLong_FromUnsignedLongLong(stripe);
            if (!s) {
                Py_DECREF(ver);
                return -1;
            }
            PyList_SetItem(entry, 1, s);
        }
        Py_INCREF(value);
        PyList_SetItem(entry, 0, value);
        PyList_SetItem(entry, 2, ver);
    } else {
        PyObject *s = PyLong_FromUnsignedLongLong(stripe);
        if (!s || !(entry = PyList_New(3))) {
            Py_XDECREF(s);
            Py_DECREF(ver);
            return -1;
        }
        Py_INCREF(value);
        PyList_SetItem(entry, 0, value);
        PyList_SetItem(entry, 1, s);
        PyList_SetItem(entry, 2, ver);
        if (PyDict_SetItem(cache, key, entry) < 0) {
            Py_DECREF(entry);
            return -1;
        }
        Py_DECREF(entry);
    }
    self->cached_bytes += (uint64_t)PyBytes_Size(value);
    if (self->cached_bytes > self->cache_cap) {
        PyDict_Clear(cache);
        self->cached_bytes = 0;
    }
    return 0;
}

/* loads(data), holding a reference to data: loads may run any Python code,
 * which may replace the cache entry data came from. */
PyObject *hot_cache_unpickle(HotPath *self, PyObject *data)
{
    PyObject *value;
    Py_INCREF(data);
    value = PyObject_CallFunctionObjArgs(self->loads, data, NULL);
    Py_DECREF(data);
    return value;
}

/* The cached bytes of entry (cache[key]: [bytes, stripe, version]) if its
 * stripe still reads its version, else NULL (the key changed, or an entry
 * of another shape: a miss).  No error is left set. */
PyObject *hot_cache_valid_bytes(HotPath *self, PyObject *entry)
{
    PyObject *data;
    uint64_t stripe, version;
    if (!PyList_Check(entry) || PyList_Size(entry) != 3)
        return NULL;
    stripe = PyLong_AsUnsignedLongLong(PyList_GetItem(entry, 1));
    version = PyLong_AsUnsignedLongLong(PyList_GetItem(entry, 2));
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    data = PyList_GetItem(entry, 0);
    if (stripe >= SHMS_DICT_NVER || !PyBytes_Check(data) ||
        __atomic_load_n(&self->versions[stripe], __ATOMIC_ACQUIRE) != version)
        return NULL;
    return data;
}

/* del cache[key] if it is there; 0, or -1 with an exception set. */
int hot_cache_drop(PyObject *cache, PyObject *key)
{
    if (PyDict_DelItem(cache, key) == 0)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_KeyError))
        return -1;
    PyErr_Clear();
    return 0;
}

/* HotPath.keep(cache, key, value, stripe, version): what get keeps after a
 * re-read, for a value the general path read (heap_object.py _read): one
 * count of the bytes cached, whichever path kept them. */
PyObject *hot_cache_keep_args(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *entry;
    unsigned long long stripe, version;
    if (nargs != 5 || !PyDict_Check(args[0]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "keep(cache: dict, key, value: bytes, stripe, version)");
        return NULL;
    }
    stripe = PyLong_AsUnsignedLongLong(args[3]);
    version = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    entry = PyDict_GetItemWithError(args[0], args[1]);
    if (!entry && PyErr_Occurred())
        return NULL;
    if (hot_cache_keep((HotPath *)op, args[0], args[1], entry, args[2], stripe, version) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Under the heap lock: the key is there, and nothing of its value is read. */
static int found(void *arg, const char *val, uint64_t vlen, uint64_t stripe,
                 uint64_t version)
{
    (void)arg, (void)val, (void)vlen, (void)stripe, (void)version;
    return 0;
}

/* HotPath.has itself: key in d for a key hot_key encodes, in one call -- True
 * for a valid cache entry, or for the key found under the lock (its value
 * not copied); False for the key absent under the lock (a cached entry of
 * it dropped); not_read for anything else (the general path decides). */
PyObject *hot_cache_has(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    HotPath *self = (HotPath *)op;
    PyObject *entry;
    char buf[HOT_KEY_MAX];
    const char *kp;
    Py_ssize_t klen;
    int rc;
    if (nargs != 2 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "has(cache: dict, key)");
        return NULL;
    }
    if (!self->heap)
        return Py_NewRef(self->not_read);
    if ((rc = hot_key(args[1], buf, &kp, &klen)) <= 0)
        return rc ? NULL : Py_NewRef(self->not_read);
    entry = PyDict_GetItemWithError(args[0], args[1]);
    if (entry && self->versions) {
        if (hot_cache_valid_bytes(self, entry))
            Py_RETURN_TRUE;
    } else if (PyErr_Occurred()) {
        return NULL;
    }
    rc = self->peek(self->heap, kp, (uint64_t)klen, found, NULL, 0);
    if (hot_retry_held(self, rc))
        rc = self->peek(self->heap, kp, (uint64_t)klen, found, NULL, 1);
    if (!rc)
        Py_RETURN_TRUE;
    if (rc != SHMS_ENOTFOUND)
        return Py_NewRef(self->not_read);
    if (entry && hot_cache_drop(args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_FALSE;
}
