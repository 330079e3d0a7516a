/* Tell whether an interpreter's GIL is held, for appdomain._native._ext's waits.
 *
 * Taking a GIL that another thread holds puts the taker to sleep on a condition variable,
 * and waking it costs tens of µs on a small VM: with several threads making µs-long calls
 * through one interpreter, nearly every call would pay that twice.  A thread about to
 * take a GIL first looks whether it is free, yielding the CPU for a while if not.  No
 * public API says whether a GIL is held, so this one file reads CPython's internal
 * state (the `locked` flag of the interpreter's GIL, the same field on 3.13 and 3.14);
 * the flag is only a hint, read without locking, and the GIL is then taken the usual way.
 *
 * Only the versions whose layout is known read it.  On any other the answer is "unknown"
 * and the switch simply takes the GIL: the rest of the extension builds and runs the same.
 */
#include <patchlevel.h>

#if PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030F0000
#  define GILPEEK_KNOWN 1
#  define Py_BUILD_CORE_MODULE 1
#  include <Python.h>
#  include "internal/pycore_interp.h"
#  include "internal/pycore_runtime.h"   /* _PyRuntime: its lock on the thread lists */
#else
#  define GILPEEK_KNOWN 0
#  include <Python.h>
#endif

#include "native.h"

/* Process-wide, like the GILs it reads: tests turn it off to check the switch without it. */
static int peek_on = GILPEEK_KNOWN;

int
appdomain_gil_peek_set(int on)
{
    peek_on = on && GILPEEK_KNOWN;
    return peek_on;
}

/* The GIL's flag, whether or not the peek is on: -1 when not known. */
static int
gil_locked(PyInterpreterState *interp)
{
#if GILPEEK_KNOWN
    struct _gil_runtime_state *gil = interp->ceval.gil;
    if (gil == NULL) {
        return -1;
    }
    int locked = _Py_atomic_load_int_relaxed(&gil->locked);
    return locked < 0 ? -1 : (locked != 0);
#else
    (void)interp;
    return -1;
#endif
}

int
appdomain_gil_state(PyInterpreterState *interp)
{
#if GILPEEK_KNOWN
    if (!peek_on) {
        return GIL_UNKNOWN;
    }
    struct _gil_runtime_state *gil = interp->ceval.gil;
    if (gil == NULL) {
        return GIL_UNKNOWN;
    }
    int locked = _Py_atomic_load_int_relaxed(&gil->locked);
    if (locked < 0) {
        return GIL_UNKNOWN;   /* -1: the GIL is not set up yet */
    }
    return locked ? GIL_HELD : GIL_FREE;
#else
    (void)interp;
    return GIL_UNKNOWN;
#endif
}

/* ------------------------------------------------ who holds a GIL (unload's diagnosis) */

/* An unload whose in-domain step did not finish looks whether a thread holds the domain's
 * GIL (a thread stuck in C code that never releases it, e.g. a catastrophic regex) and, if
 * so, which one, to say so in its error.  The interpreter is looked up by id. */
static PyInterpreterState *
interp_by_id(PyObject *arg)
{
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
#if GILPEEK_KNOWN
    PyInterpreterState *interp = _PyInterpreterState_LookUpID(id);
    if (interp == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_LookupError, "no interpreter %lld", id);
    }
    return interp;
#else
    return NULL; /* no error set: this CPython's GIL cannot be looked at, the answer is None */
#endif
}

PyObject *
appdomain_gil_held(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyInterpreterState *interp = interp_by_id(arg);
    if (interp == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    int locked = gil_locked(interp);
    if (locked < 0) {
        Py_RETURN_NONE;
    }
    return PyBool_FromLong(locked);
}

PyObject *
appdomain_gil_holder(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyInterpreterState *interp = interp_by_id(arg);
    if (interp == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
#if GILPEEK_KNOWN
    if (gil_locked(interp) != 1) {
        Py_RETURN_NONE;
    }
    /* last_holder is only a pointer: it is dereferenced only if it is still one of the
     * interpreter's thread states, looked for under the runtime's lock on the thread
     * lists (a thread state leaves its list under that lock before it is freed). */
    struct _gil_runtime_state *gil = interp->ceval.gil;
    PyThreadState *holder = (PyThreadState *)_Py_atomic_load_ptr_relaxed(&gil->last_holder);
    unsigned long ident = 0, native_id = 0;
    int found = 0;
    _PyRuntimeState *runtime = &_PyRuntime;
    /* HEAD_LOCK's own lock call is not exported: the public one may detach us while it
     * waits, which is harmless here. */
    PyMutex_Lock(&runtime->interpreters.mutex);
    for (PyThreadState *t = interp->threads.head; t != NULL; t = t->next) {
        if (t == holder) {
            ident = t->thread_id;
            native_id = t->native_thread_id;
            found = 1;
            break;
        }
    }
    PyMutex_Unlock(&runtime->interpreters.mutex);
    if (!found) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(kk)", ident, native_id);
#else
    Py_RETURN_NONE;
#endif
}
