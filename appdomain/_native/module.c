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

/* This file: the module and its entry points (invoke, call, registration).  The others:
 * states.c (records, release, exit hooks), switch.c (the switch),
 * method.c (proxy methods bound in C), gilpeek.c (is a GIL held?),
 * marshal_check.c (the link's check of marshal bytes). */

#define BIG_ARG_BYTES (64 * 1024)   /* bytes arguments this large skip the blob */

/* Tell whether a lean invoke may carry these arguments: exact None, bool, float, str,
 * bytes and 64-bit ints (the values that cross unchanged), instances of the reference type
 * (they cross as the tuple ref_out() makes), and no logical call context to carry along.
 * Anything else takes the generic route.  0: not lean; 1: lean; 2: lean, with references. */
static int
is_lean(modstate *st, PyObject *args)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    int refs = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(args, i);
        PyTypeObject *t = Py_TYPE(v);
        if (v == Py_None || t == &PyBool_Type || t == &PyFloat_Type || t == &PyUnicode_Type) {
            continue;
        }
        if (t == &PyLong_Type) {
            int overflow;
            (void)PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow == 0) {
                continue;
            }
            return 0;
        }
        if (t == &PyBytes_Type) {
            continue;
        }
        if (st->ref_type != NULL && PyObject_TypeCheck(v, (PyTypeObject *)st->ref_type)) {
            refs = 1;
            continue;
        }
        return 0;
    }
    if (st->ctxvar != NULL) {
        PyObject *value = NULL;
        if (PyContextVar_Get(st->ctxvar, NULL, &value) < 0) {
            PyErr_Clear();
            return 0;
        }
        int empty = (value == NULL || value == Py_None);
        Py_XDECREF(value);
        if (!empty) {
            return 0;
        }
    }
    return refs ? 2 : 1;
}

/* set_reference_hooks(ref_type, ref_out, ref_done, lend): how invoke() carries references.
 * lend is (lean_types, by_identity, lent, lent_ids, next_oid) (see modstate). */
static PyObject *
native_set_reference_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *lend = nargs == 4 ? args[3] : NULL;
    if (nargs != 4 || !PyType_Check(args[0]) || !PyCallable_Check(args[1])
        || !PyCallable_Check(args[2]) || !PyTuple_CheckExact(lend) || PyTuple_GET_SIZE(lend) != 5
        || !PyDict_CheckExact(PyTuple_GET_ITEM(lend, 0))
        || !PyDict_CheckExact(PyTuple_GET_ITEM(lend, 1))
        || !PyDict_CheckExact(PyTuple_GET_ITEM(lend, 2))
        || !PyDict_CheckExact(PyTuple_GET_ITEM(lend, 3))
        || !PyIter_Check(PyTuple_GET_ITEM(lend, 4))) {
        PyErr_SetString(PyExc_TypeError,
                        "set_reference_hooks(ref_type, ref_out, ref_done, lend) takes a type, "
                        "2 callables and (dict, dict, dict, dict, iterator)");
        return NULL;
    }
    modstate *st = get_state(module);
    Py_XSETREF(st->ref_type, Py_NewRef(args[0]));
    Py_XSETREF(st->ref_out, Py_NewRef(args[1]));
    Py_XSETREF(st->ref_done, Py_NewRef(args[2]));
    Py_XSETREF(st->lean_types, Py_NewRef(PyTuple_GET_ITEM(lend, 0)));
    Py_XSETREF(st->by_identity, Py_NewRef(PyTuple_GET_ITEM(lend, 1)));
    Py_XSETREF(st->lent, Py_NewRef(PyTuple_GET_ITEM(lend, 2)));
    Py_XSETREF(st->lent_ids, Py_NewRef(PyTuple_GET_ITEM(lend, 3)));
    Py_XSETREF(st->next_oid, Py_NewRef(PyTuple_GET_ITEM(lend, 4)));
    Py_RETURN_NONE;
}

/* The loans of one call: the objects it lends (borrowed: the caller's arguments keep them
 * alive), with their oids and identities, and the tuples ref_out made for the others. */
#define MAX_LOANS 8

typedef struct {
    int n;
    PyObject *obj[MAX_LOANS];
    PyObject *oid[MAX_LOANS];
    PyObject *ident[MAX_LOANS];
    PyObject *told[MAX_LOANS];   /* sent in full: the key told gets once the call is done */
    PyObject *made;   /* list, or NULL while ref_out made none */
} loans_t;

/* Lend obj to one more call into interpreter iid: its reference from its type's (*route,
 * module, qualname, token), in full, (*route, oid, module, qualname, token), the first time
 * iid meets the type, then as (interp id, oid, token), which iid expands from what it kept
 * of the full one (switch.c take_refs): no strings to pack and unpack.  st->told holds
 * (iid << 24 | token) once a call that sent it in full returned.  The loan is recorded in
 * loans.  No Python code runs, so this is one step for every thread of this interpreter
 * (the Python side reads these dicts under its own lock).  lent[oid] is obj while one call
 * lends it, (obj, calls) while several do. */
static PyObject *
lend(modstate *st, PyObject *obj, PyObject *info, long long iid, loans_t *loans)
{
    PyObject *ident = PyLong_FromVoidPtr(obj), *oid = NULL, *held = NULL, *ref = NULL;
    if (ident == NULL) {
        return NULL;
    }
    if (PyDict_GetItemRef(st->by_identity, ident, &oid) < 0
        || (oid == NULL && PyDict_GetItemRef(st->lent_ids, ident, &oid) < 0)) {
        goto out;
    }
    if (oid == NULL && (oid = PyIter_Next(st->next_oid)) == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "object ids ran out");
        }
        goto out;
    }
    if (PyDict_GetItemRef(st->lent, oid, &held) < 0) {
        goto out;
    }
    PyObject *value;
    if (held == obj) {
        value = Py_BuildValue("(Oi)", obj, 2);
    }
    else if (held != NULL && PyTuple_CheckExact(held) && PyTuple_GET_SIZE(held) == 2
             && PyTuple_GET_ITEM(held, 0) == obj) {
        long n = PyLong_AsLong(PyTuple_GET_ITEM(held, 1));
        value = n == -1 && PyErr_Occurred() ? NULL : Py_BuildValue("(Ol)", obj, n + 1);
    }
    else {
        value = Py_NewRef(obj);
    }
    if (value == NULL) {
        goto out;
    }
    int failed = PyDict_SetItem(st->lent, oid, value) < 0
                 || PyDict_SetItem(st->lent_ids, ident, oid) < 0;
    Py_DECREF(value);
    if (failed) {
        goto out;
    }
    PyObject *told = NULL;
    int known = 0;
    if (PyTuple_GET_SIZE(info) == 7 && PyLong_CheckExact(PyTuple_GET_ITEM(info, 6))) {
        long long token = PyLong_AsLongLong(PyTuple_GET_ITEM(info, 6));
        if (token == -1 && PyErr_Occurred()) {
            goto out;
        }
        if ((st->told == NULL && (st->told = PySet_New(NULL)) == NULL)
            || (told = PyLong_FromLongLong((iid << 24) | (token & 0xFFFFFF))) == NULL
            || (known = PySet_Contains(st->told, told)) < 0) {
            Py_XDECREF(told);
            goto out;
        }
        if (known) {
            Py_CLEAR(told);
            ref = PyTuple_Pack(3, PyTuple_GET_ITEM(info, 0), oid, PyTuple_GET_ITEM(info, 6));
        }
        else {
            ref = PyTuple_Pack(8, PyTuple_GET_ITEM(info, 0), PyTuple_GET_ITEM(info, 1),
                               PyTuple_GET_ITEM(info, 2), PyTuple_GET_ITEM(info, 3), oid,
                               PyTuple_GET_ITEM(info, 4), PyTuple_GET_ITEM(info, 5),
                               PyTuple_GET_ITEM(info, 6));
        }
    }
    else {
        ref = PyTuple_Pack(7, PyTuple_GET_ITEM(info, 0), PyTuple_GET_ITEM(info, 1),
                           PyTuple_GET_ITEM(info, 2), PyTuple_GET_ITEM(info, 3), oid,
                           PyTuple_GET_ITEM(info, 4), PyTuple_GET_ITEM(info, 5));
    }
    if (ref != NULL) {
        loans->obj[loans->n] = obj;
        loans->oid[loans->n] = Py_NewRef(oid);
        loans->ident[loans->n] = Py_NewRef(ident);
        loans->told[loans->n] = told;
        loans->n++;
    }
    else {
        Py_XDECREF(told);
    }
out:
    Py_DECREF(ident);
    Py_XDECREF(oid);
    Py_XDECREF(held);
    return ref;
}

/* A call that lent obj as oid is over: forget the loan once no call holds it. */
static void
unlend(modstate *st, PyObject *obj, PyObject *oid, PyObject *ident)
{
    PyObject *held = NULL, *mapped = NULL;
    if (PyDict_GetItemRef(st->lent, oid, &held) <= 0) {
        PyErr_Clear();
        return;
    }
    if (held != obj) {
        long n = 0;
        if (PyTuple_CheckExact(held) && PyTuple_GET_SIZE(held) == 2
            && PyTuple_GET_ITEM(held, 0) == obj) {
            n = PyLong_AsLong(PyTuple_GET_ITEM(held, 1)) - 1;
        }
        PyObject *value = n > 1 ? Py_BuildValue("(Ol)", obj, n) : n == 1 ? Py_NewRef(obj) : NULL;
        if (value != NULL) {
            (void)PyDict_SetItem(st->lent, oid, value);
            Py_DECREF(value);
        }
        PyErr_Clear();
        Py_DECREF(held);
        return;
    }
    Py_DECREF(held);
    if (PyDict_GetItemRef(st->lent_ids, ident, &mapped) > 0
        && PyObject_RichCompareBool(mapped, oid, Py_EQ) == 1) {
        (void)PyDict_DelItem(st->lent_ids, ident);
    }
    (void)PyDict_DelItem(st->lent, oid);
    PyErr_Clear();
    Py_XDECREF(mapped);
}

/* A copy of args to edit (PyTuple_GetSlice would hand back the same tuple). */
static PyObject *
copy_args(PyObject *args)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *copy = PyTuple_New(n);
    if (copy == NULL) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyTuple_SET_ITEM(copy, j, Py_NewRef(PyTuple_GET_ITEM(args, j)));
    }
    return copy;
}

/* Replace the references among args (a fresh copy) by their tuples: lent in C where the
 * type is in lean_types, else ref_out(obj, iid)'s (kept in loans->made).  0: done; 1: a
 * reference cannot cross lean (ref_out said None, or too many loans); -1: error. */
static int
pack_refs(modstate *st, PyObject *packed, long long iid, loans_t *loans)
{
    Py_ssize_t n = PyTuple_GET_SIZE(packed);
    PyObject *target = NULL;
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        PyObject *v = PyTuple_GET_ITEM(packed, i), *info = NULL, *ref = NULL;
        if (!PyObject_TypeCheck(v, (PyTypeObject *)st->ref_type)) {
            continue;
        }
        if (st->lean_types != NULL
            && PyDict_GetItemRef(st->lean_types, (PyObject *)Py_TYPE(v), &info) < 0) {
            rc = -1;
            break;
        }
        if (info != NULL) {
            if (loans->n == MAX_LOANS) {
                Py_DECREF(info);
                rc = 1;
                break;
            }
            ref = lend(st, v, info, iid, loans);
            Py_DECREF(info);
            if (ref == NULL) {
                rc = -1;
            }
            else {
                Py_SETREF(((PyTupleObject *)packed)->ob_item[i], ref);
            }
            continue;
        }
        if (target == NULL && (target = PyLong_FromLongLong(iid)) == NULL) {
            rc = -1;
            break;
        }
        if (loans->made == NULL && (loans->made = PyList_New(0)) == NULL) {
            rc = -1;
            break;
        }
        ref = PyObject_CallFunctionObjArgs(st->ref_out, v, target, NULL);
        if (ref == NULL) {
            rc = -1;
        }
        else if (ref == Py_None) {
            Py_DECREF(ref);
            rc = 1;
        }
        else if (PyList_Append(loans->made, ref) < 0) {
            Py_DECREF(ref);
            rc = -1;
        }
        else {
            Py_SETREF(((PyTupleObject *)packed)->ob_item[i], ref);
        }
    }
    Py_XDECREF(target);
    return rc;
}

/* The call is over, whatever its outcome: end its loans, then ref_done(made).  A call that
 * returned (done) tells the target the types it sent in full.  Keeps the call's exception. */
static int
refs_done(modstate *st, loans_t *loans, int done)
{
    PyObject *saved = PyErr_GetRaisedException();
    for (int i = 0; i < loans->n; i++) {
        unlend(st, loans->obj[i], loans->oid[i], loans->ident[i]);
        Py_DECREF(loans->oid[i]);
        Py_DECREF(loans->ident[i]);
        if (loans->told[i] != NULL) {
            if (done && PySet_Add(st->told, loans->told[i]) < 0) {
                PyErr_Clear();   /* it is sent in full again next time */
            }
            Py_DECREF(loans->told[i]);
        }
    }
    loans->n = 0;
    PyObject *ok = Py_None;
    if (loans->made != NULL) {
        ok = PyObject_CallOneArg(st->ref_done, loans->made);
        if (ok == NULL && saved != NULL) {
            PyErr_WriteUnraisable(st->ref_done);   /* the call's own error wins */
        }
        Py_XDECREF(ok);
        Py_CLEAR(loans->made);
    }
    if (saved != NULL) {
        PyErr_SetRaisedException(saved);
    }
    return ok == NULL && saved == NULL ? -1 : 0;
}

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

/* invoke(interp_id, oid, name, args): the lean proxy call.  args (plain values) cross
 * as one stdlib-marshal blob, read by the target's invoker fn(oid, name, args), whose
 * reply comes back the same way. */
PyObject *
appdomain_invoke(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "invoke(interp_id, oid, name, args) takes 4 arguments");
        return NULL;
    }
    long long iid = PyLong_AsLongLong(args[0]);
    if (iid == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long oid = PyLong_AsLongLong(args[1]);
    if (oid == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyUnicode_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %s", Py_TYPE(args[2])->tp_name);
        return NULL;
    }
    if (!PyTuple_CheckExact(args[3])) {
        PyErr_Format(PyExc_TypeError, "args must be a tuple, not %s", Py_TYPE(args[3])->tp_name);
        return NULL;
    }
    modstate *st = get_state(module);
    int lean = is_lean(st, args[3]);
    if (!lean) {
        Py_RETURN_NOTIMPLEMENTED;   /* the caller takes the generic route */
    }
    Py_ssize_t name_len;
    const char *name = PyUnicode_AsUTF8AndSize(args[2], &name_len);
    if (name == NULL) {
        return NULL;
    }
    threadrec_t *r = caller_record();
    if (r == NULL) {
        return NULL;
    }
    callctx c = {.kind = KIND_INVOKE, .st = st, .oid = oid, .name = name,
                 .name_len = name_len, .has_refs = lean == 2};
    PyObject *packed = args[3];
    loans_t loans = {.n = 0, .made = NULL};
    if (c.has_refs) {
        /* References cross as tuples, lent (or counted) while the call lasts. */
        if ((packed = copy_args(args[3])) == NULL) {
            return NULL;
        }
        int rc = pack_refs(st, packed, iid, &loans);
        if (rc != 0) {
            Py_DECREF(packed);
            (void)refs_done(st, &loans, 0);
            if (rc < 0) {
                return NULL;
            }
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    /* Large bytes arguments stay where they are (the caller's tuple keeps them alive
     * for the call): None stands in for them in the blob. */
    Py_ssize_t n = PyTuple_GET_SIZE(packed);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(args[3], i);
        if (!PyBytes_CheckExact(v) || PyBytes_GET_SIZE(v) < BIG_ARG_BYTES) {
            continue;
        }
        if (c.nbig == MAX_BIG_ARGS) {
            if (packed != args[3]) {
                Py_DECREF(packed);
            }
            if (c.has_refs) {
                (void)refs_done(st, &loans, 0);
            }
            Py_RETURN_NOTIMPLEMENTED;
        }
        if (packed == args[3] && (packed = copy_args(args[3])) == NULL) {
            return NULL;
        }
        Py_SETREF(((PyTupleObject *)packed)->ob_item[i], Py_NewRef(Py_None));
        c.big_index[c.nbig] = i;
        c.big_buf[c.nbig] = PyBytes_AS_STRING(v);
        c.big_len[c.nbig] = PyBytes_GET_SIZE(v);
        c.nbig++;
    }
    PyObject *blob = PyMarshal_WriteObjectToString(packed, LEAN_MARSHAL_VERSION);
    if (packed != args[3]) {
        Py_DECREF(packed);
    }
    PyObject *result = NULL;
    if (blob != NULL) {
        c.payload = PyBytes_AS_STRING(blob);
        c.payload_len = PyBytes_GET_SIZE(blob);
        result = switch_call(r, iid, &c);
        Py_DECREF(blob);
    }
    if (c.has_refs && refs_done(st, &loans, result != NULL) < 0) {
        Py_CLEAR(result);
    }
    return result;
}

static PyObject *
native_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "call(interp_id, parts) takes 2 arguments");
        return NULL;
    }
    long long iid = PyLong_AsLongLong(args[0]);
    if (iid == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *parts = args[1];
    if (!PyTuple_Check(parts)) {
        PyErr_Format(PyExc_TypeError, "parts must be a tuple, not %s", Py_TYPE(parts)->tp_name);
        return NULL;
    }
    threadrec_t *r = caller_record();
    if (r == NULL) {
        return NULL;
    }

    Py_ssize_t n = PyTuple_GET_SIZE(parts), got = 0;
    Py_buffer bufs_stack[NPARTS_STACK];
    unsigned char kept_stack[NPARTS_STACK] = {0};
    Py_buffer *bufs = bufs_stack;
    unsigned char *kept = kept_stack;
    PyObject *result = NULL;
    if (n > NPARTS_STACK) {
        bufs = PyMem_Malloc(n * sizeof(*bufs));
        kept = PyMem_Calloc(n, 1);
        if (bufs == NULL || kept == NULL) {
            PyErr_NoMemory();
            goto out;
        }
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(parts, got), &bufs[got], PyBUF_SIMPLE) < 0) {
            goto out;
        }
    }

    callctx c = {.kind = KIND_PARTS, .st = get_state(module), .bufs = bufs, .n = n,
                 .retained = kept};
    result = switch_call(r, iid, &c);

out:
    for (Py_ssize_t i = 0; i < got; i++) {
        if (!kept[i]) {
            PyBuffer_Release(&bufs[i]);
        }
    }
    if (bufs != bufs_stack) {
        PyMem_Free(bufs);
    }
    if (kept != kept_stack) {
        PyMem_Free(kept);
    }
    return result;
}


/* ------------------------------------------------------ registration */

/* refs' fast part: None, or (classes, RemoteRef, Route, entry type, gone, ref name, the
 * entry's key slot name, cell name, the entry's cell slot name, kept lent references,
 * returned types) (switch.c make_proxy and ref_parts, method.c adopt_ref, proxy_gone). */
static int
fast_ok(PyObject *fast)
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

/* ------------------------------------------------------ proxies' releases */

/* A proxy's references are released together when it dies.  Its weak entry in the
 * proxies dict (fast's entry type) calls proxy_gone, which forgets the entry and, for an
 * owner the switch serves, queues (oid, count) in the owner's record: no Python code, no
 * cross-interpreter queue.  The owner drains its queue (apply_releases) before answering
 * live_count, when its dispatcher is woken (arm_py has the releasing domain's waker do
 * that within WAKE_DELAY, once per batch), and before a generic call. */

int
appdomain_push_release(long long iid, PyObject *oid, PyObject *count)
{
    long long o = PyLong_AsLongLong(oid), n = PyLong_AsLongLong(count);
    if ((o == -1 || n == -1) && PyErr_Occurred()) {
        return -2;
    }
    int rc = -1;
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(iid);
    if (d != NULL && d->fn != NULL) {
        if (d->nrel == d->caprel) {
            Py_ssize_t cap = d->caprel ? d->caprel * 2 : 64;
            long long *grown = realloc(d->rel, (size_t)cap * 2 * sizeof(long long));
            if (grown != NULL) {
                d->rel = grown;
                d->caprel = cap;
            }
        }
        if (d->nrel < d->caprel) {
            d->rel[2 * d->nrel] = o;
            d->rel[2 * d->nrel + 1] = n;
            d->nrel++;
            rc = d->rel_armed ? 0 : 1;
            d->rel_armed = 1;
        }
    }
    PyMutex_Unlock(&G.mutex);
    return rc;   /* no room: Python releases it */
}

Py_ssize_t
appdomain_slot_offset(PyObject *tp, PyObject *name)
{
    PyObject *descr = PyType_Check(tp) ? PyObject_GetAttr(tp, name) : NULL;
    Py_ssize_t offset = 0;
    if (descr == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)
        && PyDescr_TYPE(descr) == (PyTypeObject *)tp) {
        PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type == Py_T_OBJECT_EX && !(m->flags & Py_READONLY) && m->offset > 0) {
            offset = m->offset;
        }
    }
    Py_DECREF(descr);
    return offset;
}

/* proxy_gone(entry): a proxy died; entry, its weak reference, knows its key and cell. */
static PyObject *
native_proxy_gone(PyObject *module, PyObject *entry)
{
    modstate *st = get_state(module);
    if (st->fast == NULL || st->proxies == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *key = NULL, *cell = NULL, *listed = NULL;
    PyTypeObject *entry_type = (PyTypeObject *)PyTuple_GET_ITEM(st->fast, 3);
    key = entry_get(entry, entry_type, st->off_key, PyTuple_GET_ITEM(st->fast, 6));
    if (key == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (key == NULL || !PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 2) {
        Py_XDECREF(key);
        Py_RETURN_NONE;
    }
    if (PyDict_GetItemRef(st->proxies, key, &listed) < 0) {
        goto error;
    }
    if (listed == entry && PyDict_DelItem(st->proxies, key) < 0) {
        goto error;
    }
    Py_CLEAR(listed);
    cell = entry_get(entry, entry_type, st->off_cell, PyTuple_GET_ITEM(st->fast, 8));
    if (cell == NULL && PyErr_Occurred()) {
        goto error;
    }
    if (cell != NULL && PyList_CheckExact(cell) && PyList_GET_SIZE(cell) >= 3) {
        PyObject *count = Py_NewRef(PyList_GET_ITEM(cell, 0));
        int some = PyObject_IsTrue(count);
        if (some > 0) {
            /* Taken before anything can run: a second release finds 0. */
            PyList_SetItem(cell, 0, PyLong_FromLong(0));
            PyObject *route = Py_NewRef(PyList_GET_ITEM(cell, 2));
            PyObject *iid = PyTuple_GET_ITEM(key, 0), *oid = PyTuple_GET_ITEM(key, 1);
            long long owner = PyLong_AsLongLong(iid);
            int rc = owner == -1 && PyErr_Occurred() ? -2
                     : appdomain_push_release(owner, oid, count);
            PyObject *ok = Py_None;
            if (rc == 1 && st->arm_py != NULL) {
                ok = PyObject_CallOneArg(st->arm_py, route);
            }
            else if (rc == -1 && st->release_py != NULL) {
                ok = PyObject_CallFunctionObjArgs(st->release_py, route, oid, count, NULL);
            }
            else if (rc == -2) {
                ok = NULL;
            }
            if (ok != Py_None) {
                Py_XDECREF(ok);
            }
            Py_DECREF(route);
            if (ok == NULL) {
                Py_DECREF(count);
                goto error;
            }
        }
        Py_DECREF(count);
        if (some < 0) {
            goto error;
        }
    }
    Py_XDECREF(cell);
    Py_DECREF(key);
    Py_RETURN_NONE;
error:
    Py_XDECREF(listed);
    Py_XDECREF(cell);
    Py_DECREF(key);
    return NULL;
}

/* set_proxy_hooks(proxies, fast, release, arm) */
static PyObject *
native_set_proxy_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || args[1] == Py_None || !fast_ok(args[1])
        || !PyCallable_Check(args[2]) || !PyCallable_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "set_proxy_hooks(proxies, fast, release, arm) takes "
                        "a dict, the fast tuple and 2 callables");
        return NULL;
    }
    modstate *st = get_state(module);
    Py_XSETREF(st->proxies, Py_NewRef(args[0]));
    Py_XSETREF(st->fast, Py_NewRef(args[1]));
    st->off_key = appdomain_slot_offset(PyTuple_GET_ITEM(args[1], 3), PyTuple_GET_ITEM(args[1], 6));
    st->off_cell = appdomain_slot_offset(PyTuple_GET_ITEM(args[1], 3), PyTuple_GET_ITEM(args[1], 8));
    Py_XSETREF(st->release_py, Py_NewRef(args[2]));
    Py_XSETREF(st->arm_py, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

/* set_table_hooks(entries, entry_type, lock, leaseless): this interpreter's object table
 * (remoting's _table), for export() and apply_releases().  set_reference_hooks' lend
 * gives the rest (by_identity, lent_ids, next_oid). */
static PyObject *
native_set_table_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    modstate *st = get_state(module);
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyType_Check(args[1])
        || Py_TYPE(args[2]) != st->lock_type || !PySet_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "set_table_hooks(entries, entry_type, lock, "
                        "leaseless) takes a dict, a type, a TableLock and a set");
        return NULL;
    }
    if (st->str_obj == NULL
        && ((st->str_obj = PyUnicode_InternFromString("obj")) == NULL
            || (st->str_count = PyUnicode_InternFromString("count")) == NULL
            || (st->str_lease = PyUnicode_InternFromString("lease")) == NULL
            || (st->str_expires = PyUnicode_InternFromString("expires")) == NULL
            || (st->forever = PyFloat_FromDouble(Py_HUGE_VAL)) == NULL)) {
        return NULL;
    }
    Py_XSETREF(st->entries, Py_NewRef(args[0]));
    Py_XSETREF(st->entry_type, Py_NewRef(args[1]));
    Py_XSETREF(st->table_lock, Py_NewRef(args[2]));
    Py_XSETREF(st->leaseless, Py_NewRef(args[3]));
    st->off_obj = appdomain_slot_offset(args[1], st->str_obj);
    st->off_count = appdomain_slot_offset(args[1], st->str_count);
    st->off_lease = appdomain_slot_offset(args[1], st->str_lease);
    st->off_expires = appdomain_slot_offset(args[1], st->str_expires);
    Py_RETURN_NONE;
}

/* Take the table's lock: 1 taken, 0 busy (blocking = 0 only), -1 error. */
static int
table_lock(modstate *st, int blocking)
{
    return appdomain_lock_take(st->table_lock, blocking);
}

static int
table_unlock(modstate *st)
{
    return appdomain_lock_give(st->table_lock);
}

/* entry.count += delta; the new count in *now. */
static int
entry_add(modstate *st, PyObject *entry, long long delta, long long *now)
{
    PyTypeObject *tp = (PyTypeObject *)st->entry_type;
    PyObject *count = entry_get(entry, tp, st->off_count, st->str_count);
    if (count == NULL && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_AttributeError, "a table entry has no count");
    }
    long long n = count == NULL ? -1 : PyLong_AsLongLong(count);
    Py_XDECREF(count);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    *now = n + delta;
    PyObject *value = PyLong_FromLongLong(*now);
    int rc = value == NULL ? -1 : entry_put(entry, tp, st->off_count, st->str_count, value);
    Py_XDECREF(value);
    return rc;
}

/* export(obj): remoting's _table.export for an object of a type without a lease, in C:
 * one more remote reference to obj, its object id returned; None for any other object
 * (Python exports it). */
static PyObject *
native_export(PyObject *module, PyObject *obj)
{
    modstate *st = get_state(module);
    if (st->entries == NULL || st->by_identity == NULL) {
        Py_RETURN_NONE;
    }
    int known = PySet_Contains(st->leaseless, (PyObject *)Py_TYPE(obj));
    if (known <= 0) {
        if (known == 0) {
            Py_RETURN_NONE;
        }
        return NULL;
    }
    PyObject *ident = PyLong_FromVoidPtr(obj), *oid = NULL, *entry = NULL, *result = NULL;
    if (ident == NULL) {
        return NULL;
    }
    if (table_lock(st, 1) < 0) {
        Py_DECREF(ident);
        return NULL;
    }
    if (PyDict_GetItemRef(st->by_identity, ident, &oid) < 0) {
        goto out;
    }
    if (oid != NULL) {
        long long now;
        if (PyDict_GetItemRef(st->entries, oid, &entry) <= 0) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_KeyError, "object %R has no entry", oid);
            }
            goto out;
        }
        if (entry_add(st, entry, 1, &now) == 0) {
            result = Py_NewRef(oid);
        }
        goto out;
    }
    /* Lent as an id not counted yet: exported under it, as _publish does. */
    if (PyDict_GetItemRef(st->lent_ids, ident, &oid) < 0) {
        goto out;
    }
    if (oid != NULL) {
        int taken = PyDict_Contains(st->entries, oid);
        if (taken < 0) {
            goto out;
        }
        if (taken) {
            Py_CLEAR(oid);
        }
    }
    if (oid == NULL && (oid = PyIter_Next(st->next_oid)) == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "object ids ran out");
        }
        goto out;
    }
    PyTypeObject *tp = (PyTypeObject *)st->entry_type;
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL || (entry = tp->tp_alloc(tp, 0)) == NULL
        || entry_put(entry, tp, st->off_obj, st->str_obj, obj) < 0
        || entry_put(entry, tp, st->off_count, st->str_count, one) < 0
        || entry_put(entry, tp, st->off_lease, st->str_lease, Py_None) < 0
        || entry_put(entry, tp, st->off_expires, st->str_expires, st->forever) < 0
        || PyDict_SetItem(st->entries, oid, entry) < 0) {
        Py_XDECREF(one);
        goto out;
    }
    Py_DECREF(one);
    if (PyDict_SetItem(st->by_identity, ident, oid) < 0) {
        (void)PyDict_DelItem(st->entries, oid);
        goto out;
    }
    result = Py_NewRef(oid);
out:
    if (table_unlock(st) < 0) {
        Py_CLEAR(result);
    }
    Py_DECREF(ident);
    Py_XDECREF(oid);
    Py_XDECREF(entry);   /* after the lock: nothing of the user's runs under it */
    return result;
}

/* lean_ref(obj, info, ctx, oid): the lean reply for a new reference to obj, an object of
 * this interpreter whose type remoting lends (info: (*route, module, qualname, token)):
 * (2, (oid, module, qualname, token), ctx) the first time this call's caller meets the type,
 * (2, (oid, token), ctx) later (method.c returned_names reads both).  With oid None, obj is
 * exported here, or None returned when it is not one export() takes: Python exports it and
 * passes its oid.  The one place that decides which callers were told a type in full. */
static PyObject *
native_lean_ref(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    modstate *st = get_state(module);
    if (nargs != 4 || !PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) != 7) {
        PyErr_SetString(PyExc_TypeError, "lean_ref(obj, info, ctx, oid) takes an object, its "
                        "type's 7-tuple, the call context and its oid or None");
        return NULL;
    }
    if (st->told_back == NULL && (st->told_back = PySet_New(NULL)) == NULL) {
        return NULL;
    }
    PyObject *info = args[1], *token = PyTuple_GET_ITEM(info, 6);
    long long tok = PyLong_AsLongLong(token), caller = -1;
    threadrec_t *r = threadrec_get();
    if (r == NULL || (tok == -1 && PyErr_Occurred())) {
        return NULL;
    }
    if (r->depth > 0 && r->frames[r->depth - 1].ts == PyThreadState_Get()) {
        caller = r->frames[r->depth - 1].caller_id;
    }
    PyObject *told = PyLong_FromLongLong((long long)((unsigned long long)caller << 32) | tok);
    int seen = told == NULL ? -1 : PySet_Contains(st->told_back, told);
    if (seen < 0) {
        Py_XDECREF(told);
        return NULL;
    }
    PyObject *oid = args[3] != Py_None ? Py_NewRef(args[3]) : native_export(module, args[0]);
    if (oid == NULL || oid == Py_None) {
        Py_DECREF(told);
        return oid;
    }
    /* Exported: from here on the reply must reach the caller, whose proxy counts it. */
    PyObject *inner = NULL, *reply = NULL, *two = PyLong_FromLong(2);
    if (seen) {
        inner = PyTuple_Pack(2, oid, token);
    }
    else if (PySet_Add(st->told_back, told) == 0) {
        inner = PyTuple_Pack(4, oid, PyTuple_GET_ITEM(info, 4), PyTuple_GET_ITEM(info, 5), token);
    }
    if (inner != NULL && two != NULL) {
        reply = PyTuple_Pack(3, two, inner, args[2]);
    }
    Py_DECREF(told);
    Py_XDECREF(two);
    Py_XDECREF(inner);
    Py_DECREF(oid);
    return reply;
}

/* Apply rel[0:n] (oid, count pairs) to st's table as _table.release would: 0 done, 1 the
 * table's lock is busy (nothing applied), -1 error. */
static int
apply_list(modstate *st, const long long *rel, Py_ssize_t n)
{
    int taken = st->entries == NULL ? 0 : table_lock(st, 0);
    if (taken <= 0) {
        if (taken < 0) {
            PyErr_Clear();
        }
        return 1;
    }
    PyObject *dropped = NULL;
    int failed = 0;
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        PyObject *oid = PyLong_FromLongLong(rel[2 * i]), *entry = NULL;
        long long now;
        if (oid == NULL || PyDict_GetItemRef(st->entries, oid, &entry) < 0) {
            failed = 1;
        }
        else if (entry != NULL && entry_add(st, entry, -rel[2 * i + 1], &now) < 0) {
            failed = 1;
        }
        else if (entry != NULL && now <= 0) {
            /* _drop_locked: forget it, and its identity if that still names this oid */
            PyObject *obj = entry_get(entry, (PyTypeObject *)st->entry_type, st->off_obj,
                                      st->str_obj);
            PyObject *ident = NULL, *named = NULL;
            if (obj == NULL && !PyErr_Occurred()) {
                PyErr_SetString(PyExc_AttributeError, "a table entry has no obj");
            }
            failed = obj == NULL || (ident = PyLong_FromVoidPtr(obj)) == NULL
                     || PyDict_GetItemRef(st->by_identity, ident, &named) < 0
                     || (named != NULL && PyObject_RichCompareBool(named, oid, Py_EQ) == 1
                         && PyDict_DelItem(st->by_identity, ident) < 0)
                     || (dropped == NULL && (dropped = PyList_New(0)) == NULL)
                     || PyList_Append(dropped, entry) < 0
                     || PyDict_DelItem(st->entries, oid) < 0;
            Py_XDECREF(obj);
            Py_XDECREF(ident);
            Py_XDECREF(named);
        }
        Py_XDECREF(entry);
        Py_XDECREF(oid);
    }
    if (table_unlock(st) < 0) {
        failed = 1;
    }
    Py_XDECREF(dropped);   /* the objects die here, with the lock free */
    return failed ? -1 : 0;
}

/* Take d's queued releases (G.mutex held by the caller); NULL if none. */
static long long *
take_list(domain_t *d, Py_ssize_t *n)
{
    long long *rel = d->rel;
    *n = d->nrel;
    d->rel = NULL;
    d->nrel = d->caprel = 0;
    d->rel_armed = 0;
    return *n ? rel : (free(rel), NULL);
}

/* apply_releases(): apply the releases queued for this interpreter to its table, as
 * _table.release would; return None, or the flat [oid, count, ...] left for Python when
 * the table's lock is busy. */
static PyObject *
native_apply_releases(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    modstate *st = get_state(module);
    int64_t id = PyInterpreterState_GetID(PyInterpreterState_Get());
    long long *rel = NULL;
    Py_ssize_t n = 0;
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(id);
    if (d != NULL) {
        rel = take_list(d, &n);
    }
    PyMutex_Unlock(&G.mutex);
    if (rel == NULL) {
        Py_RETURN_NONE;
    }
    int rc = apply_list(st, rel, n);
    PyObject *flat = NULL;
    if (rc == 1) {
        flat = PyList_New(2 * n);   /* Python applies them */
        for (Py_ssize_t i = 0; flat != NULL && i < 2 * n; i++) {
            PyObject *v = PyLong_FromLongLong(rel[i]);
            if (v == NULL) {
                Py_CLEAR(flat);
                break;
            }
            PyList_SET_ITEM(flat, i, v);
        }
    }
    free(rel);
    if (rc == 0) {
        Py_RETURN_NONE;
    }
    return flat;   /* NULL with the error when rc == -1 */
}

/* A call entering d (attached to it, under its GIL) applies d's queued releases once there
 * are INLINE_RELEASES of them: on the calling thread, which holds d's GIL anyway, instead
 * of d's dispatcher thread taking that GIL from the callers in one long batch every
 * WAKE_DELAY.  A busy table lock leaves them queued (a wake is due for them). */
void
appdomain_apply_inline(domain_t *d)
{
    modstate *st = (modstate *)d->owner_state;
    if (d->nrel < INLINE_RELEASES || st == NULL || st->entries == NULL) {
        return;   /* a hint read without the mutex: taken under it below */
    }
    Py_ssize_t n = 0;
    PyMutex_Lock(&G.mutex);
    long long *rel = take_list(d, &n);
    PyMutex_Unlock(&G.mutex);
    if (rel == NULL) {
        return;
    }
    PyObject *saved = PyErr_GetRaisedException();
    int rc = apply_list(st, rel, n);
    if (rc == 1) {
        /* Back on the queue, armed as it was (a queue is never left unarmed). */
        PyMutex_Lock(&G.mutex);
        Py_ssize_t need = d->nrel + n;
        if (need > d->caprel) {
            long long *grown = realloc(d->rel, (size_t)need * 2 * sizeof(long long));
            if (grown != NULL) {
                d->rel = grown;
                d->caprel = need;
            }
        }
        if (need <= d->caprel) {
            memcpy(d->rel + 2 * d->nrel, rel, (size_t)n * 2 * sizeof(long long));
            d->nrel = need;
        }
        d->rel_armed = 1;
        PyMutex_Unlock(&G.mutex);
    }
    else if (rc < 0) {
        PyErr_WriteUnraisable(NULL);   /* only memory runs out here */
    }
    free(rel);
    PyErr_SetRaisedException(saved);
}

/* releases_pending(): how many releases are queued for this interpreter. */
static PyObject *
native_releases_pending(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    int64_t id = PyInterpreterState_GetID(PyInterpreterState_Get());
    Py_ssize_t n = 0;
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(id);
    if (d != NULL) {
        n = d->nrel;
    }
    PyMutex_Unlock(&G.mutex);
    return PyLong_FromSsize_t(n);
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
            || !fast_ok(PyTuple_GET_ITEM(refs, 4)))) {
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
    {"set_reference_hooks", (PyCFunction)(void (*)(void))native_set_reference_hooks,
     METH_FASTCALL,
     "set_reference_hooks(ref_type, ref_out, ref_done, lend)\n--\n\nLet invoke() carry "
     "instances of ref_type: those of a type in lend's lean_types are lent for the call, "
     "others cross as ref_out(obj, interp_id) (a tuple of plain values; None sends the call "
     "by the generic route), and ref_done(refs) runs with those tuples once the call is "
     "over.  lend is (lean_types, by_identity, lent, lent_ids, next_oid)."},
    {"set_proxy_hooks", (PyCFunction)(void (*)(void))native_set_proxy_hooks, METH_FASTCALL,
     "set_proxy_hooks(proxies, fast, release, arm)\n--\n\nName what proxies of this "
     "interpreter live by: the proxies dict, the fast tuple (its entry type's weak references "
     "call proxy_gone), release(route, oid, count) for an owner the switch does not serve "
     "and arm(route) to have an owner woken to drain its releases."},
    {"proxy_gone", native_proxy_gone, METH_O,
     "proxy_gone(entry)\n--\n\nA proxy died: forget its entry and release the references "
     "its cell holds (queued at an owner the switch serves)."},
    {"set_table_hooks", (PyCFunction)(void (*)(void))native_set_table_hooks, METH_FASTCALL,
     "set_table_hooks(entries, entry_type, lock, leaseless)\n--\n\nName this "
     "interpreter's object table, for export() and apply_releases()."},
    {"lean_ref", (PyCFunction)(void (*)(void))native_lean_ref, METH_FASTCALL,
     "lean_ref(obj, info, ctx, oid)\n--\n\nThe lean reply that names obj (its type in full "
     "once per caller, then by token), exported here when oid is None; None when Python must "
     "export it."},
    {"export", native_export, METH_O,
     "export(obj)\n--\n\nCount one more remote reference to obj, of a type without a "
     "lease, and return its object id; None for other objects (Python exports them)."},
    {"apply_releases", native_apply_releases, METH_NOARGS,
     "apply_releases()\n--\n\nApply the releases queued for this interpreter to its "
     "table; return None, or those left for Python as [oid, count, ...] when the table's "
     "lock is busy."},
    {"releases_pending", native_releases_pending, METH_NOARGS,
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
    {"call", (PyCFunction)(void (*)(void))native_call, METH_FASTCALL,
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
