/* HotPath's calls beyond the read cache's (hotpath.c holds the type and its
 * method table): store(), len() and pop(), and the run of every call under this
 * thread's hold of the lock -- guarded(), which gives the HotPath its heap
 * handle's guard, and hot_held, which asks it.  See hot.h. */
#include "hot.h"
#include <pthread.h>

typedef struct {
    PyObject *out;
    uint64_t max_value;
} take_ctx;

/* See hot.h.  The guard's owner and depth are written only by the thread that
 * holds the lock (src/guard.c): another thread never reads its own id there. */
int hot_held(const HotPath *self)
{
    const shms_guard_t *g = self->guard;
    return g && g->target && g->depth &&
           __atomic_load_n(&g->owner, __ATOMIC_RELAXED) == (uint64_t)pthread_self();
}

/* See hot.h. */
Py_ssize_t hot_dict_len(HotPath *self)
{
    uint64_t n = 0;
    int rc;
    if (!self->heap || !self->dict_len)
        return -1;
    rc = self->dict_len(self->heap, &n, 0, 0);
    if (hot_retry_held(self, rc))
        rc = self->dict_len(self->heap, &n, 1, 0);
    return rc || n > (uint64_t)PY_SSIZE_T_MAX ? -1 : (Py_ssize_t)n;
}

PyObject *hot_len(PyObject *op, PyObject *unused)
{
    (void)unused;
    return PyLong_FromSsize_t(hot_dict_len((HotPath *)op));
}

/* Under the heap lock: the value copied into a new bytes object (a value above
 * max_value is left to the general path, which reads it into a reusable
 * buffer: SHMS_ETOOSMALL, and nothing is taken). */
static int take_copy(void *arg, const char *val, uint64_t vlen)
{
    take_ctx *c = arg;
    Py_CLEAR(c->out);
    if (vlen > c->max_value)
        return SHMS_ETOOSMALL;
    return (c->out = PyBytes_FromStringAndSize(val, (Py_ssize_t)vlen)) ? 0 : ENOMEM;
}

/* pop(cache, key) -> the value's pickle | None | not_read: d.pop(key) for a key
 * hot_key encodes, in one call -- the value copied out and the key deleted
 * under the lock tried once (or under this thread's hold), a cached entry of it
 * dropped; None: the dict has no such key (found so under the lock); not_read:
 * nothing taken, the general path decides (busy, a large value, damage...). */
PyObject *hot_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    HotPath *self = (HotPath *)op;
    take_ctx c = {.out = NULL, .max_value = self->max_value};
    char buf[HOT_KEY_MAX];
    const char *kp;
    Py_ssize_t klen;
    int rc;
    if (nargs != 2 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "pop(cache: dict, key)");
        return NULL;
    }
    if (!self->heap || !self->take)
        return Py_NewRef(self->not_read);
    if ((rc = hot_key(args[1], buf, &kp, &klen)) <= 0)
        return rc ? NULL : Py_NewRef(self->not_read);
    rc = self->take(self->heap, kp, (uint64_t)klen, take_copy, &c, 0);
    if (hot_retry_held(self, rc))
        rc = self->take(self->heap, kp, (uint64_t)klen, take_copy, &c, 1);
    if (rc == 0 || rc == SHMS_ENOTFOUND) {
        if (hot_cache_drop(args[0], args[1]) < 0) {
            Py_XDECREF(c.out);
            return NULL;
        }
        return rc ? Py_NewRef(Py_None) : c.out;
    }
    Py_XDECREF(c.out);
    if (rc == ENOMEM && PyErr_Occurred())
        return NULL;
    return Py_NewRef(self->not_read);
}

/* guarded(owner, guard): the handle's guard, at address guard (its memory kept
 * alive by owner): under this thread's hold of the lock, calls run held. */
PyObject *hot_guarded(PyObject *op, PyObject *args)
{
    HotPath *self = (HotPath *)op;
    unsigned long long guard;
    PyObject *owner, *old;
    if (!PyArg_ParseTuple(args, "OK", &owner, &guard))
        return NULL;
    if (!guard) {
        PyErr_SetString(PyExc_ValueError, "guarded needs a non-zero address");
        return NULL;
    }
    if (!self->heap)
        Py_RETURN_NONE;  /* closed: nothing is tried any more */
    old = self->guard_owner;
    self->guard_owner = Py_NewRef(owner);
    self->guard = (const shms_guard_t *)(uintptr_t)guard;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* store(key, cmp_len, value, value_len): Heap.store (hotpath.c, the top). */
PyObject *hot_store(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    HotPath *self = (HotPath *)op;
    char *kp, *vp;
    Py_ssize_t klen, vlen;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "store(key, cmp_len, value, value_len)");
        return NULL;
    }
    if (PyBytes_AsStringAndSize(args[0], &kp, &klen) < 0 ||
        PyBytes_AsStringAndSize(args[2], &vp, &vlen) < 0)
        return NULL;
    if (!self->heap || PyLong_AsSsize_t(args[1]) != klen || PyLong_AsSsize_t(args[3]) != vlen) {
        if (PyErr_Occurred())
            return NULL;
        return PyLong_FromLong(-1);
    }
    int rc = self->store(self->heap, kp, (uint64_t)klen, vp, (uint64_t)vlen, 0);
    if (hot_retry_held(self, rc))
        rc = self->store(self->heap, kp, (uint64_t)klen, vp, (uint64_t)vlen, 1);
    return PyLong_FromLong(rc);
}

/* HotPath.store_key(key, value): store() for a key hot_key encodes (byte for
 * byte codec.encode_key's bytes), encoded here: the store's code, or -1 for
 * any other key or a closed heap (the general path's). */
PyObject *hot_store_key(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    HotPath *self = (HotPath *)op;
    char buf[HOT_KEY_MAX], *vp;
    const char *kp;
    Py_ssize_t klen, vlen;
    int rc;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "store_key(key, value)");
        return NULL;
    }
    if (PyBytes_AsStringAndSize(args[1], &vp, &vlen) < 0)
        return NULL;
    if (!self->heap)
        return PyLong_FromLong(-1);
    if ((rc = hot_key(args[0], buf, &kp, &klen)) <= 0)
        return rc ? NULL : PyLong_FromLong(-1);
    rc = self->store(self->heap, kp, (uint64_t)klen, vp, (uint64_t)vlen, 0);
    if (hot_retry_held(self, rc))
        rc = self->store(self->heap, kp, (uint64_t)klen, vp, (uint64_t)vlen, 1);
    return PyLong_FromLong(rc);
}
