/* Tell whether an interpreter's GIL is held, for appdomain._native's waits.
 *
 * Taking a GIL that another thread holds puts the taker to sleep on a condition variable,
 * and waking it costs tens of µs on a small VM: with several threads making µs-long calls
 * through one interpreter, nearly every call would pay that twice.  A thread about to
 * take a GIL first looks whether it is free, yielding the CPU for a while if not.  No
 * public API says whether a GIL is held, so this one file reads CPython's internal
 * state (the `locked` flag of the interpreter's GIL, the same field on 3.13 and 3.14);
 * the flag is only a hint, read without locking, and the GIL is then taken the usual way.
 */
#define Py_BUILD_CORE_MODULE 1
#include <Python.h>
#include "internal/pycore_interp.h"

int
appdomain_gil_locked(PyInterpreterState *interp)
{
    struct _gil_runtime_state *gil = interp->ceval.gil;
    return gil != NULL && _Py_atomic_load_int_relaxed(&gil->locked);
}
