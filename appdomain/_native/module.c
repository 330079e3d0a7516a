/* appdomain._native._ext: run a call in another interpreter on the calling thread.
 *
 * The pure-Python call path enters a domain with _interpreters.exec(), which costs
 * ~15 us, admits one thread per interpreter and cannot enter the main interpreter.
 * Here the calling thread itself is switched: its current thread state is detached
 * (PyEval_SaveThread) and a thread state of the target interpreter, cached per
 * (OS thread, interpreter), is attached (PyEval_RestoreThread); the dispatcher
 * registered in the target is called with read-only memoryviews over the caller's
 * buffers; the reply is copied into a bytes object of the caller; then the thread
 * switches back.  Any number of threads can be inside one interpreter this way, each
 * on its own thread state, and calls nest (A -> B -> A).
 *
 * Speed is the easy part (switch.c); the rest is lifecycle (states.c).
 * A thread state may only be cleared while attached to its interpreter, Py_EndInterpreter() aborts
 * ("not the last thread") if any thread state but the finalizing one is left, and
 * the main interpreter destroys leftover subinterpreters at exit.  So:
 *
 *  - Every cached thread state ("slot") is recorded twice, in the process-global
 *    table of its interpreter ("domain", one per interpreter with a dispatcher) and
 *    in its OS thread's record, all under one mutex (G.mutex).  G is plain C data:
 *    it spans interpreters, so it holds no PyObject of its own; the dispatcher and
 *    helper objects a domain points to belong to that domain's interpreter and are
 *    touched only while attached to it.
 *  - A thread's death is seen by a thread-specific-storage destructor
 *    (pthread_key_create / FlsAlloc), which runs on every OS thread exit, whoever
 *    created the thread and whichever interpreter it lived in, needs no Python API,
 *    and cannot be fooled by thread-id reuse.  It only marks the thread's slots as
 *    orphans; they are deleted later by whoever is attached to their interpreter
 *    anyway: the next call into it, release_interp(), or the interpreter's exit hook.
 *    (The alternative, an object in a threading.local whose dealloc fires when the
 *    caller's thread state is cleared, runs inside PyThreadState_Clear on a half-dead
 *    thread state and misses threads whose home state outlives the work.)
 *  - Before an interpreter is destroyed, its slots must be gone.  The module registers
 *    an atexit callback in every interpreter that imports it: Py_EndInterpreter() runs
 *    atexit callbacks *before* its "last thread" check (PyUnstable_AtExit callbacks and
 *    module m_free run after it, too late).  In a subinterpreter the callback refuses
 *    new calls, waits for calls in flight, and deletes every slot of that interpreter.
 *    In the main interpreter it runs before finalize_subinterpreters(): it deletes
 *    every idle slot of every interpreter and turns caching off, so calls made later
 *    (daemon threads, later atexit callbacks) use a throw-away thread state.
 *  - release_interp() does the same for one interpreter on demand (the Python layer
 *    calls it right before destroying a domain) and release_thread() for the caller.
 *  - A domain's in-flight count ("active") pins it: records are freed, and slots
 *    taken, only when no call is using them.  Calls release their pin while still
 *    attached to the target, before re-attaching to the caller, so a thread that
 *    is stopped there at exit (3.13 exits it, 3.14 hangs it) holds no pin.
 *
 * Lock order: G.mutex, then CPython's runtime locks (PyThreadState_New/Delete take
 * the HEAD lock).  G.mutex is never held while waiting for a GIL or running Python
 * code, so it cannot deadlock with interpreters' GILs.
 */
#include "core.h"

/* This file: the module, its state and the dispatcher's registration.  The others:
 * invoke.c (the lean call and the generic call's entry), states.c (records, release, exit
 * hooks), switch.c (the switch), table.c (proxies' releases and the object table),
 * method.c (proxy methods bound in C), gilpeek.c (is a GIL held?),
 * marshal_check.c (the link's check of marshal bytes). */

#ifndef _WIN32
#  include <dlfcn.h>
#endif

/* CPython's accessor of the running interpreter's configuration (3.13:
 * Include/internal/pycore_pystate.h), not in the public headers: looked up when first
 * needed, so a CPython without it still loads this module (set_site_import says None). */
typedef const PyConfig *(*get_config_fn)(void);

static get_config_fn
find_get_config(void)
{
#if !defined(_WIN32) && PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030F0000
    return (get_config_fn)dlsym(RTLD_DEFAULT, "_Py_GetConfig");
#else
    return NULL;   /* a CPython this was not checked against: leave it alone */
#endif
}

/* set_site_import(on): turn `site` on or off for the interpreters this one creates from now
 * on (a new interpreter copies its creator's configuration when it starts); return the
 * previous setting.  The domain boot does site's work itself, deferring the .pth lines that
 * only install editable finders (appdomain._domains._site). */
static PyObject *
native_set_site_import(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    get_config_fn get_config = find_get_config();
    if (get_config == NULL) {
        Py_RETURN_NONE;
    }
    PyConfig *config = (PyConfig *)get_config();
    int old = config->site_import;
    config->site_import = on;
    return PyBool_FromLong(old);
}

static PyObject *
native_set_context_var(PyObject *module, PyObject *var)
{
    if (!PyContextVar_CheckExact(var)) {
        PyErr_Format(PyExc_TypeError, "expected a ContextVar, not %s", Py_TYPE(var)->tp_name);
        return NULL;
    }
    modstate *st = get_state(module);
    Py_XSETREF(st->ctxvar, Py_NewRef(var));
    Py_RETURN_NONE;
}

/* ------------------------------------------------------ registration */

/* refs' fast part: None, or (classes, RemoteRef, Route, entry type, gone, ref name, the
 * entry's key slot name, cell name, the entry's cell slot name, kept lent references,
 * returned types) (refs.c make_proxy and ref_parts, method.c adopt_ref, proxy_gone). */
int
appdomain_fast_ok(PyObject *fast)
{
    if (fast == Py_None) {
        return 1;
    }
    return PyTuple_CheckExact(fast) && PyTuple_GET_SIZE(fast) == 11
           && PyDict_CheckExact(PyTuple_GET_ITEM(fast, 0))
           && PyType_Check(PyTuple_GET_ITEM(fast, 1))
           && PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(fast, 1), &PyTuple_Type)
           && PyType_Check(PyTuple_GET_ITEM(fast, 2))
           && PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(fast, 2), &PyTuple_Type)
           && PyType_Check(PyTuple_GET_ITEM(fast, 3))
           && PyCallable_Check(PyTuple_GET_ITEM(fast, 4))
           && PyUnicode_CheckExact(PyTuple_GET_ITEM(fast, 5))
           && PyUnicode_CheckExact(PyTuple_GET_ITEM(fast, 6))
           && PyUnicode_CheckExact(PyTuple_GET_ITEM(fast, 7))
           && PyUnicode_CheckExact(PyTuple_GET_ITEM(fast, 8))
           && PyDict_CheckExact(PyTuple_GET_ITEM(fast, 9))
           && PyDict_CheckExact(PyTuple_GET_ITEM(fast, 10));
}

static PyObject *
native_register_dispatcher(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    modstate *st = get_state(module);
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError,
                        "register_dispatcher(fn, invoker=None, refs=None) takes 1 to 3 arguments");
        return NULL;
    }
    PyObject *invoker = nargs >= 2 ? args[1] : Py_None;
    PyObject *refs = nargs == 3 ? args[2] : Py_None;
    if (!PyCallable_Check(args[0]) || (invoker != Py_None && !PyCallable_Check(invoker))) {
        PyErr_SetString(PyExc_TypeError, "dispatcher must be callable");
        return NULL;
    }
    if (refs != Py_None
        && (!PyTuple_CheckExact(refs) || PyTuple_GET_SIZE(refs) != 5
            || !PyDict_CheckExact(PyTuple_GET_ITEM(refs, 0))
            || !PyCallable_Check(PyTuple_GET_ITEM(refs, 1))
            || !PyCallable_Check(PyTuple_GET_ITEM(refs, 2))
            || !PyCallable_Check(PyTuple_GET_ITEM(refs, 3))
            || !appdomain_fast_ok(PyTuple_GET_ITEM(refs, 4)))) {
        PyErr_Format(PyExc_TypeError, "'refs' must be None or a tuple (proxies dict, make, "
                     "settle, home, fast) (got %R)", refs);
        return NULL;
    }
    /* The record holds all three as one tuple, so its lifecycle handles a single object. */
    PyObject *fn = PyTuple_Pack(3, args[0], invoker, refs);
    if (fn == NULL) {
        return NULL;
    }
    if (st->exited) {
        Py_DECREF(fn);
        PyErr_SetString(PyExc_RuntimeError, "this interpreter is shutting down");
        return NULL;
    }
    PyInterpreterState *interp = PyInterpreterState_Get();
    int64_t id = PyInterpreterState_GetID(interp);
    PyObject *old_fn = NULL, *old_type = NULL, *old_str = NULL;
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(id);
    if (d == NULL) {
        d = calloc(1, sizeof(*d));
        if (d == NULL) {
            PyMutex_Unlock(&G.mutex);
            Py_DECREF(fn);
            return PyErr_NoMemory();
        }
        d->id = id;
        d->interp = interp;
        d->next = G.domains;
        G.domains = d;
    }
    old_fn = d->fn;
    old_type = (PyObject *)d->argbuf_type;
    old_str = d->str_release;
    d->fn = fn;   /* our reference */
    d->argbuf_type = (PyTypeObject *)Py_NewRef(st->argbuf_type);
    d->str_release = Py_NewRef(st->str_release);
    d->owner_state = st;
    d->closing = 0;     /* re-registering reopens a released interpreter */
    PyMutex_Unlock(&G.mutex);
    Py_XDECREF(old_fn);
    Py_XDECREF(old_type);
    Py_XDECREF(old_str);
    Py_RETURN_NONE;
}

static PyObject *
native_unregister_dispatcher(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int64_t id = PyInterpreterState_GetID(PyInterpreterState_Get());
    PyObject *old = NULL;
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(id);
    if (d) {
        old = d->fn;
        d->fn = NULL;
    }
    PyMutex_Unlock(&G.mutex);
    Py_XDECREF(old);
    Py_RETURN_NONE;
}


/* ------------------------------------------------------------- module */

static PyObject *
native_set_gil_peek(PyObject *Py_UNUSED(module), PyObject *on)
{
    int truth = PyObject_IsTrue(on);
    if (truth < 0) {
        return NULL;
    }
    return PyBool_FromLong(appdomain_gil_peek_set(truth));
}

static PyMethodDef native_methods[] = {
    {"register_dispatcher", (PyCFunction)(void (*)(void))native_register_dispatcher, METH_FASTCALL,
     "register_dispatcher(fn, invoker=None, refs=None)\n--\n\nMake fn(parts: "
     "tuple[memoryview, ...]) -> bytes the target of call() for the current interpreter, and "
     "invoker(oid, name, args) -> marshallable the target of invoke().  refs, (proxies, make, "
     "settle, home, fast), turns the references among an invoke's arguments into objects: "
     "proxies[(interp_id, oid)] a weak reference to this interpreter's proxy, make(ref) a new "
     "one, home(oid) an object of this interpreter; settle(kept) is given the new proxies "
     "still referenced once the call returned."},
    {"set_reference_hooks", (PyCFunction)(void (*)(void))appdomain_set_reference_hooks,
     METH_FASTCALL,
     "set_reference_hooks(ref_type, ref_out, ref_done, lend)\n--\n\nLet invoke() carry "
     "instances of ref_type: those of a type in lend's lean_types are lent for the call, "
     "others cross as ref_out(obj, interp_id) (a tuple of plain values; None sends the call "
     "by the generic route), and ref_done(refs) runs with those tuples once the call is "
     "over.  lend is (lean_types, by_identity, lent, lent_ids, next_oid)."},
    {"set_proxy_hooks", (PyCFunction)(void (*)(void))appdomain_set_proxy_hooks, METH_FASTCALL,
     "set_proxy_hooks(proxies, fast, release, arm)\n--\n\nName what proxies of this "
     "interpreter live by: the proxies dict, the fast tuple (its entry type's weak references "
     "call proxy_gone), release(route, oid, count) for an owner the switch does not serve "
     "and arm(route) to have an owner woken to drain its releases."},
    {"proxy_gone", appdomain_proxy_gone, METH_O,
     "proxy_gone(entry)\n--\n\nA proxy died: forget its entry and release the references "
     "its cell holds (queued at an owner the switch serves)."},
    {"set_table_hooks", (PyCFunction)(void (*)(void))appdomain_set_table_hooks, METH_FASTCALL,
     "set_table_hooks(entries, entry_type, lock, leaseless)\n--\n\nName this "
     "interpreter's object table, for export() and apply_releases()."},
    {"lean_ref", (PyCFunction)(void (*)(void))appdomain_lean_ref, METH_FASTCALL,
     "lean_ref(obj, info, ctx, oid)\n--\n\nThe lean reply that names obj (its type in full "
     "once per caller, then by token), exported here when oid is None; None when Python must "
     "export it."},
    {"export", appdomain_export, METH_O,
     "export(obj)\n--\n\nCount one more remote reference to obj, of a type without a "
     "lease, and return its object id; None for other objects (Python exports them)."},
    {"apply_releases", appdomain_apply_releases, METH_NOARGS,
     "apply_releases()\n--\n\nApply the releases queued for this interpreter to its "
     "table; return None, or those left for Python as [oid, count, ...] when the table's "
     "lock is busy."},
    {"releases_pending", appdomain_releases_pending, METH_NOARGS,
     "releases_pending()\n--\n\nReturn how many releases are queued for this interpreter."},
    {"set_site_import", native_set_site_import, METH_O,
     "set_site_import(on)\n--\n\nTurn site on or off for the interpreters this one creates "
     "from now on; return the previous setting (None: not supported on this CPython)."},
    {"invoke", (PyCFunction)(void (*)(void))appdomain_invoke, METH_FASTCALL,
     "invoke(interp_id, oid, name, args)\n--\n\nRun the invoker of interpreter interp_id on "
     "the calling thread with args (plain values); return its reply, or NotImplemented "
     "when args (or a logical call context) need the generic route."},
    {"method_member", (PyCFunction)(void (*)(void))appdomain_method_member, METH_FASTCALL,
     "method_member(spec, bound_type)\n--\n\nMake the proxy-type member for the remote "
     "method spec: reading it from a proxy binds a bound_type (a BoundMethod subclass)."},
    {"marshal_problem", (PyCFunction)(void (*)(void))appdomain_marshal_problem, METH_FASTCALL,
     "marshal_problem(data, start, containers, nodes=False)\n--\n\nWalk the CPython "
     "marshal bytes of data from start as a link's frame check does (nodes: the MARSHAL "
     "nodes inside too); return None when marshal.loads may read them, else (reason, "
     "position, whether the reason is a MARSHAL node's)."},
    {"decode_frame", (PyCFunction)(void (*)(void))appdomain_decode_frame, METH_FASTCALL,
     "decode_frame(data, magic, version, shapes)\n--\n\nReturn (kind, body) of a link frame "
     "that is valid in every way the link format says (shapes: {kind: (field count, "
     "((index, type), ...))}); None for any other, which the caller decodes to say why."},
    {"set_lean_counting", (PyCFunction)appdomain_set_lean_counting, METH_O,
     "set_lean_counting(on)\n--\n\nCount the proxy calls this interpreter sends by the lean "
     "route (monitoring), or not."},
    {"lean_calls", (PyCFunction)appdomain_lean_calls, METH_NOARGS,
     "lean_calls()\n--\n\nReturn how many lean proxy calls this interpreter sent while "
     "counting."},
    {"set_method_hooks", (PyCFunction)(void (*)(void))appdomain_set_method_hooks, METH_FASTCALL,
     "set_method_hooks(slow_call, lean_outcome)\n--\n\nName the Python functions bound "
     "methods hand a call to: slow_call(proxy, spec, *args, **kwargs) for the generic "
     "route, lean_outcome(proxy, spec, args, reply, error) for a lean call to finish."},
    {"set_context_var", native_set_context_var, METH_O,
     "set_context_var(var)\n--\n\nName the ContextVar whose value makes invoke() "
     "decline (the logical call context must travel the generic route)."},
    {"unregister_dispatcher", native_unregister_dispatcher, METH_NOARGS,
     "unregister_dispatcher()\n--\n\nRemove the current interpreter's dispatcher."},
    {"call", (PyCFunction)(void (*)(void))appdomain_call, METH_FASTCALL,
     "call(interp_id, parts)\n--\n\nRun the dispatcher of interpreter interp_id on the "
     "calling thread with read-only views of parts; return its reply as bytes."},
    {"release_interp", (PyCFunction)(void (*)(void))native_release_interp, METH_FASTCALL,
     "release_interp(interp_id, timeout=None)\n--\n\nRefuse new calls into the "
     "interpreter, wait for calls in flight, and delete every cached thread state."},
    {"release_thread", native_release_thread, METH_NOARGS,
     "release_thread()\n--\n\nDelete the calling thread's idle cached thread states."},
    {"_on_exit", native_on_exit, METH_NOARGS, "atexit hook (internal)."},
    {"_stats", native_stats, METH_NOARGS, "Per-interpreter counters (tests)."},
    {"set_gil_peek", native_set_gil_peek, METH_O,
     "set_gil_peek(on)\n--\n\nTurn the look at a held GIL before taking it on or off "
     "(process-wide); return whether it is now on (never on a CPython gilpeek.c does not "
     "know)."},
    {"gil_held", appdomain_gil_held, METH_O,
     "gil_held(interp_id)\n--\n\nTell whether some thread holds the interpreter's GIL "
     "(a hint read without locking); None on a CPython gilpeek.c does not know."},
    {"gil_holder", appdomain_gil_holder, METH_O,
     "gil_holder(interp_id)\n--\n\nReturn (thread ident, native thread id) of the thread "
     "holding the interpreter's GIL, or None when it is free or not known."},
    {NULL, NULL, 0, NULL},
};

static int
native_exec(PyObject *module)
{
    modstate *st = get_state(module);
    if (globals_init() < 0) {
        return -1;
    }
    st->argbuf_type = (PyTypeObject *)PyType_FromSpec(&argbuf_spec);
    if (st->argbuf_type == NULL) {
        return -1;
    }
    st->str_release = PyUnicode_InternFromString("release");
    if (st->str_release == NULL || appdomain_method_init(module, st) < 0
        || appdomain_lock_init(module, st) < 0) {
        return -1;
    }
    st->not_served = PyErr_NewExceptionWithDoc(
        "appdomain._native._ext.NotServed",
        "The target interpreter takes no native calls: no dispatcher is registered there.",
        PyExc_RuntimeError, NULL);
    st->closing = PyErr_NewExceptionWithDoc(
        "appdomain._native._ext.Closing",
        "The target interpreter is being destroyed: it takes no new calls.",
        PyExc_RuntimeError, NULL);
    if (st->not_served == NULL || st->closing == NULL
        || PyModule_AddObjectRef(module, "NotServed", st->not_served) < 0
        || PyModule_AddObjectRef(module, "Closing", st->closing) < 0) {
        return -1;
    }
    /* Cleanup must run before Py_EndInterpreter's "last thread" check: atexit. */
    PyObject *atexit = PyImport_ImportModule("atexit");
    if (atexit == NULL) {
        return -1;
    }
    PyObject *hook = PyObject_GetAttrString(module, "_on_exit");
    PyObject *res = hook ? PyObject_CallMethod(atexit, "register", "O", hook) : NULL;
    Py_XDECREF(hook);
    Py_DECREF(atexit);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

static int
native_traverse(PyObject *module, visitproc visit, void *arg)
{
    modstate *st = get_state(module);
    Py_VISIT(st->argbuf_type);
    Py_VISIT(st->lock_type);
    Py_VISIT(st->ctxvar);
    Py_VISIT(st->ref_type);
    Py_VISIT(st->ref_out);
    Py_VISIT(st->ref_done);
    Py_VISIT(st->lean_types);
    Py_VISIT(st->by_identity);
    Py_VISIT(st->lent);
    Py_VISIT(st->lent_ids);
    Py_VISIT(st->next_oid);
    Py_VISIT(st->told);
    Py_VISIT(st->told_back);
    Py_VISIT(st->proxies);
    Py_VISIT(st->fast);
    Py_VISIT(st->release_py);
    Py_VISIT(st->arm_py);
    Py_VISIT(st->entries);
    Py_VISIT(st->entry_type);
    Py_VISIT(st->table_lock);
    Py_VISIT(st->leaseless);
    Py_VISIT(st->forever);
    Py_VISIT(st->not_served);
    Py_VISIT(st->closing);
    return appdomain_method_traverse(st, visit, arg);
}

static int
native_clear(PyObject *module)
{
    modstate *st = get_state(module);
    Py_CLEAR(st->argbuf_type);
    Py_CLEAR(st->lock_type);
    Py_CLEAR(st->str_release);
    Py_CLEAR(st->ctxvar);
    Py_CLEAR(st->ref_type);
    Py_CLEAR(st->ref_out);
    Py_CLEAR(st->ref_done);
    Py_CLEAR(st->lean_types);
    Py_CLEAR(st->by_identity);
    Py_CLEAR(st->lent);
    Py_CLEAR(st->lent_ids);
    Py_CLEAR(st->next_oid);
    Py_CLEAR(st->told);
    Py_CLEAR(st->told_back);
    Py_CLEAR(st->proxies);
    Py_CLEAR(st->fast);
    Py_CLEAR(st->release_py);
    Py_CLEAR(st->arm_py);
    Py_CLEAR(st->entries);
    Py_CLEAR(st->entry_type);
    Py_CLEAR(st->table_lock);
    Py_CLEAR(st->leaseless);
    Py_CLEAR(st->forever);
    Py_CLEAR(st->str_obj);
    Py_CLEAR(st->str_count);
    Py_CLEAR(st->str_lease);
    Py_CLEAR(st->str_expires);
    Py_CLEAR(st->not_served);
    Py_CLEAR(st->closing);
    appdomain_method_clear(st);
    return 0;
}

static void
native_free(void *module)
{
    /* Fallback if the exit hook never ran (atexit cleared): drop this interpreter's
     * record so no call can reach a dead interpreter.  Too late to delete thread
     * states (Py_EndInterpreter already checked, or the main interpreter zapped
     * them), so any left are forgotten, not touched. */
    modstate *st = get_state((PyObject *)module);
    int64_t id = PyInterpreterState_GetID(PyInterpreterState_Get());
    PyObject *fn = NULL, *tp = NULL, *s = NULL;
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(id);
    if (d && d->owner_state == st && d->active == 0) {
        free_domain_locked(d, &fn, &tp, &s);
    }
    else if (d && d->owner_state == st) {
        d->closing = 1;   /* calls stuck in flight (daemon threads at exit): leak it */
    }
    PyMutex_Unlock(&G.mutex);
    Py_XDECREF(fn);
    Py_XDECREF(tp);
    Py_XDECREF(s);
    native_clear((PyObject *)module);
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {Py_mod_gil, Py_MOD_GIL_USED},   /* dispatcher access relies on the target's GIL */
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "appdomain._native._ext",
    .m_doc = "Switch the calling thread into another interpreter (see module.c).",
    .m_size = sizeof(modstate),
    .m_methods = native_methods,
    .m_slots = native_slots,
    .m_traverse = native_traverse,
    .m_clear = native_clear,
    .m_free = native_free,
};

PyMODINIT_FUNC
PyInit__ext(void)
{
    return PyModuleDef_Init(&native_module);
}
