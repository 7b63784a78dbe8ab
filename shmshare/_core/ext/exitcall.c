/* shmshare._core._exitcall: ExitCall(guard_address, release_address).
 *
 * A callable that accepts and ignores any arguments, calls the C function
 * ``int release(void *guard)`` and returns None.  It is the ``__exit__`` of
 * ObjectLock (see guard.py and src/guard.c): ``with`` calls it directly, so
 * no Python frame -- where a KeyboardInterrupt could land first -- runs
 * between leaving the block and giving the lock back.  cffi functions cannot
 * serve, since ``__exit__`` receives the exception type, value and traceback,
 * which no C parameter type of cffi accepts.
 *
 * Limited API (abi3), like the cffi module.  The release function lives in
 * the cffi module (hidden symbols), so its address is passed in.
 */
#define Py_LIMITED_API 0x030A0000
#include <Python.h>
#include <stdint.h>

typedef int (*release_fn)(void *);

typedef struct {
    PyObject_HEAD
    void *guard;
    release_fn release;
} ExitCall;

static PyObject *exitcall_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long guard, fn;
    ExitCall *self;
    if (kwds && PyDict_Size(kwds)) {
        PyErr_SetString(PyExc_TypeError, "ExitCall takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "KK", &guard, &fn))
        return NULL;
    if (!guard || !fn) {
        PyErr_SetString(PyExc_ValueError, "ExitCall needs two non-zero addresses");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    self = (ExitCall *)alloc(type, 0);
    if (!self)
        return NULL;
    self->guard = (void *)(uintptr_t)guard;
    self->release = (release_fn)(uintptr_t)fn;
    return (PyObject *)self;
}

static PyObject *exitcall_call(PyObject *op, PyObject *args, PyObject *kwds)
{
    ExitCall *self = (ExitCall *)op;
    (void)args;
    (void)kwds;
    self->release(self->guard);   /* never blocks; errors are the guard's to report */
    Py_RETURN_NONE;               /* falsy: never suppresses the block's exception */
}

static void exitcall_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(op);
    Py_DECREF(type);
}

static PyType_Slot exitcall_slots[] = {
    {Py_tp_new, exitcall_new},
    {Py_tp_call, exitcall_call},
    {Py_tp_dealloc, exitcall_dealloc},
    {Py_tp_doc, "ExitCall(guard, release): calling it runs release(guard), ignoring "
                "its arguments, and returns None."},
    {0, NULL},
};

static PyType_Spec exitcall_spec = {
    "shmshare._core._exitcall.ExitCall", sizeof(ExitCall), 0,
    Py_TPFLAGS_DEFAULT, exitcall_slots,
};

static int module_exec(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&exitcall_spec);
    if (!type)
        return -1;
    if (PyModule_AddObject(module, "ExitCall", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_exitcall",
    "A C-level __exit__ for shmshare's locks (see shmshare._core.guard).", 0, NULL,
    module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__exitcall(void)
{
    return PyModuleDef_Init(&module_def);
}
