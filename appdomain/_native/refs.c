/* By-reference arguments arriving in a lean invoke's target, in C: each reference the caller
 * lent becomes an object of this interpreter before the call (appdomain_take_refs: one of
 * ours coming home, or a proxy, found or made as remoting's lean_proxy would), and after it
 * the proxies the call made are forgotten or counted at their owners (appdomain_settle_refs). */
#include "core.h"

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
int
appdomain_take_refs(PyObject *refs, PyObject *args, PyObject *made)
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
int
appdomain_settle_refs(PyObject *refs, PyObject *made)
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

