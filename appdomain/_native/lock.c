/* TableLock: the lock of remoting's object table (_remoting/_table), which this module's
 * export() and apply_releases() also take.  threading.Lock's acquire parses its arguments
 * as keywords on every call, which cost as much as the rest of an export; this one is taken
 * from C without a Python call, and from Python as `with lock:` like threading.Lock. */
#include "native.h"

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    unsigned long owner;   /* thread ident holding it, 0 when free (for locked()) */
} TableLock;

int
appdomain_lock_take(PyObject *op, int blocking)
{
    TableLock *self = (TableLock *)op;
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        if (!blocking) {
            return 0;
        }
        int got;
        Py_BEGIN_ALLOW_THREADS   /* the holder needs this interpreter's GIL to finish */
        got = PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
        if (!got) {
            PyErr_SetString(PyExc_RuntimeError, "the table lock could not be taken");
            return -1;
        }
    }
    self->owner = PyThread_get_thread_ident();
    return 1;
}

int
appdomain_lock_give(PyObject *op)
{
    TableLock *self = (TableLock *)op;
    if (self->owner == 0) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return -1;
    }
    self->owner = 0;
    PyThread_release_lock(self->lock);
    return 0;
}

static PyObject *
lock_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "TableLock() takes no arguments");
        return NULL;
    }
    TableLock *self = (TableLock *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        return NULL;
    }
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

/* The instance visits its type: the module state holds both the type and the table's
 * lock, and a collector that cannot see the lock's reference to its type would keep that
 * cycle, and the whole module with it, alive past the interpreter's end. */
static int
lock_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static void
lock_dealloc(PyObject *op)
{
    TableLock *self = (TableLock *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (self->lock != NULL) {
        if (self->owner != 0) {
            PyThread_release_lock(self->lock);
        }
        PyThread_free_lock(self->lock);
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
lock_acquire(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    int blocking = 1;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "acquire() takes at most 1 argument (got %zd)", nargs);
        return NULL;
    }
    if (nargs == 1 && (blocking = PyObject_IsTrue(args[0])) < 0) {
        return NULL;
    }
    int got = appdomain_lock_take(op, blocking);
    return got < 0 ? NULL : PyBool_FromLong(got);
}

static PyObject *
lock_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return appdomain_lock_take(op, 1) < 0 ? NULL : Py_NewRef(Py_True);
}

static PyObject *
lock_release(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (appdomain_lock_give(op) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
lock_exit(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    return lock_release(op, NULL);
}

static PyObject *
lock_locked(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(((TableLock *)op)->owner != 0);
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_FASTCALL,
     "acquire(blocking=True, /)\n--\n\nTake the lock (waiting, GIL released, when blocking); "
     "True if taken."},
    {"release", lock_release, METH_NOARGS, "release()\n--\n\nGive the lock back."},
    {"locked", lock_locked, METH_NOARGS, "locked()\n--\n\nTell whether the lock is held."},
    {"__enter__", lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))lock_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot lock_slots[] = {
    {Py_tp_doc, "TableLock()\n--\n\nA lock that C code takes without a Python call "
                "(the object table's)."},
    {Py_tp_new, lock_new},
    {Py_tp_dealloc, lock_dealloc},
    {Py_tp_traverse, lock_traverse},
    {Py_tp_methods, lock_methods},
    {0, NULL},
};

static PyType_Spec lock_spec = {
    .name = "appdomain._native._ext.TableLock",
    .basicsize = sizeof(TableLock),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = lock_slots,
};

int
appdomain_lock_init(PyObject *module, modstate *st)
{
    st->lock_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &lock_spec, NULL);
    if (st->lock_type == NULL) {
        return -1;
    }
    return PyModule_AddType(module, st->lock_type);
}
