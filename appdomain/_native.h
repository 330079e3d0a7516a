/* What the C files of appdomain._native share: the module state and the calls between
 * files.  _native.c and the files behind _native_core.h switch threads between
 * interpreters, _native_method.c binds proxy methods, _gilpeek.c reads CPython's GIL flag. */
#ifndef APPDOMAIN_NATIVE_H
#define APPDOMAIN_NATIVE_H

#include <Python.h>

typedef struct {
    PyTypeObject *argbuf_type;
    PyTypeObject *member_type;   /* MethodMember (_native_method.c) */
    PyTypeObject *bound_type;    /* BoundMethod (_native_method.c) */
    PyObject *str_release;
    PyObject *str_ref;           /* "_appdomain_ref": where a proxy keeps its RemoteRef */
    PyObject *slow_call;         /* generic route: slow_call(proxy, spec, *args, **kwargs) */
    PyObject *lean_outcome;      /* lean_outcome(proxy, spec, args, reply, error) */
    PyObject *ctxvar;  /* the logical call context's ContextVar (set_context_var), or NULL */
    int exited;   /* this interpreter's exit hook ran: refuse new registrations */
} modstate;

static inline modstate *
get_state(PyObject *module)
{
    return (modstate *)PyModule_GetState(module);
}

#if defined(__GNUC__)
#  pragma GCC visibility push(hidden)   /* shared between the files, not exported */
#endif

/* _native.c: the lean proxy call, invoke(interp_id, oid, name, args). */
PyObject *appdomain_invoke(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* _gilpeek.c: whether interp's GIL is held (a hint, read without locking). */
int appdomain_gil_locked(PyInterpreterState *interp);

/* _native_method.c: the method types, made when the module is executed, and the module
 * functions that use them. */
int appdomain_method_init(PyObject *module, modstate *st);
int appdomain_method_traverse(modstate *st, visitproc visit, void *arg);
void appdomain_method_clear(modstate *st);
PyObject *appdomain_method_member(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *appdomain_set_method_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#if defined(__GNUC__)
#  pragma GCC visibility pop
#endif

#endif
