/* shmshare._core._hotpath.LengthWord: a base class whose len() reads a list
 * record's length word (src/list.c, LENGTH WORD) in C: no lock, no Python
 * frame, no syscall.
 *
 *   _bind_length(hot)
 *       Read the length word through hot, the heap's HotPath, whose
 *       list_mapped(address) said where it is.  hot's pointers are cleared by
 *       Heap.close() before the memory behind them may be unmapped, and both
 *       are read under the GIL at every call, so an object kept past its heap
 *       never reads unmapped memory.
 *   len(obj)
 *       The word holds the length n in its low half and n ^ 0xFFFFFFFF in its
 *       high half (one 8-byte store commits both).  When the halves agree, n;
 *       otherwise -- no HotPath bound, the heap closed, the word damaged --
 *       obj._length_slow(), which reads it under the lock (repairing it, or
 *       raising for a detached object).
 */
#include "hot.h"

typedef struct {
    PyObject_HEAD
    HotPath *hot;        /* a strong reference, or NULL */
} LengthWord;

static Py_ssize_t lw_length(PyObject *op)
{
    HotPath *hot = ((LengthWord *)op)->hot;
    if (hot && hot->heap && hot->list_len) {
        uint64_t word = *hot->list_len;
        uint64_t n = word & 0xFFFFFFFFu;
        if (word >> 32 == (n ^ 0xFFFFFFFFu))
            return (Py_ssize_t)n;
    }
    PyObject *r = PyObject_CallMethod(op, "_length_slow", NULL);
    if (!r)
        return -1;
    Py_ssize_t n = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (n < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "_length_slow() returned a negative length");
    return n;
}

static PyObject *lw_bind(PyObject *op, PyObject *hot)
{
    if (!PyObject_TypeCheck(hot, (PyTypeObject *)shms_hot_type)) {
        PyErr_SetString(PyExc_TypeError, "_bind_length needs the heap's HotPath");
        return NULL;
    }
    PyObject *old = (PyObject *)((LengthWord *)op)->hot;
    ((LengthWord *)op)->hot = (HotPath *)Py_NewRef(hot);
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static void lw_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    Py_CLEAR(((LengthWord *)op)->hot);
    tp_free(op);
    Py_DECREF(type);
}

static PyMethodDef lw_methods[] = {
    {"_bind_length", lw_bind, METH_O,
     "_bind_length(hot): len() reads the length word that hot.list_mapped() named."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot lw_slots[] = {
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, lw_dealloc},
    {Py_tp_methods, lw_methods},
    {Py_sq_length, lw_length},
    {Py_tp_doc, "A base class whose len() reads a list's length word in C "
                "(see shmshare.objects.list)."},
    {0, NULL},
};

static PyType_Spec lw_spec = {
    "shmshare._core._hotpath.LengthWord", sizeof(LengthWord), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, lw_slots,
};

/* See hot.h. */
int shms_hot_add_length_word(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&lw_spec);
    if (!type)
        return -1;
    if (PyModule_AddObject(module, "LengthWord", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}
