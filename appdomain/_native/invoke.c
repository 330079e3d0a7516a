/* The lean proxy call: invoke(interp_id, oid, name, args), which carries plain values and
 * by-reference arguments without Python code, and call(interp_id, parts), the generic
 * route's entry.  Which arguments may go lean (is_lean), and how an object passed by
 * reference is lent for the call (lend, pack_refs) and given back after it (refs_done). */
#include "core.h"

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
PyObject *
appdomain_set_reference_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
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
 * of the full one (refs.c take_refs): no strings to pack and unpack.  st->told holds
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

PyObject *
appdomain_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
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


