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
    PyObject *keep;   /* optional: held while the ExitCall lives (see its doc) */
} ExitCall;

static PyObject *exitcall_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long guard, fn;
    PyObject *keep = NULL;
    ExitCall *self;
    if (kwds && PyDict_Size(kwds)) {
        PyErr_SetString(PyExc_TypeError, "ExitCall takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "KK|O", &guard, &fn, &keep))
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
    Py_XINCREF(keep);
    self->keep = keep;
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
    Py_CLEAR(((ExitCall *)op)->keep);
    tp_free(op);
    Py_DECREF(type);
}

static PyType_Slot exitcall_slots[] = {
    {Py_tp_new, exitcall_new},
    {Py_tp_call, exitcall_call},
    {Py_tp_dealloc, exitcall_dealloc},
    {Py_tp_doc, "ExitCall(guard, release[, keep]): calling it runs release(guard), "
                "ignoring its arguments, and returns None; keep is held meanwhile (a "
                "with block's object, alive until its __exit__ ran)."},
    {0, NULL},
};

static PyType_Spec exitcall_spec = {
    "shmshare._core._exitcall.ExitCall", sizeof(ExitCall), 0,
    Py_TPFLAGS_DEFAULT, exitcall_slots,
};

/* FastCall(guard_address, try_address, fallback, result, max_args, keep).
 *
 * A callable that calls ``int try(void *guard)`` and returns ``result`` when
 * it answers 0; otherwise -- or when called with more than max_args
 * positional arguments, or any keyword -- it returns fallback()(*args, **kwargs):
 * fallback() gives the full operation (a weakref.WeakMethod; None: gone).
 * It is the uncontended acquire and ``__enter__`` of a Manager's Lock and
 * RLock (src/sync_guard.c, shms_sync_fast_take): taking the lock and
 * returning involve no Python frame, where a KeyboardInterrupt could land
 * with the lock taken and not yet recorded.  try must change nothing when it
 * answers non-zero (the fallback does the whole operation).  keep is held
 * for as long as the FastCall lives (what keeps the guard's memory valid). */
typedef struct {
    PyObject_HEAD
    void *guard;
    release_fn try_fn;
    PyObject *fallback, *result, *keep;
    Py_ssize_t max_args;
} FastCall;

static PyObject *fastcall_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long guard, fn;
    PyObject *fallback, *result, *keep;
    Py_ssize_t max_args;
    FastCall *self;
    if (kwds && PyDict_Size(kwds)) {
        PyErr_SetString(PyExc_TypeError, "FastCall takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "KKOOnO", &guard, &fn, &fallback, &result, &max_args, &keep))
        return NULL;
    if (!guard || !fn) {
        PyErr_SetString(PyExc_ValueError, "FastCall needs two non-zero addresses");
        return NULL;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "FastCall's fallback must be callable");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    self = (FastCall *)alloc(type, 0);
    if (!self)
        return NULL;
    self->guard = (void *)(uintptr_t)guard;
    self->try_fn = (release_fn)(uintptr_t)fn;
    Py_INCREF(fallback);
    Py_INCREF(result);
    Py_INCREF(keep);
    self->fallback = fallback;
    self->result = result;
    self->keep = keep;
    self->max_args = max_args;
    return (PyObject *)self;
}

static PyObject *fastcall_call(PyObject *op, PyObject *args, PyObject *kwds)
{
    FastCall *self = (FastCall *)op;
    if (PyTuple_Size(args) <= self->max_args && (!kwds || !PyDict_Size(kwds)) &&
        self->try_fn(self->guard) == 0) {
        Py_INCREF(self->result);
        return self->result;
    }
    /* fallback() names the full operation: a weakref.WeakMethod, so that the
     * object this FastCall is an attribute of is not kept alive by it. */
    PyObject *target = PyObject_CallObject(self->fallback, NULL), *res;
    if (!target)
        return NULL;
    if (target == Py_None) {
        Py_DECREF(target);
        PyErr_SetString(PyExc_ReferenceError, "the lock this method belongs to is gone (keep a "
                        "reference to the lock itself, not only to its method)");
        return NULL;
    }
    res = PyObject_Call(target, args, kwds);
    Py_DECREF(target);
    return res;
}

static int fastcall_traverse(PyObject *op, visitproc visit, void *arg)
{
    FastCall *self = (FastCall *)op;
    Py_VISIT(self->fallback);
    Py_VISIT(self->result);
    Py_VISIT(self->keep);
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static int fastcall_clear(PyObject *op)
{
    FastCall *self = (FastCall *)op;
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->result);
    Py_CLEAR(self->keep);
    return 0;
}

static void fastcall_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    PyObject_GC_UnTrack(op);
    fastcall_clear(op);
    tp_free(op);
    Py_DECREF(type);
}

static PyType_Slot fastcall_slots[] = {
    {Py_tp_new, fastcall_new},
    {Py_tp_call, fastcall_call},
    {Py_tp_traverse, fastcall_traverse},
    {Py_tp_clear, fastcall_clear},
    {Py_tp_dealloc, fastcall_dealloc},
    {Py_tp_doc, "FastCall(guard, try, fallback, result, max_args, keep): calling it "
                "returns result if try(guard) answers 0, else fallback()(*args, **kwargs)."},
    {0, NULL},
};

static PyType_Spec fastcall_spec = {
    "shmshare._core._exitcall.FastCall", sizeof(FastCall), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, fastcall_slots,
};

static int add_type(PyObject *module, PyType_Spec *spec, const char *name)
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

static int module_exec(PyObject *module)
{
    if (add_type(module, &exitcall_spec, "ExitCall") < 0)
        return -1;
    return add_type(module, &fastcall_spec, "FastCall");
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
