/* Proxy methods bound and called in C, for appdomain._native._ext.
 *
 * `proxy.add(1, 2)` is two steps: looking up `add` binds the method to the proxy, then
 * the bound method is called.  Done in Python, each step runs a frame (a descriptor's
 * __get__, then the function that picks a route), and those frames cost about as much as
 * the whole switch into the other domain.  Here both steps are C:
 *
 *  - MethodMember is the class attribute of a proxy type that stands for one remote
 *    method.  It holds the method's spec (the Python _MethodSpec), its name, and whether
 *    its calls may take the lean route (invoke(): plain values, no Out parameters).
 *    Reading it from a proxy makes a BoundMethod.
 *  - BoundMethod (the base of the Python RemoteMethod) holds the member and the proxy.
 *    Called with positional arguments on a lean method, it reads the proxy's RemoteRef
 *    and calls appdomain_invoke() directly; a plain successful reply is returned as it
 *    is.  Everything else (keywords, a method that is not lean, an error, a reply that
 *    needs decoding or carries a call context) goes to the Python functions registered
 *    with set_method_hooks(), which stay the reference for what a call means.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "native.h"

typedef struct {
    PyObject_HEAD
    PyObject *module;      /* the _native module of this interpreter (its state, invoke) */
    PyObject *spec;        /* the Python _MethodSpec */
    PyObject *name;        /* spec.name */
    PyTypeObject *bound;   /* the type to bind with (RemoteMethod, a BoundMethod subclass) */
    int lean;              /* spec.lean_ok */
} MethodMember;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    MethodMember *member;
    PyObject *proxy;
} BoundMethod;

static PyObject *bound_vectorcall(PyObject *, PyObject *const *, size_t, PyObject *);

/* ---------------------------------------------------------------- MethodMember */

static int
member_traverse(PyObject *op, visitproc visit, void *arg)
{
    MethodMember *self = (MethodMember *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->module);
    Py_VISIT(self->spec);
    Py_VISIT(self->name);
    Py_VISIT(self->bound);
    return 0;
}

static int
member_clear(PyObject *op)
{
    MethodMember *self = (MethodMember *)op;
    Py_CLEAR(self->module);
    Py_CLEAR(self->spec);
    Py_CLEAR(self->name);
    Py_CLEAR(self->bound);
    return 0;
}

static void
member_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)member_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
member_get(PyObject *op, PyObject *proxy, PyObject *Py_UNUSED(owner))
{
    if (proxy == NULL || proxy == Py_None) {
        return Py_NewRef(op);   /* read from the proxy type itself */
    }
    MethodMember *self = (MethodMember *)op;
    BoundMethod *bound = (BoundMethod *)self->bound->tp_alloc(self->bound, 0);
    if (bound == NULL) {
        return NULL;
    }
    bound->vectorcall = bound_vectorcall;
    bound->member = (MethodMember *)Py_NewRef(op);
    bound->proxy = Py_NewRef(proxy);
    return (PyObject *)bound;
}

static PyMemberDef member_members[] = {
    {"spec", Py_T_OBJECT_EX, offsetof(MethodMember, spec), Py_READONLY, "the method's spec"},
    {NULL},
};

static PyType_Slot member_slots[] = {
    {Py_tp_doc, "A remote method, as a member of a proxy type (made by method_member())."},
    {Py_tp_traverse, member_traverse},
    {Py_tp_clear, member_clear},
    {Py_tp_dealloc, member_dealloc},
    {Py_tp_descr_get, member_get},
    {Py_tp_members, member_members},
    {0, NULL},
};

static PyType_Spec member_spec = {
    .name = "appdomain._native._ext.MethodMember",
    .basicsize = sizeof(MethodMember),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = member_slots,
};

/* method_member(spec, bound_type): the member for one remote method. */
PyObject *
appdomain_method_member(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    modstate *st = get_state(module);
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "method_member(spec, bound_type) takes 2 arguments");
        return NULL;
    }
    PyObject *spec = args[0], *bound = args[1];
    if (!PyType_Check(bound) || !PyType_IsSubtype((PyTypeObject *)bound, st->bound_type)) {
        PyErr_Format(PyExc_TypeError, "'bound_type' must be a subclass of BoundMethod (got %R)",
                     bound);
        return NULL;
    }
    PyObject *name = PyObject_GetAttrString(spec, "name");
    if (name == NULL) {
        return NULL;
    }
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "'spec.name' must be a str (got %R)", name);
        Py_DECREF(name);
        return NULL;
    }
    PyObject *lean_ok = PyObject_GetAttrString(spec, "lean_ok");
    int lean = lean_ok == NULL ? -1 : PyObject_IsTrue(lean_ok);
    Py_XDECREF(lean_ok);
    if (lean < 0) {
        Py_DECREF(name);
        return NULL;
    }
    MethodMember *self = PyObject_GC_New(MethodMember, st->member_type);
    if (self == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    self->module = Py_NewRef(module);
    self->spec = Py_NewRef(spec);
    self->name = name;
    self->bound = (PyTypeObject *)Py_NewRef(bound);
    self->lean = lean;
    PyObject_GC_Track((PyObject *)self);
    return (PyObject *)self;
}

/* set_lean_counting(on): count this interpreter's lean bound calls (monitoring) or not. */
PyObject *
appdomain_set_lean_counting(PyObject *module, PyObject *on)
{
    int value = PyObject_IsTrue(on);
    if (value < 0) {
        return NULL;
    }
    get_state(module)->lean_counting = value;
    Py_RETURN_NONE;
}

/* lean_calls(): how many lean bound calls this interpreter sent while counting. */
PyObject *
appdomain_lean_calls(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(get_state(module)->lean_calls);
}

/* set_method_hooks(slow_call, lean_outcome): the Python side of a bound call. */
PyObject *
appdomain_set_method_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyCallable_Check(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "set_method_hooks(slow_call, lean_outcome) takes 2 callables");
        return NULL;
    }
    modstate *st = get_state(module);
    Py_XSETREF(st->slow_call, Py_NewRef(args[0]));
    Py_XSETREF(st->lean_outcome, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------------- BoundMethod */

static int
bound_traverse(PyObject *op, visitproc visit, void *arg)
{
    BoundMethod *self = (BoundMethod *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->member);
    Py_VISIT(self->proxy);
    return 0;
}

static int
bound_clear(PyObject *op)
{
    BoundMethod *self = (BoundMethod *)op;
    Py_CLEAR(self->member);
    Py_CLEAR(self->proxy);
    return 0;
}

static void
bound_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)bound_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
hook_missing(void)
{
    PyErr_SetString(PyExc_RuntimeError, "appdomain._native._ext: set_method_hooks() was not called");
    return NULL;
}

/* slow_call(proxy, spec, *args, **kwargs): the generic route. */
static PyObject *
call_slow(modstate *st, BoundMethod *self, PyObject *const *args, size_t nargsf,
          PyObject *kwnames)
{
    if (st->slow_call == NULL) {
        return hook_missing();
    }
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = n + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *stack[10];
    PyObject **all = stack;
    if (total + 2 > (Py_ssize_t)(sizeof(stack) / sizeof(stack[0]))) {
        all = PyMem_Malloc((total + 2) * sizeof(PyObject *));
        if (all == NULL) {
            return PyErr_NoMemory();
        }
    }
    all[0] = self->proxy;
    all[1] = self->member->spec;
    memcpy(all + 2, args, total * sizeof(PyObject *));
    PyObject *result = PyObject_Vectorcall(st->slow_call, all, n + 2, kwnames);
    if (all != stack) {
        PyMem_Free(all);
    }
    return result;
}

/* The proxy's RemoteRef(route, oid, ...), route starting with the interpreter id: the
 * borrowed items, with the ref returned as a new reference (NULL: not a usable ref). */
static PyObject *
read_ref(modstate *st, PyObject *proxy, PyObject **iid, PyObject **oid)
{
    /* Generic: the proxy type's __getattr__ would ask the remote object.  A proxy's own
     * attributes live in its inline values until Python asks for its __dict__. */
    PyObject *ref = PyObject_GenericGetAttr(proxy, st->str_ref);
    if (ref == NULL) {
        PyErr_Clear();
    }
    if (ref == NULL || !PyTuple_Check(ref) || PyTuple_GET_SIZE(ref) < 2
        || !PyTuple_Check(PyTuple_GET_ITEM(ref, 0)) || PyTuple_GET_SIZE(PyTuple_GET_ITEM(ref, 0)) < 1) {
        Py_XDECREF(ref);
        return NULL;
    }
    *iid = PyTuple_GET_ITEM(PyTuple_GET_ITEM(ref, 0), 0);
    *oid = PyTuple_GET_ITEM(ref, 1);
    return ref;
}

/* The names (module, qualname) of the type of a reference a lean call returned, data:
 * (oid, module, qualname), or (oid, module, qualname, token) the first time the callee
 * returns one of that type here (kept in returned under (callee iid, token)), or the
 * compact (oid, token) later.  New reference; NULL with no exception for a compact form
 * not met here (another thread's reply that brings it in full may still be on its way). */
static PyObject *
returned_names(PyObject *returned, PyObject *iid, PyObject *data)
{
    Py_ssize_t n = PyTuple_GET_SIZE(data);
    if (n == 3) {
        return PyTuple_GetSlice(data, 1, 3);
    }
    PyObject *key = PyTuple_Pack(2, iid, PyTuple_GET_ITEM(data, n - 1)), *names = NULL;
    if (key == NULL) {
        return NULL;
    }
    if (n == 4) {
        names = PyTuple_GetSlice(data, 1, 3);
        if (names != NULL && PyDict_SetItem(returned, key, names) < 0) {
            Py_CLEAR(names);
        }
    }
    else if (PyDict_GetItemRef(returned, key, &names) == 0) {
        names = NULL;
    }
    Py_DECREF(key);
    return names;
}

/* The proxy for a reference a lean call returned, data (returned_names) naming an
 * object of the callee (so on the route of caller_ref, the RemoteRef of the proxy called),
 * which the callee counted once for us: this interpreter's proxy for it counts one more, or
 * a new one is made (as remoting's proxy_for does) holding that one, its weak entry
 * carrying its cell [count, 1, route] so that proxy_gone releases it.  Py_None: Python
 * must do it (no hooks, a type not met yet, a proxy listed strongly by a lean call in
 * flight, or a cell that is not the entry's). */
PyObject *
appdomain_adopt_ref(modstate *st, PyObject *caller_ref, PyObject *data)
{
    PyObject *fast = st->fast, *proxies = st->proxies;
    if (fast == NULL || proxies == NULL || !PyTuple_CheckExact(data)
        || PyTuple_GET_SIZE(data) < 2 || PyTuple_GET_SIZE(data) > 4) {
        Py_RETURN_NONE;
    }
    PyObject *const *it = &PyTuple_GET_ITEM(data, 0);
    PyObject *route = PyTuple_GET_ITEM(caller_ref, 0);   /* read_ref checked it */
    PyTypeObject *entry_type = (PyTypeObject *)PyTuple_GET_ITEM(fast, 3);
    PyObject *str_ref = PyTuple_GET_ITEM(fast, 5), *str_key = PyTuple_GET_ITEM(fast, 6);
    PyObject *str_cell = PyTuple_GET_ITEM(fast, 7), *str_entry_cell = PyTuple_GET_ITEM(fast, 8);
    PyObject *key = NULL, *listed = NULL, *name = NULL, *cls = NULL;
    PyObject *ref = NULL, *proxy = NULL, *cell = NULL, *entry = NULL;
    PyObject *result = NULL;
    /* Names first: a type sent in full is learnt whatever happens to this reply. */
    if ((name = returned_names(PyTuple_GET_ITEM(fast, 10), PyTuple_GET_ITEM(route, 0), data))
        == NULL) {
        if (!PyErr_Occurred()) {
            result = Py_NewRef(Py_None);   /* Python asks the callee */
        }
        goto out;
    }
    if ((key = PyTuple_Pack(2, PyTuple_GET_ITEM(route, 0), it[0])) == NULL
        || PyDict_GetItemRef(proxies, key, &listed) < 0) {
        goto out;
    }
    if (listed != NULL) {
        PyObject *live = NULL;
        if (Py_TYPE(listed) != entry_type || PyWeakref_GetRef(listed, &live) < 0) {
            PyErr_Clear();
            result = Py_NewRef(Py_None);   /* listed strongly: a lean call's, Python counts */
            goto out;
        }
        if (live != NULL) {
            /* This domain's proxy for it: one more reference on its cell, if the entry
             * carries that cell. */
            PyObject *own = NULL, *held = PyObject_GenericGetAttr(live, str_cell);
            int ok = held != NULL
                     && (own = entry_get(listed, entry_type, st->off_cell, str_entry_cell)) != NULL
                     && own == held && PyList_CheckExact(held) && PyList_GET_SIZE(held) >= 3;
            PyErr_Clear();
            if (ok) {
                PyObject *one = PyLong_FromLong(1);
                PyObject *sum = one ? PyNumber_Add(PyList_GET_ITEM(held, 0), one) : NULL;
                Py_XDECREF(one);
                if (sum != NULL) {
                    PyList_SetItem(held, 0, sum);
                    result = Py_NewRef(live);
                }
            }
            else {
                result = Py_NewRef(Py_None);
            }
            Py_XDECREF(held);
            Py_XDECREF(own);
            Py_DECREF(live);
            goto out;
        }
        Py_CLEAR(listed);   /* dead: its callback is on its way; a new proxy takes its key */
    }
    if (PyDict_GetItemRef(PyTuple_GET_ITEM(fast, 0), name, &cls) < 0) {
        goto out;
    }
    if (cls == NULL || !PyType_Check(cls)) {
        result = Py_NewRef(Py_None);
        goto out;
    }
    PyObject *parts[4] = {route, it[0], PyTuple_GET_ITEM(name, 0), PyTuple_GET_ITEM(name, 1)};
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL) {
        goto out;
    }
    cell = PyList_New(3);
    if (cell == NULL) {
        Py_DECREF(one);
        goto out;
    }
    PyList_SET_ITEM(cell, 0, one);
    PyList_SET_ITEM(cell, 1, Py_NewRef(one));
    PyList_SET_ITEM(cell, 2, Py_NewRef(route));
    if ((ref = tuple_of((PyTypeObject *)PyTuple_GET_ITEM(fast, 1), parts, 4)) == NULL
        || (proxy = ((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0)) == NULL
        || PyObject_GenericSetAttr(proxy, str_ref, ref) < 0   /* not the type's __setattr__ */
        || PyObject_GenericSetAttr(proxy, str_cell, cell) < 0
        || (entry = PyObject_Vectorcall((PyObject *)entry_type,
                                     (PyObject *[]){proxy, PyTuple_GET_ITEM(fast, 4)}, 2, NULL)) == NULL
        || entry_put(entry, entry_type, st->off_key, str_key, key) < 0
        || entry_put(entry, entry_type, st->off_cell, str_entry_cell, cell) < 0) {
        goto out;
    }
    /* Allocating above may have run other code (a collection's finalizers): list ours
     * only if the key is still free; else Python finds the other one. */
    if (PyDict_GetItemRef(proxies, key, &listed) < 0) {
        goto out;
    }
    PyObject *other = NULL;
    if (listed != NULL && Py_TYPE(listed) == entry_type
        && PyWeakref_GetRef(listed, &other) < 0) {
        goto out;
    }
    if (listed != NULL && (Py_TYPE(listed) != entry_type || other != NULL)) {
        Py_XDECREF(other);
        PyList_SetItem(cell, 0, PyLong_FromLong(0));   /* ours holds nothing now */
        result = Py_NewRef(Py_None);
        goto out;
    }
    if (PyDict_SetItem(proxies, key, entry) < 0) {
        goto out;
    }
    result = Py_NewRef(proxy);
out:
    if (result == NULL && cell != NULL) {
        (void)PyList_SetItem(cell, 0, PyLong_FromLong(0));   /* nothing to release */
    }
    Py_XDECREF(key);
    Py_XDECREF(listed);
    Py_XDECREF(name);
    Py_XDECREF(cls);
    Py_XDECREF(ref);
    Py_XDECREF(proxy);
    Py_XDECREF(cell);
    Py_XDECREF(entry);
    return result;
}

static PyObject *
bound_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    BoundMethod *self = (BoundMethod *)op;
    MethodMember *m = self->member;
    modstate *st = get_state(m->module);
    if (!m->lean || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        return call_slow(st, self, args, nargsf, kwnames);
    }
    PyObject *iid, *oid;
    PyObject *ref = read_ref(st, self->proxy, &iid, &oid);
    if (ref == NULL) {
        return call_slow(st, self, args, nargsf, kwnames);   /* it explains */
    }
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    PyObject *argt = PyTuple_New(n);
    if (argt == NULL) {
        Py_DECREF(ref);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(argt, i, Py_NewRef(args[i]));
    }
    if (st->lean_counting) {
        st->lean_calls++;   /* under this interpreter's GIL */
    }
    PyObject *invoke_args[4] = {iid, oid, m->name, argt};
    PyObject *reply = appdomain_invoke(m->module, invoke_args, 4);
    PyObject *result = NULL;
    if (reply != NULL && PyTuple_CheckExact(reply) && PyTuple_GET_SIZE(reply) == 3
        && PyTuple_GET_ITEM(reply, 0) == Py_True && PyTuple_GET_ITEM(reply, 2) == Py_None) {
        result = Py_NewRef(PyTuple_GET_ITEM(reply, 1));   /* done, nothing to merge */
    }
    else if (reply != NULL && PyTuple_CheckExact(reply) && PyTuple_GET_SIZE(reply) == 3
             && PyLong_CheckExact(PyTuple_GET_ITEM(reply, 0))
             && PyLong_AsLong(PyTuple_GET_ITEM(reply, 0)) == 2
             && PyTuple_GET_ITEM(reply, 2) == Py_None
             && (result = appdomain_adopt_ref(st, ref, PyTuple_GET_ITEM(reply, 1))) != Py_None) {
        /* a new reference, its proxy made here (or an error making it) */
    }
    else if (st->lean_outcome == NULL) {
        Py_XDECREF(result);   /* adopt_ref's None */
        Py_XDECREF(reply);
        reply = NULL;
        result = hook_missing();
    }
    else {
        Py_XDECREF(result);   /* adopt_ref's None */
        PyObject *error = reply == NULL ? PyErr_GetRaisedException() : Py_NewRef(Py_None);
        result = PyObject_CallFunctionObjArgs(st->lean_outcome, self->proxy, m->spec, argt,
                                              reply ? reply : Py_None, error, NULL);
        Py_DECREF(error);
    }
    Py_XDECREF(reply);
    Py_DECREF(argt);
    Py_DECREF(ref);
    return result;
}

static PyObject *
bound_get_proxy(PyObject *op, void *Py_UNUSED(closure))
{
    return Py_NewRef(((BoundMethod *)op)->proxy);
}

static PyObject *
bound_get_spec(PyObject *op, void *Py_UNUSED(closure))
{
    return Py_NewRef(((BoundMethod *)op)->member->spec);
}

static PyGetSetDef bound_getset[] = {
    {"proxy", bound_get_proxy, NULL, "the proxy this method is bound to", NULL},
    {"spec", bound_get_spec, NULL, "the method's spec", NULL},
    {NULL},
};

static PyMemberDef bound_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(BoundMethod, vectorcall), Py_READONLY},
    {NULL},
};

static PyType_Slot bound_slots[] = {
    {Py_tp_doc, "A remote method bound to its proxy (the base of RemoteMethod)."},
    {Py_tp_traverse, bound_traverse},
    {Py_tp_clear, bound_clear},
    {Py_tp_dealloc, bound_dealloc},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_getset, bound_getset},
    {Py_tp_members, bound_members},
    {0, NULL},
};

static PyType_Spec bound_spec = {
    .name = "appdomain._native._ext.BoundMethod",
    .basicsize = sizeof(BoundMethod),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = bound_slots,
};

/* ---------------------------------------------------------------------- module */

int
appdomain_method_init(PyObject *module, modstate *st)
{
    st->member_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &member_spec, NULL);
    if (st->member_type == NULL) {
        return -1;
    }
    st->bound_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &bound_spec, NULL);
    if (st->bound_type == NULL) {
        return -1;
    }
    if ((st->str_ref = PyUnicode_InternFromString("_appdomain_ref")) == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "MethodMember", (PyObject *)st->member_type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "BoundMethod", (PyObject *)st->bound_type);
}

int
appdomain_method_traverse(modstate *st, visitproc visit, void *arg)
{
    Py_VISIT(st->member_type);
    Py_VISIT(st->bound_type);
    Py_VISIT(st->slow_call);
    Py_VISIT(st->lean_outcome);
    return 0;
}

void
appdomain_method_clear(modstate *st)
{
    Py_CLEAR(st->member_type);
    Py_CLEAR(st->bound_type);
    Py_CLEAR(st->str_ref);
    Py_CLEAR(st->slow_call);
    Py_CLEAR(st->lean_outcome);
}
