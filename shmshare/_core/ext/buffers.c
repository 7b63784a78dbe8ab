/* What large buffer values (src/dict_split.c) need of the C API.
 *
 * uninit_bytearray(n): a bytearray of n bytes whose contents are not set.
 * bytearray(n) zero-fills: for a large value read in one copy that is one
 * more pass over memory that the copy then overwrites.  The caller must
 * write every byte before anyone reads it.
 *
 * shms_hot_large_buffer(value): whether d[k] = value should leave the value
 * to the general path, which stores it split -- a bytearray or an array
 * (a type with __array_interface__: numpy's) of at least HOT_SPLIT_MIN bytes.
 * The buffer protocol is not in the limited API of Python 3.10, so arrays
 * are recognised by that attribute, looked up once per type in a row. */
#include "hot.h"

static PyObject *seen_type;       /* the type last asked about (a strong reference) */
static int seen_is_array;

int shms_hot_large_buffer(PyObject *value)
{
    PyObject *type = (PyObject *)Py_TYPE(value), *n;
    Py_ssize_t nbytes;
    if (PyByteArray_CheckExact(value))
        return PyByteArray_Size(value) >= HOT_SPLIT_MIN;
    if (PyUnicode_CheckExact(value) || PyLong_CheckExact(value) || PyFloat_CheckExact(value) ||
        PyTuple_CheckExact(value) || PyList_CheckExact(value) || PyDict_CheckExact(value) ||
        PyBytes_CheckExact(value) || value == Py_None)
        return 0;
    if (type != seen_type) {
        int is_array = PyObject_HasAttrString(type, "__array_interface__");
        PyObject *old = seen_type;
        seen_type = Py_NewRef(type);
        Py_XDECREF(old);
        seen_is_array = is_array;
    }
    if (!seen_is_array)
        return 0;
    n = PyObject_GetAttrString(value, "nbytes");
    nbytes = n ? PyLong_AsSsize_t(n) : -1;
    Py_XDECREF(n);
    if (nbytes < 0) {
        PyErr_Clear();
        return 0;
    }
    return nbytes >= HOT_SPLIT_MIN;
}

static PyObject *uninit_bytearray(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "uninit_bytearray: a negative size");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, n);
}

static PyMethodDef buffer_funcs[] = {
    {"uninit_bytearray", uninit_bytearray, METH_O,
     "uninit_bytearray(n): a bytearray of n bytes, not zero-filled; write them all."},
    {NULL, NULL, 0, NULL},
};

int shms_hot_add_buffer_funcs(PyObject *module)
{
    if (PyModule_AddIntConstant(module, "SPLIT_MIN", HOT_SPLIT_MIN) < 0)
        return -1;
    return PyModule_AddFunctions(module, buffer_funcs);
}
