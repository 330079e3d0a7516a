/* appdomain._native._ext, part 2: the switch.  The caller's thread leaves its interpreter,
 * runs the call in the target on a cached thread state (run_in_target: the dispatcher or
 * the invoker), and comes back with the reply (switch_call). */
#include "core.h"

/* A read-only window on a caller's buffer, valid only during one call.  The callee
 * gets memoryviews of it; exports are counted so that a view kept past the call
 * (a slice, an array over it) is detected: the window cannot be revoked from a raw
 * pointer, so the caller's buffer is then pinned (leaked) and the call fails. */
typedef struct {
    PyObject_HEAD
    const char *buf;
    Py_ssize_t len;
    Py_ssize_t exports;
    int valid;
} ArgBuffer;

static int
argbuf_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    ArgBuffer *self = (ArgBuffer *)op;
    if (!self->valid) {
        PyErr_SetString(PyExc_ValueError, "argument buffer used after its call returned");
        return -1;
    }
    if (PyBuffer_FillInfo(view, op, (void *)self->buf, self->len, 1, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
argbuf_releasebuffer(PyObject *op, Py_buffer *Py_UNUSED(view))
{
    ((ArgBuffer *)op)->exports--;
}

static void
argbuf_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_Free(op);
    Py_DECREF(tp);
}

static PyType_Slot argbuf_slots[] = {
    {Py_tp_dealloc, argbuf_dealloc},
    {Py_bf_getbuffer, argbuf_getbuffer},
    {Py_bf_releasebuffer, argbuf_releasebuffer},
    {0, NULL},
};

PyType_Spec argbuf_spec = {
    .name = "appdomain._native._ext.ArgBuffer",
    .basicsize = sizeof(ArgBuffer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = argbuf_slots,
};


/* ------------------------------------------------------------------ call */

/* Put "TypeName: message" of the current exception (or msg) into the scratch. */
static void
fail_text(threadrec_t *r, callctx *c, const char *msg)
{
    PyObject *text = NULL;
    if (msg == NULL) {
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *name = exc ? PyType_GetName(Py_TYPE(exc)) : NULL;
        PyObject *str = exc ? PyObject_Str(exc) : NULL;
        if (name && str) {
            text = PyUnicode_GET_LENGTH(str)
                ? PyUnicode_FromFormat("%U: %U", name, str)
                : Py_NewRef(name);
        }
        Py_XDECREF(name);
        Py_XDECREF(str);
        Py_XDECREF(exc);
    }
    else {
        text = PyUnicode_FromString(msg);
    }
    Py_ssize_t n = 0;
    const char *s = text ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
    if (s == NULL) {
        s = "dispatcher failed (its exception could not be formatted)";
        n = (Py_ssize_t)strlen(s);
    }
    PyErr_Clear();
    c->out = OUT_ERROR;
    c->len = 0;
    if (scratch_reserve(r, (size_t)n + 1) == 0) {
        memcpy(r->scratch, s, (size_t)n);
        c->len = (size_t)n;
    }
    Py_XDECREF(text);
}

/* Keep a reply for the caller: small ones are copied into the scratch now (so the
 * target's objects die here), large ones are held and copied once from the caller. */
static void
keep_reply(threadrec_t *r, callctx *c, PyObject *blob)
{
    Py_ssize_t len = PyBytes_GET_SIZE(blob);
    if (len > SMALL_RESULT) {
        c->out = OUT_LARGE;
        c->held = Py_NewRef(blob);
    }
    else if (scratch_reserve(r, (size_t)len + 1) == 0) {
        memcpy(r->scratch, PyBytes_AS_STRING(blob), (size_t)len);
        c->len = (size_t)len;
        c->out = OUT_SMALL;
    }
    else {
        fail_text(r, c, "MemoryError: no room for the reply");
    }
}

/* A tuple of type tp (a tuple subclass) holding items[0:n], as tuple.__new__(tp, items). */
static PyObject *
tuple_of(PyTypeObject *tp, PyObject *const *items, Py_ssize_t n)
{
    PyObject *t = tp->tp_alloc(tp, n);
    if (t != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyTuple_SET_ITEM(t, i, Py_NewRef(items[i]));
        }
    }
    return t;
}

/* Make the proxy for object oid on route, of the type names (module, qualname), as
 * remoting's lean_proxy would, in C, and list it in proxies under key, by strong reference
 * while its call runs (settle_refs gives it a weak entry if the call kept it); Py_None when
 * its type is not in classes yet.  fast is (classes, RemoteRef, Route, weakref type with
 * `key` and `cell` slots, its callback, ref attribute name, key slot name, cell attribute
 * name, cell slot name, kept references, returned types); the cell is left for remoting to
 * add when it counts a reference (_proxy._count). */
static PyObject *
make_proxy(PyObject *fast, PyObject *proxies, PyObject *route, PyObject *oid, PyObject *names,
           PyObject *key)
{
    PyObject *classes = PyTuple_GET_ITEM(fast, 0);
    PyTypeObject *ref_type = (PyTypeObject *)PyTuple_GET_ITEM(fast, 1);
    PyObject *str_ref = PyTuple_GET_ITEM(fast, 5);
    PyObject *cls = NULL, *ref = NULL, *proxy = NULL, *result = NULL;
    if (PyDict_GetItemRef(classes, names, &cls) < 0) {
        goto out;
    }
    if (cls == NULL || !PyType_Check(cls)) {
        result = Py_NewRef(Py_None);
        goto out;
    }
    PyObject *parts[4] = {route, oid, PyTuple_GET_ITEM(names, 0), PyTuple_GET_ITEM(names, 1)};
    if ((ref = tuple_of(ref_type, parts, 4)) == NULL) {
        goto out;
    }
    /* object.__new__(cls) with its ref, and its entry in proxies */
    if ((proxy = ((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0)) == NULL
        || PyObject_GenericSetAttr(proxy, str_ref, ref) < 0   /* not the type's __setattr__ */
        || PyDict_SetItem(proxies, key, proxy) < 0) {   /* strong while the call runs */
        goto out;
    }
    result = Py_NewRef(proxy);
out:
    Py_XDECREF(cls);
    Py_XDECREF(ref);
    Py_XDECREF(proxy);
    return result;
}

/* The parts of a lent reference: in full, (*route, oid, module, qualname) and, the first
 * time a type is lent here, its token last (an 8-tuple: kept in fast's kept references
 * under (interp id, token), with its Route and names made once), or the compact (interp
 * id, oid, token) a later call sends, read from what was kept.  New references in *route
 * (a Route), *oid and *names ((module, qualname)); -1 with an exception. */
static int
ref_parts(PyObject *fast, PyObject *item, PyObject **route, PyObject **oid, PyObject **names)
{
    Py_ssize_t n = PyTuple_GET_SIZE(item);
    PyObject *kept = PyTuple_GET_ITEM(fast, 9), *key = NULL, *held = NULL;
    *route = *names = NULL;
    *oid = Py_NewRef(PyTuple_GET_ITEM(item, n == 3 ? 1 : 4));
    if (n != 7 && (key = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 0),
                                      PyTuple_GET_ITEM(item, n == 3 ? 2 : 7))) == NULL) {
        goto error;
    }
    if (n == 3) {
        if (PyDict_GetItemRef(kept, key, &held) == 0) {
            PyErr_Format(PyExc_RuntimeError, "a compact reference %R names a type this "
                         "interpreter was never sent", item);
        }
        if (held == NULL) {
            goto error;
        }
        *route = Py_NewRef(PyTuple_GET_ITEM(held, 0));
        *names = Py_NewRef(PyTuple_GET_ITEM(held, 1));
        Py_DECREF(held);
        Py_DECREF(key);
        return 0;
    }
    PyTypeObject *route_type = (PyTypeObject *)PyTuple_GET_ITEM(fast, 2);
    if ((*route = tuple_of(route_type, &PyTuple_GET_ITEM(item, 0), 4)) == NULL
        || (*names = PyTuple_GetSlice(item, 5, 7)) == NULL
        || (n == 8 && ((held = PyTuple_Pack(2, *route, *names)) == NULL
                       || PyDict_SetItem(kept, key, held) < 0))) {
        goto error;
    }
    Py_XDECREF(held);
    Py_XDECREF(key);
    return 0;
error:
    Py_XDECREF(held);
    Py_XDECREF(key);
    Py_CLEAR(*route);
    Py_CLEAR(*oid);
    Py_CLEAR(*names);
    return -1;
}

/* The 7-tuple (*route, oid, module, qualname) remoting's lean_proxy takes. */
static PyObject *
ref_tuple(PyObject *route, PyObject *oid, PyObject *names)
{
    PyObject *out = PyTuple_New(7);
    if (out != NULL) {
        for (Py_ssize_t i = 0; i < 4; i++) {
            PyTuple_SET_ITEM(out, i, Py_NewRef(PyTuple_GET_ITEM(route, i)));
        }
        PyTuple_SET_ITEM(out, 4, Py_NewRef(oid));
        PyTuple_SET_ITEM(out, 5, Py_NewRef(PyTuple_GET_ITEM(names, 0)));
        PyTuple_SET_ITEM(out, 6, Py_NewRef(PyTuple_GET_ITEM(names, 1)));
    }
    return out;
}

/* Turn the references among a lean invoke's arguments (the tuples ref_out made in the
 * caller) into objects of this interpreter, in place: (oid,) is an object of ours coming
 * home, the others (ref_parts) proxies, found in proxies or made new (then listed in
 * made).  refs is the (proxies, make, settle, home, fast) the invoker registered with. */
static int
take_refs(PyObject *refs, PyObject *args, PyObject *made)
{
    PyObject *proxies = PyTuple_GET_ITEM(refs, 0), *make = PyTuple_GET_ITEM(refs, 1);
    PyObject *home = PyTuple_GET_ITEM(refs, 3), *fast = PyTuple_GET_ITEM(refs, 4);
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(args, i), *obj = NULL;
        if (!PyTuple_CheckExact(item)) {
            continue;
        }
        Py_ssize_t size = PyTuple_GET_SIZE(item);
        if (size == 1) {
            obj = PyObject_CallOneArg(home, PyTuple_GET_ITEM(item, 0));
        }
        else if (size == 7 && fast == Py_None) {
            /* No C proxies here: Python finds or makes it. */
            PyObject *key = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 4));
            PyObject *wr = NULL;
            if (key != NULL && PyDict_GetItemRef(proxies, key, &wr) >= 0) {
                if (wr != NULL && PyWeakref_Check(wr)) {
                    (void)PyWeakref_GetRef(wr, &obj);
                    Py_DECREF(wr);
                }
                else {
                    obj = wr;   /* another lean call's, listed strongly while it runs */
                }
                if (obj == NULL && !PyErr_Occurred()
                    && (obj = PyObject_CallOneArg(make, item)) != NULL
                    && (PyList_Append(made, key) < 0 || PyList_Append(made, obj) < 0)) {
                    Py_CLEAR(obj);
                }
            }
            Py_XDECREF(key);
        }
        else if ((size == 3 || size == 8) && fast == Py_None) {
            PyErr_SetString(PyExc_TypeError, "the target interpreter takes no compact references");
        }
        else if (size == 3 || size == 7 || size == 8) {
            PyObject *route, *oid, *names;
            if (ref_parts(fast, item, &route, &oid, &names) < 0) {
                return -1;
            }
            PyObject *key = PyTuple_Pack(2, PyTuple_GET_ITEM(route, 0), oid), *wr = NULL;
            if (key == NULL || PyDict_GetItemRef(proxies, key, &wr) < 0) {
                goto done;
            }
            if (wr != NULL && !PyWeakref_Check(wr)) {
                obj = wr;   /* another lean call's proxy, listed strongly while it runs */
            }
            else if (wr != NULL) {
                int got = PyWeakref_GetRef(wr, &obj);
                Py_DECREF(wr);
                if (got < 0) {
                    goto done;
                }
            }
            int new = 0;
            if (obj == NULL) {
                obj = make_proxy(fast, proxies, route, oid, names, key);
                if (obj == Py_None) {   /* its type is not known here yet: make() builds it */
                    Py_CLEAR(obj);
                    PyObject *full = ref_tuple(route, oid, names);
                    obj = full == NULL ? NULL : PyObject_CallOneArg(make, full);
                    Py_XDECREF(full);
                }
                new = 1;
            }
            if (obj != NULL && new
                && (PyList_Append(made, key) < 0 || PyList_Append(made, obj) < 0)) {
                Py_CLEAR(obj);
            }
        done:
            Py_XDECREF(key);
            Py_DECREF(route);
            Py_DECREF(oid);
            Py_DECREF(names);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "a reference must be a tuple of 1, 3, 7 or 8 items (got %R)", item);
        }
        if (obj == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "a reference could not be made here");
            }
            return -1;
        }
        Py_SETREF(((PyTupleObject *)args)->ob_item[i], obj);
    }
    return 0;
}

/* Give a proxy listed in proxies by strong reference (make_proxy's, while its call runs)
 * its lasting entry: a weak reference that knows its key (fast's entry type). */
static int
weaken_entry(PyObject *fast, PyObject *proxies, PyObject *key, PyObject *proxy)
{
    PyObject *entry = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(fast, 3), proxy,
                                                   PyTuple_GET_ITEM(fast, 4), NULL);
    int rc = entry == NULL || PyObject_SetAttr(entry, PyTuple_GET_ITEM(fast, 6), key) < 0
             || PyObject_SetAttr(entry, PyTuple_GET_ITEM(fast, 8), Py_None) < 0
             || PyDict_SetItem(proxies, key, entry) < 0 ? -1 : 0;
    Py_XDECREF(entry);
    return rc;
}

/* After a lean invoke: forget the new proxies nothing kept (they die now, with no count to
 * give back) and hand the others to settle, which counts them at their owners.  made is
 * [key, proxy, ...]; a proxy make_proxy listed in proxies by strong reference is held by
 * made and that entry, one that lean_proxy listed by weak reference by made only. */
static int
settle_refs(PyObject *refs, PyObject *made)
{
    PyObject *proxies = PyTuple_GET_ITEM(refs, 0), *settle = PyTuple_GET_ITEM(refs, 2);
    PyObject *fast = PyTuple_GET_ITEM(refs, 4), *kept = NULL;
    Py_ssize_t n = PyList_GET_SIZE(made);
    int rc = 0;
    for (Py_ssize_t i = 0; i + 1 < n && rc == 0; i += 2) {
        PyObject *key = PyList_GET_ITEM(made, i), *proxy = PyList_GET_ITEM(made, i + 1);
        PyObject *entry = NULL, *target = NULL;
        if (PyDict_GetItemRef(proxies, key, &entry) < 0) {
            rc = -1;
            break;
        }
        int strong = entry == proxy;
        if (entry != NULL && !strong && PyWeakref_Check(entry)
            && PyWeakref_GetRef(entry, &target) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(target);
        Py_XDECREF(entry);   /* the references counted below exclude this one */
        if (Py_REFCNT(proxy) > 1 + strong) {   /* kept by the call */
            if (strong && fast != Py_None && weaken_entry(fast, proxies, key, proxy) < 0) {
                rc = -1;
            }
            else if ((kept == NULL && (kept = PyList_New(0)) == NULL)
                     || PyList_Append(kept, proxy) < 0) {
                rc = -1;
            }
        }
        else if (strong && PyDict_DelItem(proxies, key) < 0) {
            /* A weak entry (lean_proxy's) stays: its callback forgets it, and releases
             * what another thread's generic call may have counted on it meanwhile. */
            rc = -1;
        }
    }
    if (kept != NULL && rc == 0) {
        PyObject *ok = PyObject_CallOneArg(settle, kept);
        rc = ok == NULL ? -1 : 0;
        Py_XDECREF(ok);
    }
    Py_XDECREF(kept);
    return rc;
}

/* The target side of a lean invoke: fn(oid, name, args), its reply marshalled.  One C
 * round trip instead of a Python dispatcher that unpacks and repacks the message. */
static void
run_invoke(threadrec_t *r, callctx *c, PyObject *fn, PyObject *refs)
{
    if (fn == Py_None) {
        fail_text(r, c, "no dispatcher for invokes in the target interpreter");
        c->not_served = 1;
        return;
    }
    PyObject *argv[3] = {NULL, NULL, NULL};
    PyObject *res = NULL, *blob = NULL;
    argv[0] = PyLong_FromLongLong(c->oid);
    argv[1] = PyUnicode_FromStringAndSize(c->name, c->name_len);
    argv[2] = PyMarshal_ReadObjectFromString(c->payload, c->payload_len);
    int ok = argv[0] && argv[1] && argv[2] && PyTuple_CheckExact(argv[2]);
    for (int i = 0; ok && i < c->nbig; i++) {
        /* The one copy of a large argument: from the caller's bytes into ours. */
        PyObject *b = PyBytes_FromStringAndSize(c->big_buf[i], c->big_len[i]);
        ok = b != NULL && PyTuple_SetItem(argv[2], c->big_index[i], b) == 0;
    }
    PyObject *made = NULL;
    if (ok && c->has_refs) {
        if (refs == Py_None) {
            PyErr_SetString(PyExc_TypeError, "the target interpreter takes no references");
            ok = 0;
        }
        else {
            ok = (made = PyList_New(0)) != NULL && take_refs(refs, argv[2], made) == 0;
        }
    }
    if (ok) {
        res = PyObject_Vectorcall(fn, argv, 3, NULL);
    }
    if (made != NULL) {
        /* The call's own references go first: what still holds a new proxy kept it. */
        Py_CLEAR(argv[2]);
        PyObject *saved = PyErr_GetRaisedException();
        if (settle_refs(refs, made) < 0) {
            Py_CLEAR(res);   /* a kept proxy could not be counted: the call fails */
            Py_XDECREF(saved);
        }
        else {
            PyErr_SetRaisedException(saved);
        }
        Py_DECREF(made);
    }
    if (res != NULL && PyTuple_CheckExact(res) && PyTuple_GET_SIZE(res) == 3
        && PyTuple_GET_ITEM(res, 0) == Py_True && PyTuple_GET_ITEM(res, 2) == Py_None
        && PyBytes_CheckExact(PyTuple_GET_ITEM(res, 1))
        && PyBytes_GET_SIZE(PyTuple_GET_ITEM(res, 1)) > SMALL_RESULT) {
        /* A large bytes result: held here, copied once into the caller's bytes. */
        c->out = OUT_LARGE;
        c->held = Py_NewRef(PyTuple_GET_ITEM(res, 1));
        c->held_value = 1;
    }
    else if (res != NULL) {
        blob = PyMarshal_WriteObjectToString(res, LEAN_MARSHAL_VERSION);
        if (blob != NULL) {
            keep_reply(r, c, blob);
        }
        else {
            fail_text(r, c, NULL);
        }
    }
    else {
        fail_text(r, c, NULL);
    }
    Py_XDECREF(argv[0]);
    Py_XDECREF(argv[1]);
    Py_XDECREF(argv[2]);
    Py_XDECREF(res);
    Py_XDECREF(blob);
}

/* The target side of a call: runs attached to the target interpreter. */
static void
run_in_target(threadrec_t *r, domain_t *d, callctx *c)
{
    ArgBuffer *abs_stack[NPARTS_STACK];
    PyObject *mvs_stack[NPARTS_STACK];
    ArgBuffer **abs = abs_stack;
    PyObject **mvs = mvs_stack;
    PyObject *args = NULL, *res = NULL;
    Py_ssize_t made = 0, n = c->n;

    /* d->fn, (dispatcher, invoker, refs), is read under the target's GIL:
     * register/unregister run there too. */
    PyObject *pair = Py_XNewRef(d->fn);
    if (pair == NULL) {
        fail_text(r, c, "no dispatcher registered in the target interpreter");
        c->not_served = 1;
        return;
    }
    if (c->kind == KIND_INVOKE) {
        appdomain_apply_inline(d);
        run_invoke(r, c, PyTuple_GET_ITEM(pair, 1), PyTuple_GET_ITEM(pair, 2));
        Py_DECREF(pair);
        return;
    }
    PyObject *fn = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
    Py_DECREF(pair);
    if (n > NPARTS_STACK) {
        abs = PyMem_Malloc(n * sizeof(*abs));
        mvs = PyMem_Malloc(n * sizeof(*mvs));
        if (abs == NULL || mvs == NULL) {
            PyErr_NoMemory();
            goto error;
        }
    }
    args = PyTuple_New(n);
    if (args == NULL) {
        goto error;
    }
    for (; made < n; made++) {
        ArgBuffer *ab = PyObject_New(ArgBuffer, d->argbuf_type);
        if (ab == NULL) {
            goto error;
        }
        ab->buf = c->bufs[made].buf;
        ab->len = c->bufs[made].len;
        ab->exports = 0;
        ab->valid = 1;
        PyObject *mv = PyMemoryView_FromObject((PyObject *)ab);
        if (mv == NULL) {
            Py_DECREF(ab);
            goto error;
        }
        abs[made] = ab;
        mvs[made] = mv;
        PyTuple_SET_ITEM(args, made, Py_NewRef(mv));
    }

    res = PyObject_CallOneArg(fn, args);

    /* Take the reply first: it may be a view of an argument (an echo), which must be
     * read before the arguments are revoked. */
    const char *errmsg = NULL;
    char errbuf[160];
    if (res != NULL) {
        if (PyBytes_CheckExact(res) && PyBytes_GET_SIZE(res) > SMALL_RESULT) {
            /* Large bytes: immutable and ours while we hold it, so the caller can copy
             * it once, straight into its own bytes object. */
            c->out = OUT_LARGE;
            c->held = res;
            res = NULL;
        }
        else if (PyObject_GetBuffer(res, &c->hv, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            PyOS_snprintf(errbuf, sizeof(errbuf),
                          "TypeError: dispatcher must return bytes, not %.100s",
                          Py_TYPE(res)->tp_name);
            errmsg = errbuf;
        }
        else {
            /* Small (or not bytes): copy it out now so the target's objects die here. */
            if (scratch_reserve(r, (size_t)c->hv.len + 1) == 0) {
                memcpy(r->scratch, c->hv.buf, (size_t)c->hv.len);
                c->len = (size_t)c->hv.len;
                c->out = OUT_SMALL;
            }
            else {
                errmsg = "MemoryError: no room for the reply";
            }
            PyBuffer_Release(&c->hv);
        }
        Py_CLEAR(res);
    }

    /* Revoke the views before anything else can run in this interpreter. */
    Py_CLEAR(args);
    PyObject *saved = PyErr_GetRaisedException();
    int kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (Py_REFCNT(mvs[i]) > 1) {   /* the callee holds it: release it under them */
            PyObject *ok = PyObject_CallMethodNoArgs(mvs[i], d->str_release);
            if (ok == NULL) {
                PyErr_Clear();         /* BufferError: it was exported further */
            }
            Py_XDECREF(ok);
        }
        Py_DECREF(mvs[i]);
        abs[i]->valid = 0;
        if (abs[i]->exports > 0) {
            c->retained[i] = 1;
            kept = 1;
        }
        Py_DECREF(abs[i]);
    }
    made = 0;
    PyErr_SetRaisedException(saved);

    if (PyErr_Occurred()) {
        goto error;
    }
    if (kept) {
        Py_CLEAR(c->held);
        fail_text(r, c, "BufferError: the dispatcher kept a view of an argument after "
                        "returning (the argument was pinned)");
    }
    else if (errmsg) {
        fail_text(r, c, errmsg);
    }
    goto done;

error:
    fail_text(r, c, NULL);
done:
    for (Py_ssize_t i = 0; i < made; i++) {
        abs[i]->valid = 0;
        Py_DECREF(mvs[i]);
        Py_DECREF(abs[i]);
    }
    Py_XDECREF(args);
    Py_XDECREF(res);
    Py_DECREF(fn);
    if (abs != abs_stack) {
        PyMem_Free(abs);
    }
    if (mvs != mvs_stack) {
        PyMem_Free(mvs);
    }
}

/* Explain why a call could not be admitted (G.mutex not held). */
PyObject *
refuse(modstate *st, int64_t id, int why)
{
    if (why == 1) {
        PyErr_Format(st->closing, "interpreter %lld is being destroyed", (long long)id);
        return NULL;
    }
    /* No record: either no such interpreter or no dispatcher.  Ask _interpreters, whose
     * lookup holds the runtime's interpreter-list lock; walking PyInterpreterState_Head()
     * / _Next() ourselves would race with a concurrent destroy (there is no public way to
     * take that lock), and this is only the error path. */
    int exists = 1;
    PyObject *mod = PyImport_ImportModule("_interpreters");
    if (mod) {
        PyObject *r = PyObject_CallMethod(mod, "is_running", "L", (long long)id);
        if (r == NULL) {
            exists = 0;
            PyErr_Clear();
        }
        Py_XDECREF(r);
        Py_DECREF(mod);
    }
    else {
        PyErr_Clear();
    }
    if (!exists) {
        PyErr_Format(PyExc_LookupError, "no interpreter with id %lld", (long long)id);
    }
    else {
        PyErr_Format(st->not_served,
                     "interpreter %lld has no dispatcher registered", (long long)id);
    }
    return NULL;
}

/* Build the caller's result from the reply bytes: bytes for a call, the unmarshalled
 * value for an invoke. */
static PyObject *
make_result(callctx *c, const char *buf, Py_ssize_t len)
{
    if (c->kind == KIND_INVOKE && c->held_value) {
        PyObject *value = PyBytes_FromStringAndSize(buf, len);
        if (value == NULL) {
            return NULL;
        }
        PyObject *reply = PyTuple_Pack(3, Py_True, value, Py_None);
        Py_DECREF(value);
        return reply;
    }
    if (c->kind == KIND_INVOKE) {
        return PyMarshal_ReadObjectFromString(buf, len);
    }
    return PyBytes_FromStringAndSize(buf, len);
}

/* Hand the caller a large bytes reply made in the target, without copying it.
 *
 * Safe for exact bytes only, and only once the target holds no reference to it: a bytes
 * object is not tracked by the garbage collector, its type is static (shared by every
 * interpreter), and a block this large is not in any interpreter's small-object arenas but
 * in the process's malloc heap, which PyObject_Free in the caller returns it to.  So from
 * here on it is an object of the caller like any other. */
static PyObject *
adopt_result(callctx *c, PyObject *value)
{
    if (c->kind == KIND_INVOKE && c->held_value) {
        PyObject *reply = PyTuple_Pack(3, Py_True, value, Py_None);
        Py_DECREF(value);
        return reply;
    }
    if (c->kind == KIND_INVOKE) {
        PyObject *reply = PyMarshal_ReadObjectFromString(PyBytes_AS_STRING(value),
                                                         PyBytes_GET_SIZE(value));
        Py_DECREF(value);
        return reply;
    }
    return value;
}

/* Give a GIL another thread holds a moment before taking it (no GIL held here).  Blocking
 * on a taken GIL puts the thread to sleep, and waking it costs tens of µs: with several
 * threads calling one domain, every call would pay that on the way in and on the way back,
 * and the calls last a few µs.  So look again for a while, yielding the CPU, then take the
 * GIL anyway.  Once the process exits (G.shutdown) no look is taken: an interpreter may then
 * be freed under a thread that comes back to it late (finalize_subinterpreters), and only
 * taking its GIL ends such a thread without reading its memory. */
static inline int
held(PyInterpreterState *interp)
{
    return !__atomic_load_n(&G.shutdown, __ATOMIC_ACQUIRE)
           && appdomain_gil_state(interp) == GIL_HELD;
}

static void
wait_for_gil(PyInterpreterState *interp)
{
    if (!held(interp)) {
        return;   /* free, or not known: take it the usual way */
    }
    /* The holder usually lets go within a µs or two (a call's Python part): look without
     * a system call first. */
    for (int i = 0; i < SPIN_LOOKS; i++) {
        spin_hint();
        if (!held(interp)) {
            return;
        }
    }
    PyTime_t start, now;
    if (PyTime_MonotonicRaw(&start) < 0) {
        return;
    }
    do {
        yield_cpu();
        if (PyTime_MonotonicRaw(&now) < 0) {
            return;
        }
    } while (held(interp) && now - start < BUSY_WAIT_NS);
}

/* Switch the calling thread into interpreter iid, run the call described by c there,
 * and come back: admission, the switch, and leaving, shared by call() and invoke(). */
PyObject *
switch_call(threadrec_t *r, long long iid, callctx *c)
{
    PyObject *result = NULL;
    PyThreadState *caller = PyThreadState_Get();
    PyInterpreterState *caller_interp = PyThreadState_GetInterpreter(caller);
    int64_t caller_id = PyInterpreterState_GetID(caller_interp);
    slot_t *caller_slot = NULL;
    if (r->depth && r->frames[r->depth - 1].ts == caller) {
        caller_slot = r->frames[r->depth - 1].slot;
    }

    /* ---- admission (G.mutex) ---- */
    PyThreadState *ts = NULL;
    slot_t *slot = NULL, *reap = NULL;
    int why = 0;
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(iid);
    if (d == NULL || d->fn == NULL) {
        why = 2;
    }
    else if (d->closing) {
        why = 1;
    }
    else if (iid == caller_id) {
        ts = caller;                 /* already there: no switch */
        slot = caller_slot;
    }
    else {
        /* A nested call back into an interpreter this thread already sits in reuses
         * that suspended thread state: thread-locals, recursion limits and the handled
         * exception carry on as in an ordinary nested call. */
        for (int i = r->depth - 1; i >= 0; i--) {
            if (r->frames[i].caller_id == iid) {
                ts = r->frames[i].caller;
                slot = r->frames[i].caller_slot;
                break;
            }
        }
        if (ts == NULL) {
            for (slot_t *s = r->slots; s; s = s->tnext) {
                if (s->d == d) {
                    slot = s;
                    ts = s->ts;
                    break;
                }
            }
        }
        if (ts == NULL && (slot = calloc(1, sizeof(*slot))) == NULL) {
            why = 3;
        }
        else if (ts == NULL) {
            /* PyThreadState_New needs no GIL; it binds the state to this OS thread.
             * After the main interpreter's exit hook (G.shutdown) the slot is still
             * listed, so exit hooks can see it, but it is deleted when the call ends. */
            ts = PyThreadState_New(d->interp);
            if (ts == NULL) {
                free(slot);
                slot = NULL;
                why = 3;
            }
            else {
                slot->ts = ts;
                slot->d = d;
                slot->owner = r;
                slot->dnext = d->slots;
                d->slots = slot;
                slot->tnext = r->slots;
                r->slots = slot;
            }
        }
    }
    if (why == 0) {
        if (slot) {
            slot->uses++;
        }
        d->active++;
        if (d->norphans) {
            reap = take_idle_slots(d, 1);
        }
        r->frames[r->depth++] = (frame_t){d, slot, ts, caller, caller_id, caller_slot};
    }
    PyMutex_Unlock(&G.mutex);
    if (why == 3) {
        return PyErr_NoMemory();
    }
    if (why) {
        return refuse(c->st, iid, why);
    }

    /* ---- the switch ---- */
    int same = (ts == caller);
    if (!same) {
        PyEval_SaveThread();
        wait_for_gil(d->interp);
        PyEval_RestoreThread(ts);
    }
    delete_slots_attached(reap, 0);   /* orphans of dead threads, while we are here */
    run_in_target(r, d, c);
    PyObject *adopted = NULL;
    if (c->out == OUT_LARGE && !same && Py_REFCNT(c->held) == 1) {
        /* Nothing in the target refers to the reply any more: the caller takes the object
         * itself instead of a copy (see adopt_ok).  A copy would need a second large block
         * while the first is alive, and freeing both leaves the heap's top to be trimmed:
         * every call would then pay a page fault per 4 KiB of the next one. */
        adopted = c->held;
        c->held = NULL;
    }
    else if (c->out == OUT_LARGE) {
        const char *buf = PyBytes_AS_STRING(c->held);
        Py_ssize_t len = PyBytes_GET_SIZE(c->held);
        if (same) {
            result = make_result(c, buf, len);
        }
        else {
            /* One copy, from the target's reply into a bytes of the caller; the reply
             * is immutable and kept alive by our reference, then dropped in the target. */
            PyEval_SaveThread();
            PyEval_RestoreThread(caller);
            result = make_result(c, buf, len);
            PyEval_SaveThread();
            PyEval_RestoreThread(ts);
        }
        Py_CLEAR(c->held);
    }

    /* ---- leave: drop our pin while still attached to the target ---- */
    int drop_ts = 0;
    if (!same) {
    }
    PyMutex_Lock(&G.mutex);
    r->depth--;
    if (slot) {
        slot->uses--;
        if (G.shutdown && slot->uses == 0 && slot->owner == r) {
            /* Exiting: caching is off, so this slot goes now. */
            slot_t **p;
            for (p = &d->slots; *p && *p != slot; p = &(*p)->dnext) {}
            if (*p) {
                *p = slot->dnext;
            }
            unlink_from_thread(slot);
            free(slot);
            drop_ts = 1;
        }
    }
    d->active--;
    wake_waiters(d);
    int exiting = G.shutdown;
    PyMutex_Unlock(&G.mutex);
    if (!same) {
        if (drop_ts) {
            PyThreadState_Clear(ts);
            PyThreadState_DeleteCurrent();
        }
        else {
            PyEval_SaveThread();
        }
        /* At process exit the caller's thread state may have been deleted meanwhile (the
         * exit hook zaps the states of calls stuck in an interpreter being finalized, and
         * this thread's caller was one while it was away): nothing may read it, or its
         * interpreter, before taking its GIL, where CPython ends a thread that comes back
         * too late without reading its state. */
        if (!exiting) {
            wait_for_gil(caller_interp);
        }
        PyEval_RestoreThread(caller);
    }

    /* ---- back in the caller ---- */
    if (adopted != NULL) {
        result = adopt_result(c, adopted);
    }
    else if (c->out == OUT_SMALL) {
        result = make_result(c, r->scratch, (Py_ssize_t)c->len);
    }
    else if (c->out == OUT_ERROR) {
        Py_CLEAR(result);
        PyObject *msg = PyUnicode_DecodeUTF8(r->scratch, (Py_ssize_t)c->len, "replace");
        if (msg) {
            PyErr_SetObject(c->not_served ? c->st->not_served : PyExc_RuntimeError, msg);
            Py_DECREF(msg);
        }
    }

    if (r->scratch_cap > 4 * SMALL_RESULT) {
        free(r->scratch);     /* an outsized reply went through it: do not keep that */
        r->scratch = NULL;
        r->scratch_cap = 0;
    }

    return result;
}

/* The calling thread's record, with room for one more frame; NULL with an exception. */
threadrec_t *
caller_record(void)
{
    threadrec_t *r = threadrec_get();
    if (r == NULL) {
        return NULL;
    }
    if (r->depth >= MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "too many nested cross-interpreter calls");
        return NULL;
    }
    if (r->depth == r->cap) {
        int cap = r->cap ? r->cap * 2 : 4;
        frame_t *f = realloc(r->frames, (size_t)cap * sizeof(*f));
        if (f == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        r->frames = f;
        r->cap = cap;
    }
    return r;
}
