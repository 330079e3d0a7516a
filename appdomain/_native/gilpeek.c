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
