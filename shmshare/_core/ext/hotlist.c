/* What HotPath (hotpath.c) does for a list heap:
 *
 *   list_mapped(address, peek)
 *       Where this process maps the list's length word (for LengthWord,
 *       hotslots.c), and the address of shms_list_peek (src/list_ops.c).
 *   list_read_bytes(i, remove) -> bytes | not_read
 *       lst[i] (remove false) or lst.pop(i) (true) for a large item that is
 *       the pickle of one bytes object: the bytes copied once, straight from
 *       the heap into the bytes returned (a reusable buffer, then
 *       pickle.loads, would copy them twice), under the heap lock tried once;
 *       a pop takes the item out under the same hold.  Anything else --
 *       another kind of item, the lock busy or held by this thread, i out of
 *       range, damage, a removal that needs the heap to grow, the list not
 *       mapped, the heap closed -- changes nothing and returns not_read: the
 *       general path decides.
 */
#include "hot.h"

/* Under the heap lock: only a bytes allocation, which runs no Python code. */
static int take_bytes(void *arg, const char *val, uint64_t vlen, uint64_t modcount,
                      uint64_t length)
{
    PyObject **out = arg;
    const char *payload;
    uint64_t n;
    (void)modcount;
    (void)length;
    if (!(payload = shms_hot_bytes_payload(val, vlen, &n)))
        return SHMS_ENOSPLIT;
    if (!(*out = PyBytes_FromStringAndSize(payload, (Py_ssize_t)n)))
        return ENOMEM;
    return 0;
}

PyObject *hot_list_read_bytes(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    HotPath *self = (HotPath *)op;
    PyObject *out = NULL;
    long long i;
    int remove, rc;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "list_read_bytes(i, remove) takes 2 arguments");
        return NULL;
    }
    i = PyLong_AsLongLong(args[0]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if ((remove = PyObject_IsTrue(args[1])) < 0)
        return NULL;
    if (!self->heap || !self->list_peek)
        return Py_NewRef(self->not_read);
    rc = self->list_peek(self->heap, (int64_t)i, remove, take_bytes, &out);
    if (rc == 0)
        return out;
    Py_XDECREF(out);
    if (rc == ENOMEM && PyErr_Occurred())
        return NULL;
    return Py_NewRef(self->not_read);
}

PyObject *hot_list_mapped(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    HotPath *self = (HotPath *)op;
    uintptr_t len_word, peek;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "list_mapped(address, peek) takes 2 arguments");
        return NULL;
    }
    len_word = (uintptr_t)PyLong_AsUnsignedLongLong(args[0]);
    peek = (uintptr_t)PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (!len_word || len_word % sizeof(uint64_t) || !peek) {
        PyErr_SetString(PyExc_ValueError, "list_mapped needs a non-zero, 8-byte aligned "
                        "address and a non-zero function address");
        return NULL;
    }
    self->list_len = (const volatile uint64_t *)len_word;
    self->list_peek = (list_peek_fn)peek;
    return Py_NewRef(Py_None);
}
