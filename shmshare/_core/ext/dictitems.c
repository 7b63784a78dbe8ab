/* shmshare._core._hotpath.DictItems, the base class of SharedDict whose slots
 * answer in C, with no Python frame (as hotslots.c's LengthWord and ViewItems).
 *
 * d[k] and d[k] = v for a key hot_key encodes (a non-empty str,
 * an int of 64 bits, bytes, a tuple of such: hotkeys.c) in one C call each.  d[k] is
 * HotPath.get through the dict's read cache (hotpath.c): a hit unpickled
 * without the lock, or the re-read of a changed key.  d[k] = v is the key's
 * bytes (a str's UTF-8, kept by the str), dumps(v, 5), and the heap's store tried
 * once (HotPath's store: the GIL kept, the lock tried once, the heap never
 * grown).
 *   _bind_items(hot, dumps, refused, cache)
 *       The heap's HotPath (cleared by Heap.close(), read at every call),
 *       pickle.dumps, the exception classes for which dumps hands over to
 *       the general path (cloudpickle's fallback), and the read cache (a
 *       dict of key -> [bytes, stripe, version], emptied in place, never
 *       replaced, while bound).
 *   d[k]
 *       HotPath.get(cache, k)'s value; when it did not read the value (any
 *       other key, absent, the lock busy, a large value, no HotPath):
 *       d._getitem(k), which waits, raises KeyError or calls __missing__.
 *   d[k] = v
 *       0 from the store: done.  Another code: d._store_slow(key bytes,
 *       pickle), which waits, grows or raises.  Any other key, a key with
 *       lone surrogates, a value dumps refuses, no HotPath or a closed heap:
 *       d._setitem(k, v).
 *   del d[k]
 *       d._delitem(k).
 *   len(d)
 *       HotPath.len(): the length read under the lock tried once (or under
 *       this thread's hold); otherwise -- busy, no HotPath, a closed heap --
 *       d._length_slow(), which waits or raises.
 *
 * AttrItems, the base class of SharedNamespace, is the same for attributes:
 * ns.x and ns.x = v for a name not starting with '_' (those are the handle's
 * own, found as any object's) are d[k] and d[k] = v of the key "x", handing
 * over to ns._getattr_slow(name), ns._setattr_slow(name, value) and
 * ns._delattr_slow(name).
 */
#include "hot.h"

typedef struct {
    PyObject_HEAD
    HotPath *hot;                 /* strong references, or NULL */
    PyObject *dumps, *refused, *cache;
} DictItems;

static PyObject *protocol_5;      /* the int 5, made at module init */

/* d[k] = v tried in C: 0 done, -1 an exception set, 1 the general path decides
 * (self's _store_slow when the store did not take the pickle at once). */
static int di_store(DictItems *self, PyObject *key, PyObject *value)
{
    HotPath *hot = self->hot;
    Py_ssize_t klen, vlen;
    char *vp, buf[HOT_KEY_MAX];
    const char *kp;
    int rc;
    if (!hot || !hot->heap)
        return 1;
    if ((rc = hot_key(key, buf, &kp, &klen)) <= 0)
        return rc ? -1 : 1;
    if (PyBytes_CheckExact(value) && PyBytes_Size(value) >= HOT_DIRECT_BYTES_MIN) {
        const char *b = PyBytes_AsString(value);
        uint64_t n = (uint64_t)PyBytes_Size(value);
        rc = hot->store_bytes(hot->heap, kp, (uint64_t)klen, b, n, 0);
        if (hot_retry_held(hot, rc))
            rc = hot->store_bytes(hot->heap, kp, (uint64_t)klen, b, n, 1);
        if (!rc)
            return 0;  /* its pickle written straight from it; else pickled below */
    }
    if (shms_hot_large_buffer(value))
        return 1;  /* stored split by the general path: no pickle of its data first */
    PyObject *data = PyObject_CallFunctionObjArgs(self->dumps, value, protocol_5, NULL);
    if (!data) {
        if (!PyErr_ExceptionMatches(self->refused))
            return -1;
        PyErr_Clear();  /* cloudpickle may take it */
        return 1;
    }
    if (PyBytes_AsStringAndSize(data, &vp, &vlen) < 0) {
        Py_DECREF(data);
        return -1;
    }
    /* The store reads the heap pointer now: dumps ran Python code, which may
     * have closed it. */
    rc = hot->heap ? hot->store(hot->heap, kp, (uint64_t)klen, vp, (uint64_t)vlen, 0) : -1;
    if (hot_retry_held(hot, rc))
        rc = hot->store(hot->heap, kp, (uint64_t)klen, vp, (uint64_t)vlen, 1);
    if (rc) {
        PyObject *kb = PyBytes_FromStringAndSize(kp, klen);
        PyObject *r = kb ? PyObject_CallMethod((PyObject *)self, "_store_slow", "(OO)", kb, data)
                         : NULL;
        Py_XDECREF(kb);
        rc = r ? 0 : -1;
        Py_XDECREF(r);
    }
    Py_DECREF(data);
    return rc;
}

/* len(d): the length under the lock tried once (HotPath.len), else the general
 * path's d._length_slow(). */
static Py_ssize_t di_length(PyObject *op)
{
    DictItems *self = (DictItems *)op;
    Py_ssize_t n = self->hot ? hot_dict_len(self->hot) : -1;
    return n >= 0 ? n : hot_length_slow(op);
}

static PyObject *di_getitem(PyObject *op, PyObject *key)
{
    DictItems *self = (DictItems *)op;
    if (self->hot) {
        int absent = 0;
        PyObject *value = hot_get_key(self->hot, self->cache, key, &absent);
        if (absent)  /* what dict does: a subclass's __missing__ answers */
            return PyObject_CallMethod(op, "__missing__", "(O)", key);
        if (value != self->hot->not_read)
            return value;  /* the value, or NULL with an exception set */
        Py_DECREF(value);
    }
    return PyObject_CallMethod(op, "_getitem", "(O)", key);
}

/* d[k] = v (or del d[k], value NULL): di_store, else the method named set
 * (or del) of op, the general path. */
static int store_or_hand_over(PyObject *op, PyObject *key, PyObject *value, const char *set,
                              const char *del)
{
    PyObject *r;
    if (!value) {
        r = PyObject_CallMethod(op, del, "(O)", key);
    } else {
        int rc = di_store((DictItems *)op, key, value);
        if (rc <= 0)
            return rc;
        r = PyObject_CallMethod(op, set, "(OO)", key, value);
    }
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int di_setitem(PyObject *op, PyObject *key, PyObject *value)
{
    return store_or_hand_over(op, key, value, "_setitem", "_delitem");
}

/* ---------------------------------------------------------------- AttrItems */

/* A name of the user's: a non-empty str not starting with '_'. */
static int user_name(PyObject *name)
{
    return PyUnicode_Check(name) && PyUnicode_GetLength(name) > 0 &&
           PyUnicode_ReadChar(name, 0) != '_';
}

static PyObject *ai_getattro(PyObject *op, PyObject *name)
{
    DictItems *self = (DictItems *)op;
    if (!user_name(name))
        return PyObject_GenericGetAttr(op, name);
    if (self->hot) {
        int absent = 0;
        PyObject *value = hot_get_key(self->hot, self->cache, name, &absent);
        if (absent)  /* as SharedNamespace._getattr_slow says it */
            return PyErr_Format(PyExc_AttributeError,
                                "'Namespace' object has no attribute %R", name);
        if (value != self->hot->not_read)
            return value;  /* the value, or NULL with an exception set */
        Py_DECREF(value);
    }
    return PyObject_CallMethod(op, "_getattr_slow", "(O)", name);
}

static int ai_setattro(PyObject *op, PyObject *name, PyObject *value)
{
    if (!user_name(name))
        return PyObject_GenericSetAttr(op, name, value);
    return store_or_hand_over(op, name, value, "_setattr_slow", "_delattr_slow");
}

static PyObject *di_bind(PyObject *op, PyObject *args)
{
    PyObject *hot, *dumps, *refused, *cache;
    DictItems *self = (DictItems *)op;
    if (!PyArg_ParseTuple(args, "O!OOO!", (PyTypeObject *)shms_hot_type, &hot, &dumps, &refused,
                          &PyDict_Type, &cache))
        return NULL;
    PyObject *old[4] = {(PyObject *)self->hot, self->dumps, self->refused, self->cache};
    self->hot = (HotPath *)Py_NewRef(hot);
    self->dumps = Py_NewRef(dumps);
    self->refused = Py_NewRef(refused);
    self->cache = Py_NewRef(cache);
    for (int i = 0; i < 4; i++)
        Py_XDECREF(old[i]);
    Py_RETURN_NONE;
}

static void di_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    Py_CLEAR(((DictItems *)op)->hot);
    Py_CLEAR(((DictItems *)op)->dumps);
    Py_CLEAR(((DictItems *)op)->refused);
    Py_CLEAR(((DictItems *)op)->cache);
    tp_free(op);
    Py_DECREF(type);
}

static PyMethodDef di_methods[] = {
    {"_bind_items", di_bind, METH_VARARGS,
     "_bind_items(hot, dumps, refused, cache): d[k] and d[k] = v for a str, int, bytes or "
     "tuple key in C, through hot and the read cache."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot di_slots[] = {
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, di_dealloc},
    {Py_tp_methods, di_methods},
    {Py_mp_length, di_length},
    {Py_mp_subscript, di_getitem},
    {Py_mp_ass_subscript, di_setitem},
    {Py_tp_doc, "A base class whose d[k] and d[k] = v for a str, int, bytes or tuple key are "
                "one C call each (see shmshare.objects.dict)."},
    {0, NULL},
};

static PyType_Spec di_spec = {
    "shmshare._core._hotpath.DictItems", sizeof(DictItems), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, di_slots,
};

static PyType_Slot ai_slots[] = {
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, di_dealloc},
    {Py_tp_methods, di_methods},
    {Py_tp_getattro, ai_getattro},
    {Py_tp_setattro, ai_setattro},
    {Py_tp_doc, "A base class whose ns.x and ns.x = v are one C call each (see "
                "shmshare.objects.namespace)."},
    {0, NULL},
};

static PyType_Spec ai_spec = {
    "shmshare._core._hotpath.AttrItems", sizeof(DictItems), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, ai_slots,
};

/* See hot.h. */
int shms_hot_add_dict_items(PyObject *module)
{
    if (!protocol_5 && !(protocol_5 = PyLong_FromLong(5)))
        return -1;
    if (hot_add_type(module, &di_spec, "DictItems"))
        return -1;
    return hot_add_type(module, &ai_spec, "AttrItems");
}
