/* shmshare._core._hotpath: HotPath(heap, peek, store_try, store_bytes_try, max_value,
 *                                  loads, not_read, cache_cap).
 *
 * The two calls a user of SharedDict makes most, d[k] = v and the re-read
 * of a d[k] whose cached value went out of date, without cffi's per-call
 * costs (an argument tuple, a conversion per argument, the GIL released and
 * taken back): each is one C call that keeps the GIL, and so never waits --
 * it tries the heap lock once, and any other outcome returns a code for
 * which the caller takes the general path (cffi, waits in slices, raises).
 *
 *   fetch(key) -> (value bytes, stripe, version) | None (absent) | int code
 *       The value is copied once, straight from the heap into the bytes
 *       returned (src/dict_hot.c); stripe is -1 when the dict has no
 *       version stripes.  A value above max_value bytes is not copied here
 *       (code SHMS_ETOOSMALL): the caller reads it into a reusable buffer.
 *   get(cache, key[, default]) -> the value | default | not_read
 *       d[key] for a str, int, bytes or tuple key (encoded here, hotkeys.c),
 *       default (not_read if not given) if the dict has no such key (found
 *       so under the lock): a cache hit (cache[key] =
 *       [bytes, stripe, version], the stripe still at that version) is
 *       unpickled with loads; a miss or a changed key takes fetch's copy,
 *       kept in cache (the list updated in place), unpickled once the lock
 *       is released.  A value above max_value that is the pickle of one
 *       bytes object comes unpickled, copied once from the heap, and is not
 *       kept.  Any other outcome returns not_read: the general path
 *       (objects/dict.py) decides; so does everything but a large bytes
 *       value until versions_mapped(address) says where the stripes are.
 *   keep(cache, key, value, stripe, version)
 *       What get keeps after a re-read, for a value the general path read:
 *       the bytes cached are counted once, against cache_cap, whoever kept them.
 *   has(cache, key) -> True | False | not_read
 *       key in d the same way, no value read (read_cache.c).
 *   store(key, cmp_len, value, value_len) -> 0 | int code
 *       Heap.store's signature; a cmp_len or value_len other than the
 *       lengths of key and value returns -1 (the general path decides).
 *       (DictItems' d[k] = b, b bytes of DIRECT_BYTES_MIN or more, calls
 *       store_bytes_try: b's pickle written straight from b.)
 *   close()
 *       Forget the heap: every later call returns -1.  Heap.close() calls it
 *       before freeing the handle, so a HotPath kept anywhere is harmless.
 *
 * The functions live in the cffi module (hidden symbols), so their
 * addresses are passed in, as for ExitCall (exitcall.c).  Limited API.
 * The module's other types are QueuePath (a queue's put and get, hotqueue.c)
 * and the base classes LengthWord, ViewItems and DictItems (len() of a list,
 * a[i] of an array: hotslots.c; d[k] = v: dictitems.c).
 *
 *   list_mapped(address, peek), list_read_bytes(i, remove)
 *       For a list heap (hotlist.c); close() forgets the list too.
 */
#include "hot.h"

typedef struct {
    PyObject *out;
    uint64_t max_value, stripe, version;
    int whole_bytes;      /* in: a large bytes pickle may be answered unpickled;
                           * out: out is that value, not a pickle */
} fetch_ctx;

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    while (n--)
        v = v << 8 | p[n];
    return v;
}

/* See hot.h. */
const char *shms_hot_bytes_payload(const char *val, uint64_t vlen, uint64_t *n)
{
    const unsigned char *p = (const unsigned char *)val, *end = p + vlen;
    int w;
    if (vlen < 4 || p[0] != 0x80 || p[1] != 5)
        return NULL;
    p += 2;
    if (*p == 0x95) {                         /* FRAME <8 bytes> */
        if (end - p < 10)
            return NULL;
        p += 9;
    }
    w = *p == 'C' ? 1 : *p == 'B' ? 4 : *p == 0x8e ? 8 : 0;
    if (!w || (uint64_t)(end - p) < 1 + (uint64_t)w)
        return NULL;
    *n = le(p + 1, w);
    p += 1 + w;
    if (*n >= (uint64_t)(end - p))            /* STOP must follow the payload */
        return NULL;
    end -= *n;
    if ((uint64_t)(end - p) == 2 ? !(p[*n] == 0x94 && p[*n + 1] == '.')
                                 : !((uint64_t)(end - p) == 1 && p[*n] == '.'))
        return NULL;
    return (const char *)p;
}

/* Under the heap lock: only a bytes allocation, which runs no Python code. */
static int take_value(void *arg, const char *val, uint64_t vlen, uint64_t stripe,
                      uint64_t version)
{
    fetch_ctx *c = arg;
    const char *payload;
    uint64_t n;
    if (vlen > c->max_value) {
        /* A large bytes value: copied once, straight into the bytes returned
         * (a reusable buffer, then pickle.loads, would copy it twice). */
        if (!c->whole_bytes || !(payload = shms_hot_bytes_payload(val, vlen, &n)))
            return SHMS_ETOOSMALL;
        if (!(c->out = PyBytes_FromStringAndSize(payload, (Py_ssize_t)n)))
            return ENOMEM;
        c->whole_bytes = 2;
        return 0;
    }
    c->out = PyBytes_FromStringAndSize(val, (Py_ssize_t)vlen);
    if (!c->out)
        return ENOMEM;
    c->stripe = stripe;
    c->version = version;
    return 0;
}

static PyObject *hot_fetch(PyObject *op, PyObject *key)
{
    HotPath *self = (HotPath *)op;
    fetch_ctx c = {.out = NULL, .max_value = self->max_value};
    char *kp;
    Py_ssize_t klen;
    int rc;
    if (!self->heap)
        return PyLong_FromLong(-1);
    if (PyBytes_AsStringAndSize(key, &kp, &klen) < 0)
        return NULL;
    rc = self->peek(self->heap, kp, (uint64_t)klen, take_value, &c, 0);
    if (hot_retry_held(self, rc))
        rc = self->peek(self->heap, kp, (uint64_t)klen, take_value, &c, 1);
    if (rc == 0)
        return Py_BuildValue("(NLK)", c.out, c.stripe == UINT64_MAX ? -1LL
                             : (long long)c.stripe, (unsigned long long)c.version);
    Py_XDECREF(c.out);
    if (rc == ENOMEM && PyErr_Occurred())
        return NULL;
    if (rc == SHMS_ENOTFOUND)
        Py_RETURN_NONE;
    return PyLong_FromLong(rc);
}

/* get: d[key] for a key the hot paths encode (hot_key: a non-empty str, an
 * int of 64 bits, bytes, a tuple of such), in one call (any other key: not_read).  A
 * cache hit
 * -- cache[key] = [bytes, stripe, version] with the stripe in shared memory
 * still at that version -- is unpickled without the lock.  Otherwise (a
 * miss, or the key changed) the bytes are copied from the heap under the
 * lock (fetch's read) with the stripe's version read under the same lock,
 * kept in cache (hot_cache_keep), and unpickled once the lock is released --
 * loads may run any Python code, even a read of this dict; a write to the
 * key meanwhile moved the stripe past the version kept, so the next get
 * re-reads.  A large bytes pickle comes unpickled from the copy; it and a
 * value without a version stripe are not kept (an entry there is dropped).
 * The key absent (found so under the lock): NULL with *absent set and no
 * exception, a cached entry of it dropped.  Anything else returns not_read,
 * for the general path (which waits, grows, repairs): the lock busy, a large
 * value, the version stripes not yet mapped by this process (versions_mapped;
 * a large bytes value is read without them), the heap closed.  (hot_get_key is
 * DictItems' d[k] too: hot.h.) */
PyObject *hot_get_key(HotPath *self, PyObject *cache, PyObject *key, int *absent)
{
    fetch_ctx c = {.out = NULL, .max_value = self->max_value, .whole_bytes = 1};
    PyObject *entry, *data;
    char buf[HOT_KEY_MAX];
    const char *kp;
    Py_ssize_t klen;
    int rc;
    if (!self->heap)
        return Py_NewRef(self->not_read);
    if ((rc = hot_key(key, buf, &kp, &klen)) <= 0)
        return rc ? NULL : Py_NewRef(self->not_read);
    entry = PyDict_GetItemWithError(cache, key);
    if (entry && self->versions) {
        if ((data = hot_cache_valid_bytes(self, entry)))
            return hot_cache_unpickle(self, data);
    } else if (PyErr_Occurred()) {
        return NULL;
    }
    rc = self->peek(self->heap, kp, (uint64_t)klen, take_value, &c, 0);
    if (hot_retry_held(self, rc))
        rc = self->peek(self->heap, kp, (uint64_t)klen, take_value, &c, 1);
    if (rc) {
        Py_XDECREF(c.out);
        if (rc == ENOMEM && PyErr_Occurred())
            return NULL;
        if (rc != SHMS_ENOTFOUND)
            return Py_NewRef(self->not_read);
        if (entry && hot_cache_drop(cache, key) < 0)
            return NULL;
        *absent = 1;
        return NULL;
    }
    if (!self->versions && c.whole_bytes != 2) {
        /* The general path maps the stripes (or finds there are none). */
        Py_DECREF(c.out);
        return Py_NewRef(self->not_read);
    }
    if (c.whole_bytes == 2 || c.stripe == UINT64_MAX) {
        if (entry && hot_cache_drop(cache, key) < 0) {
            Py_DECREF(c.out);
            return NULL;
        }
        if (c.whole_bytes == 2)
            return c.out;
    } else if (hot_cache_keep(self, cache, key, entry, c.out, c.stripe, c.version) < 0) {
        /* entry is still cache[key]: only bytes were allocated since (no
         * Python code ran, no garbage collection) */
        Py_DECREF(c.out);
        return NULL;
    }
    data = PyObject_CallFunctionObjArgs(self->loads, c.out, NULL);
    Py_DECREF(c.out);
    return data;
}

static PyObject *hot_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *value;
    int absent = 0;
    if (nargs < 2 || nargs > 3 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "get(cache: dict, key[, default])");
        return NULL;
    }
    value = hot_get_key((HotPath *)op, args[0], args[1], &absent);
    if (absent)
        return Py_NewRef(nargs == 3 ? args[2] : ((HotPath *)op)->not_read);
    return value;
}

static PyObject *hot_close(PyObject *op, PyObject *unused)
{
    (void)unused;
    ((HotPath *)op)->guard = NULL;
    Py_CLEAR(((HotPath *)op)->guard_owner);
    ((HotPath *)op)->heap = NULL;
    ((HotPath *)op)->versions = NULL;
    ((HotPath *)op)->list_len = NULL;
    ((HotPath *)op)->list_peek = NULL;
    Py_RETURN_NONE;
}

/* The address in `address`: non-zero and 8-byte aligned, or 0 with an exception set. */
static uintptr_t mapped_address(PyObject *address, const char *what)
{
    uintptr_t a = (uintptr_t)PyLong_AsUnsignedLongLong(address);
    if (PyErr_Occurred())
        return 0;
    if (!a || a % sizeof(uint64_t)) {
        PyErr_Format(PyExc_ValueError, "%s needs a non-zero, 8-byte aligned address", what);
        return 0;
    }
    return a;
}

static PyObject *hot_versions_mapped(PyObject *op, PyObject *address)
{
    uintptr_t a = mapped_address(address, "versions_mapped");
    if (!a)
        return NULL;
    ((HotPath *)op)->versions = (const uint64_t *)a;
    Py_RETURN_NONE;
}

static PyObject *hot_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long heap, peek, store, store_bytes, max_value, cache_cap, dict_len = 0,
                       take = 0;
    PyObject *loads, *not_read;
    HotPath *self;
    if (kwds && PyDict_Size(kwds)) {
        PyErr_SetString(PyExc_TypeError, "HotPath takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "KKKKKOOK|KK", &heap, &peek, &store, &store_bytes, &max_value,
                          &loads, &not_read, &cache_cap, &dict_len, &take))
        return NULL;
    if (!heap || !peek || !store || !store_bytes) {
        PyErr_SetString(PyExc_ValueError, "HotPath needs four non-zero addresses");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    self = (HotPath *)alloc(type, 0);
    if (!self)
        return NULL;
    self->heap = (shms_heap_t *)(uintptr_t)heap;
    self->peek = (peek_fn)(uintptr_t)peek;
    self->store = (store_fn)(uintptr_t)store;
    self->store_bytes = (store_fn)(uintptr_t)store_bytes;
    self->max_value = max_value;
    self->loads = Py_NewRef(loads);
    self->not_read = Py_NewRef(not_read);
    self->cache_cap = cache_cap;
    self->dict_len = (dict_len_fn)(uintptr_t)dict_len;
    self->take = (take_fn)(uintptr_t)take;
    return (PyObject *)self;
}

static void hot_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    Py_XDECREF(((HotPath *)op)->loads);
    Py_XDECREF(((HotPath *)op)->not_read);
    Py_XDECREF(((HotPath *)op)->guard_owner);
    tp_free(op);
    Py_DECREF(type);
}

PyObject *shms_hot_type;

static PyMethodDef hot_methods[] = {
    {"fetch", (PyCFunction)hot_fetch, METH_O,
     "fetch(key) -> (value, stripe, version), None if absent, or an int code."},
    {"get", (PyCFunction)(void (*)(void))hot_get, METH_FASTCALL,
     "get(cache, key[, default]) -> d[key] for a str, int, bytes or tuple key, through "
     "cache[key] = [bytes, stripe, version]; default if absent; or not_read (the general "
     "path decides)."},
    {"keep", (PyCFunction)(void (*)(void))hot_cache_keep_args, METH_FASTCALL,
     "keep(cache, key, value, stripe, version): cache[key] = [value, stripe, version], "
     "counted as get counts what it keeps."},
    {"has", (PyCFunction)(void (*)(void))hot_cache_has, METH_FASTCALL,
     "has(cache, key) -> key in d for a str, int, bytes or tuple key; or not_read."},
    {"pop", (PyCFunction)(void (*)(void))hot_pop, METH_FASTCALL,
     "pop(cache, key) -> the value's pickle, taken out; None if absent; or not_read."},
    {"len", hot_len, METH_NOARGS,
     "len() -> the dict's length, the lock tried once (or under this thread's hold); "
     "-1: the general path decides."},
    {"guarded", hot_guarded, METH_VARARGS,
     "guarded(owner, guard): under this thread's "
     "hold of the lock (the handle's guard at address guard), calls run held."},
    {"versions_mapped", hot_versions_mapped, METH_O,
     "versions_mapped(address): where this process maps the dict's version stripes."},
    {"list_mapped", (PyCFunction)(void (*)(void))hot_list_mapped, METH_FASTCALL,
     "list_mapped(address, peek): where this process maps the list's length word; "
     "shms_list_peek's address."},
    {"list_read_bytes", (PyCFunction)(void (*)(void))hot_list_read_bytes, METH_FASTCALL,
     "list_read_bytes(i, remove) -> item i, a large bytes object, copied once; or not_read."},
    {"store", (PyCFunction)(void (*)(void))hot_store, METH_FASTCALL,
     "store(key, cmp_len, value, value_len) -> 0, or an int code."},
    {"store_key", (PyCFunction)(void (*)(void))hot_store_key, METH_FASTCALL,
     "store_key(key, value) -> store() of the key's encoding; -1: not a key it encodes."},
    {"close", hot_close, METH_NOARGS, "Forget the heap: later calls return -1."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot hot_slots[] = {
    {Py_tp_new, hot_new},
    {Py_tp_dealloc, hot_dealloc},
    {Py_tp_methods, hot_methods},
    {Py_tp_doc, "HotPath(heap, peek, store_try, store_bytes_try, max_value, loads, not_read, "
                "cache_cap): "
                "d[k] = v and a changed "
                "d[k]'s re-read in one C call each (see shmshare._core.heap)."},
    {0, NULL},
};

static PyType_Spec hot_spec = {
    "shmshare._core._hotpath.HotPath", sizeof(HotPath), 0, Py_TPFLAGS_DEFAULT, hot_slots,
};

static int module_exec(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&hot_spec);
    if (!type)
        return -1;
    if (PyModule_AddObject(module, "HotPath", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    shms_hot_type = type;
    if (PyModule_AddIntConstant(module, "DIRECT_BYTES_MIN", HOT_DIRECT_BYTES_MIN) < 0 ||
        shms_hot_add_queue_path(module) < 0 || shms_hot_add_buffer_funcs(module) < 0 ||
        shms_hot_add_scan_funcs(module) < 0)
        return -1;
    return shms_hot_add_slot_types(module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_hotpath",
    "d[k] = v and a changed d[k]'s re-read in one C call (see shmshare._core.heap).", 0,
    NULL, module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hotpath(void)
{
    return PyModuleDef_Init(&module_def);
}
