/* Proxies' releases and the object table, in C: a proxy's death queues its release for the
 * owner (proxy_gone), the owner applies what was queued (apply_releases, apply_inline), and
 * exports the objects it hands out by reference (export, lean_ref) under its table lock.
 * Remoting's _proxy and _table hand this file their dicts and types (set_proxy_hooks,
 * set_table_hooks); without the extension they do the same in Python. */
#include "core.h"

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
PyObject *
appdomain_proxy_gone(PyObject *module, PyObject *entry)
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
PyObject *
appdomain_set_proxy_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || args[1] == Py_None || !appdomain_fast_ok(args[1])
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
PyObject *
appdomain_set_table_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
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
PyObject *
appdomain_export(PyObject *module, PyObject *obj)
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
PyObject *
appdomain_lean_ref(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
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
    PyObject *oid = args[3] != Py_None ? Py_NewRef(args[3]) : appdomain_export(module, args[0]);
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
PyObject *
appdomain_apply_releases(PyObject *module, PyObject *Py_UNUSED(ignored))
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
PyObject *
appdomain_releases_pending(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
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

