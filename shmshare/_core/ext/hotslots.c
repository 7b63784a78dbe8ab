/* shmshare._core._hotpath's base classes whose slots answer in C, with no
 * Python frame, what a shared object's class would otherwise answer in a
 * Python method: the calls a loop makes most on a list, an array, a dict.
 *
 * LengthWord: len() reads a list record's length word (src/list.c, LENGTH
 * WORD): no lock, no syscall.
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
 *
 * ViewItems: obj[i] and obj[i] = v handed straight to the object's cached
 * view of its memory (a numpy array or a typed memoryview).
 *   _fast_get, _fast_set
 *       The views an index other than a slice is handed to, for reading and
 *       for writing, or None: the class sets them when it builds its view and
 *       sets them back to None before the memory behind may be unmapped
 *       (detach); a class whose items need converting sets only _fast_get,
 *       or neither.
 *   _set_retry
 *       False, or True for a view that accepts fewer values than the class
 *       (a typed memoryview, where array.array converts): an Exception from
 *       _fast_set[i] = v then hands over to obj._setitem(i, v), which
 *       converts or raises what it should.
 *   obj[i], obj[i] = v
 *       _fast_get[i], _fast_set[i] = v -- their errors too (a bad index is
 *       the view's IndexError or TypeError); a slice, or no view, calls
 *       obj._getitem(i) / obj._setitem(i, v).  del obj[i] is a TypeError.
 *
 * DictItems, SharedDict's base class: dictitems.c.
 */
#include "hot.h"
#include <stddef.h>
#include <structmember.h>

/* ------------------------------------------------------------ LengthWord */

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
    return hot_length_slow(op);
}

/* See hot.h. */
Py_ssize_t hot_length_slow(PyObject *op)
{
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

/* ------------------------------------------------------------ ViewItems */

typedef struct {
    PyObject_HEAD
    PyObject *fast_get, *fast_set;   /* strong references, or NULL */
    char set_retry;
} ViewItems;

/* The view of `v` to hand an index to, or NULL: not a slice, and a view set. */
static PyObject *usable(PyObject *v, PyObject *index)
{
    return v && v != Py_None && !PySlice_Check(index) ? v : NULL;
}

static PyObject *vi_getitem(PyObject *op, PyObject *index)
{
    PyObject *view = usable(((ViewItems *)op)->fast_get, index);
    if (view) {
        Py_INCREF(view);  /* the index's __index__ may run code that drops it */
        PyObject *r = PyObject_GetItem(view, index);
        Py_DECREF(view);
        return r;
    }
    return PyObject_CallMethod(op, "_getitem", "(O)", index);
}

static int vi_setitem(PyObject *op, PyObject *index, PyObject *value)
{
    if (!value) {
        PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(op), "__name__");
        if (name) {
            PyErr_Format(PyExc_TypeError, "'%U' object doesn't support item deletion", name);
            Py_DECREF(name);
        }
        return -1;
    }
    PyObject *view = usable(((ViewItems *)op)->fast_set, index);
    if (view) {
        Py_INCREF(view);
        int rc = PyObject_SetItem(view, index, value);
        Py_DECREF(view);
        if (!rc || !((ViewItems *)op)->set_retry || !PyErr_ExceptionMatches(PyExc_Exception))
            return rc;
        PyErr_Clear();  /* refused by the view: the class converts, or raises */
    }
    PyObject *r = PyObject_CallMethod(op, "_setitem", "(OO)", index, value);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static void vi_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    Py_CLEAR(((ViewItems *)op)->fast_get);
    Py_CLEAR(((ViewItems *)op)->fast_set);
    tp_free(op);
    Py_DECREF(type);
}

static PyMemberDef vi_members[] = {
    {"_fast_get", T_OBJECT, offsetof(ViewItems, fast_get), 0,
     "The view obj[i] reads from, or None."},
    {"_fast_set", T_OBJECT, offsetof(ViewItems, fast_set), 0,
     "The view obj[i] = v writes to, or None."},
    {"_set_retry", T_BOOL, offsetof(ViewItems, set_retry), 0,
     "True: what _fast_set refuses, obj._setitem(i, v) decides."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot vi_slots[] = {
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, vi_dealloc},
    {Py_tp_members, vi_members},
    {Py_mp_subscript, vi_getitem},
    {Py_mp_ass_subscript, vi_setitem},
    {Py_tp_doc, "A base class whose obj[i] and obj[i] = v go straight to a cached view "
                "(see shmshare.objects.array)."},
    {0, NULL},
};

static PyType_Spec vi_spec = {
    "shmshare._core._hotpath.ViewItems", sizeof(ViewItems), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, vi_slots,
};

/* ------------------------------------------------------------ the module */

/* See hot.h. */
int hot_add_type(PyObject *module, PyType_Spec *spec, const char *name)
{
    PyObject *type = PyType_FromSpec(spec);
    if (!type)
        return -1;
    if (PyModule_AddObject(module, name, type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

/* See hot.h. */
int shms_hot_add_slot_types(PyObject *module)
{
    if (hot_add_type(module, &lw_spec, "LengthWord") < 0 ||
        hot_add_type(module, &vi_spec, "ViewItems") < 0)
        return -1;
    return shms_hot_add_dict_items(module);
}
