/* shmshare._core._hotpath.QueuePath(hot, rec, put_try, put_bytes_try, take): a SharedQueue's
 * put and get without cffi's per-call costs (an argument tuple, a conversion
 * per argument, the GIL released and taken back, and on get two more copies
 * of the item: into a reusable buffer, then out of it into bytes).
 *
 * Each method is one C call that keeps the GIL, and so never waits: the
 * heap lock is tried once and the heap is never grown (src/queue.c,
 * shms_queue_put_try and shms_queue_take); any other outcome returns a code
 * for which the caller takes the general path (objects/queue.py), which
 * waits in slices, grows, repairs or raises.
 *
 *   put(data) -> 0 | int code
 *       data (a pickle) queued.
 *   put_bytes(b) -> 0 | int code
 *       The bytes object b queued as its pickle, written straight from b
 *       (STORE OF BYTES in src/dict_hot.c): one copy, no pickle made first.
 *   take() -> bytes | (value,) | (rest, data) | int code
 *       The oldest item, copied once, under the heap lock, straight from the
 *       heap into the bytes returned, then taken (the commit of queue.c):
 *       its pickle; or, when the item is the pickle of one bytes object,
 *       that object itself in a 1-tuple (one copy, no pickle.loads); or, a
 *       split item (a large array, src/dict_split.c), its data copied into
 *       a bytearray and the rest of its pickle: pickle.loads(rest,
 *       buffers=[data]) builds it on that bytearray, with no other copy.
 *   close()
 *       Forget the record (its heap is being detached): later calls return -1.
 *
 * `hot` is the heap's HotPath: its heap pointer, cleared by Heap.close(), is
 * read at every call, so a QueuePath kept past its heap is harmless.
 */
#include "hot.h"
#include "split.h"

typedef int (*qput_fn)(shms_heap_t *, void *, const char *, uint64_t);
typedef int (*qtake_fn)(shms_heap_t *, void *, shms_take_cb, void *);

typedef struct {
    PyObject_HEAD
    HotPath *hot;        /* a strong reference */
    void *rec;           /* the queue's record; NULL once closed */
    qput_fn put, put_bytes;
    qtake_fn take;
} QueuePath;

typedef struct {
    PyObject *out;
    int whole;           /* out is the item itself (a bytes object), not its pickle */
} take_ctx;

/* A split item (src/dict_split.c): (rest, data), its data copied straight
 * into the bytearray that becomes the new object's memory; or NULL. */
static PyObject *take_split(const char *val, uint64_t vlen, uint64_t off, uint64_t n)
{
    PyObject *data = PyByteArray_FromStringAndSize(val + off, (Py_ssize_t)n), *rest = NULL;
    if (data)
        rest = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)shms_split_rest_len(vlen, n));
    if (rest)
        shms_split_rest(PyBytes_AsString(rest), val, vlen, off, n);
    PyObject *out = rest ? PyTuple_Pack(2, rest, data) : NULL;
    Py_XDECREF(data);
    Py_XDECREF(rest);
    return out;
}

/* Under the heap lock: only allocations, which run no Python code. */
static int take_item(void *arg, const char *val, uint64_t vlen)
{
    take_ctx *c = arg;
    uint64_t n, off;
    const char *payload = shms_hot_bytes_payload(val, vlen, &n);
    if (payload) {
        c->whole = 1;
        c->out = PyBytes_FromStringAndSize(payload, (Py_ssize_t)n);
    } else if (shms_split_at(val, vlen, &off, &n)) {
        c->out = take_split(val, vlen, off, n);
    } else {
        c->out = PyBytes_FromStringAndSize(val, (Py_ssize_t)vlen);
    }
    return c->out ? 0 : ENOMEM;           /* ENOMEM: nothing taken */
}

static shms_heap_t *heap_of(QueuePath *self)
{
    return self->rec ? self->hot->heap : NULL;
}

static PyObject *put_with(QueuePath *self, qput_fn put, PyObject *data)
{
    shms_heap_t *h = heap_of(self);
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(data, &p, &n) < 0)
        return NULL;
    if (!h)
        return PyLong_FromLong(-1);
    return PyLong_FromLong(put(h, self->rec, p, (uint64_t)n));
}

static PyObject *qp_put(PyObject *op, PyObject *data)
{
    return put_with((QueuePath *)op, ((QueuePath *)op)->put, data);
}

static PyObject *qp_put_bytes(PyObject *op, PyObject *b)
{
    return put_with((QueuePath *)op, ((QueuePath *)op)->put_bytes, b);
}

static PyObject *qp_take(PyObject *op, PyObject *unused)
{
    QueuePath *self = (QueuePath *)op;
    shms_heap_t *h = heap_of(self);
    take_ctx c = {NULL, 0};
    int rc;
    (void)unused;
    if (!h)
        return PyLong_FromLong(-1);
    rc = self->take(h, self->rec, take_item, &c);
    if (rc) {
        Py_XDECREF(c.out);
        if (rc == ENOMEM && PyErr_Occurred())
            return NULL;
        return PyLong_FromLong(rc);
    }
    return c.whole ? Py_BuildValue("(N)", c.out) : c.out;
}

static PyObject *qp_close(PyObject *op, PyObject *unused)
{
    (void)unused;
    ((QueuePath *)op)->rec = NULL;
    Py_RETURN_NONE;
}

static PyObject *qp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *hot;
    unsigned long long rec, put, put_bytes, take;
    QueuePath *self;
    if (kwds && PyDict_Size(kwds)) {
        PyErr_SetString(PyExc_TypeError, "QueuePath takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OKKKK", &hot, &rec, &put, &put_bytes, &take))
        return NULL;
    if ((PyObject *)Py_TYPE(hot) != shms_hot_type) {
        PyErr_SetString(PyExc_TypeError, "QueuePath's first argument must be a HotPath");
        return NULL;
    }
    if (!rec || !put || !put_bytes || !take) {
        PyErr_SetString(PyExc_ValueError, "QueuePath needs four non-zero addresses");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    if (!(self = (QueuePath *)alloc(type, 0)))
        return NULL;
    Py_INCREF(hot);
    self->hot = (HotPath *)hot;
    self->rec = (void *)(uintptr_t)rec;
    self->put = (qput_fn)(uintptr_t)put;
    self->put_bytes = (qput_fn)(uintptr_t)put_bytes;
    self->take = (qtake_fn)(uintptr_t)take;
    return (PyObject *)self;
}

static void qp_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    Py_XDECREF((PyObject *)((QueuePath *)op)->hot);
    tp_free(op);
    Py_DECREF(type);
}

static PyMethodDef qp_methods[] = {
    {"put", qp_put, METH_O, "put(data) -> 0 (queued), or an int code."},
    {"put_bytes", qp_put_bytes, METH_O,
     "put_bytes(b) -> 0 (the bytes object b queued as its pickle), or an int code."},
    {"take", qp_take, METH_NOARGS,
     "take() -> the oldest item's pickle; (value,): a bytes item, unpickled; (rest, data): "
     "a split item, for pickle.loads(rest, buffers=[data]); or an int code."},
    {"close", qp_close, METH_NOARGS, "Forget the record: later calls return -1."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot qp_slots[] = {
    {Py_tp_new, qp_new},
    {Py_tp_dealloc, qp_dealloc},
    {Py_tp_methods, qp_methods},
    {Py_tp_doc, "QueuePath(hot, rec, put_try, put_bytes_try, take): a SharedQueue's put "
                "and get in one C "
                "call each (see shmshare._core.queue)."},
    {0, NULL},
};

static PyType_Spec qp_spec = {
    "shmshare._core._hotpath.QueuePath", sizeof(QueuePath), 0, Py_TPFLAGS_DEFAULT, qp_slots,
};

int shms_hot_add_queue_path(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&qp_spec);
    if (!type)
        return -1;
    if (PyModule_AddObject(module, "QueuePath", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}
