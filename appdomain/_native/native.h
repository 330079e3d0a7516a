/* What the C files of appdomain._native._ext share: the module state and the calls between
 * files.  _native.c and the files behind _native_core.h switch threads between
 * interpreters, method.c binds proxy methods, gilpeek.c reads CPython's GIL flag. */
#ifndef APPDOMAIN_NATIVE_H
#define APPDOMAIN_NATIVE_H

#include <Python.h>

typedef struct {
    PyTypeObject *argbuf_type;
    PyTypeObject *member_type;   /* MethodMember (method.c) */
    PyTypeObject *bound_type;    /* BoundMethod (method.c) */
    PyTypeObject *lock_type;     /* TableLock (lock.c) */
    PyObject *str_release;
    PyObject *str_ref;           /* "_appdomain_ref": where a proxy keeps its RemoteRef */
    PyObject *slow_call;         /* generic route: slow_call(proxy, spec, *args, **kwargs) */
    PyObject *lean_outcome;      /* lean_outcome(proxy, spec, args, reply, error) */
    PyObject *ctxvar;  /* the logical call context's ContextVar (set_context_var), or NULL */
    /* By-reference arguments of a lean invoke (set_reference_hooks): instances of ref_type
     * cross as ref_out(obj, interp_id)'s tuple; ref_done(refs) runs once the call is over. */
    PyObject *ref_type;
    PyObject *ref_out;
    PyObject *ref_done;
    /* Lending (set_reference_hooks' lend): an instance of a type in lean_types crosses as
     * route + (oid,) + (module, qualname) without Python code: its oid is the one
     * by_identity or lent_ids has for it, else a new one from next_oid, and lent[oid] =
     * [obj, calls] finds it while calls lend it. */
    PyObject *lean_types;
    PyObject *by_identity;
    PyObject *lent;
    PyObject *lent_ids;
    PyObject *next_oid;
    PyObject *told;   /* set: (iid << 24 | type token) each target kept the full form of */
    /* set: (caller iid << 32 | type token) of each type lean_ref named in full to a caller */
    PyObject *told_back;
    /* Proxies' lifetimes (set_proxy_hooks): this interpreter's proxies dict, the fast tuple
     * (refs.c make_proxy; its entry type's weak references call proxy_gone), and the
     * Python fallbacks: release(route, oid, count) for an owner the switch does not serve,
     * arm(route) to have an owner woken soon to drain what proxy_gone queued for it. */
    PyObject *proxies;
    PyObject *fast;
    PyObject *release_py;
    PyObject *arm_py;
    /* This interpreter's object table (set_table_hooks): entries {oid: Entry}, the Entry
     * type (slots obj, count, lease, expires), the table's lock, and the types whose
     * objects have no lease; export() and apply_releases() work on them in C. */
    PyObject *entries;
    PyObject *entry_type;
    PyObject *table_lock;
    PyObject *leaseless;
    PyObject *str_obj, *str_count, *str_lease, *str_expires;
    PyObject *forever;
    /* Slot offsets (appdomain_slot_offset; 0: use the attribute) of the table's Entry type
     * (obj, count, lease, expires) and of the proxies' weak entry type (key, cell). */
    Py_ssize_t off_obj, off_count, off_lease, off_expires, off_key, off_cell;
    /* Why a call was refused, as types the caller can tell apart (both RuntimeError's):
     * the target takes no native calls, or it is being destroyed. */
    PyObject *not_served;
    PyObject *closing;
    int exited;   /* this interpreter's exit hook ran: refuse new registrations */
    /* set_lean_counting(True): count the calls bound methods send by the lean route, which
     * bypasses Python (monitoring's calls out read lean_calls()). */
    int lean_counting;
    long long lean_calls;
} modstate;

static inline modstate *
get_state(PyObject *module)
{
    return (modstate *)PyModule_GetState(module);
}

/* A slot of an object of exactly the type its offset was read from: borrowed, NULL when
 * unset.  Reading and writing by offset skips the type's attribute look-up, which costs
 * more than the rest of a table entry's update. */
static inline PyObject *
slot_get(PyObject *obj, Py_ssize_t offset)
{
    return *(PyObject **)((char *)obj + offset);
}

/* Store value (a new reference is taken) in a slot; the old value is released last. */
static inline void
slot_put(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject **slot = (PyObject **)((char *)obj + offset);
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_XDECREF(old);
}

/* A tuple of type tp (a tuple subclass) holding items[0:n], as tuple.__new__(tp, items). */
static inline PyObject *
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

/* entry's slot (offset) or attribute name: a new reference, NULL when it has none (no
 * exception set) or on an error (set). */
static inline PyObject *
entry_get(PyObject *entry, PyTypeObject *tp, Py_ssize_t offset, PyObject *name)
{
    if (offset && Py_TYPE(entry) == tp) {
        return Py_XNewRef(slot_get(entry, offset));
    }
    PyObject *value = NULL;
    (void)PyObject_GetOptionalAttr(entry, name, &value);
    return value;
}

static inline int
entry_put(PyObject *entry, PyTypeObject *tp, Py_ssize_t offset, PyObject *name, PyObject *value)
{
    if (offset && Py_TYPE(entry) == tp) {
        slot_put(entry, offset, value);
        return 0;
    }
    return PyObject_SetAttr(entry, name, value);
}

#if defined(__GNUC__)
#  pragma GCC visibility push(hidden)   /* shared between the files, not exported */
#endif

/* invoke.c: the lean proxy call, invoke(interp_id, oid, name, args); the generic route's
 * call(interp_id, parts); set_reference_hooks(...), which by-reference arguments go lean. */
PyObject *appdomain_invoke(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *appdomain_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *appdomain_set_reference_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* gilpeek.c: whether interp's GIL is held (a hint, read without locking).  GIL_UNKNOWN on
 * a CPython whose GIL layout gilpeek.c does not know, or with the peek turned off. */
enum { GIL_FREE = 0, GIL_HELD = 1, GIL_UNKNOWN = -1 };
int appdomain_gil_state(PyInterpreterState *interp);
/* Turn the peek on or off (tests); returns whether it is now on. */
int appdomain_gil_peek_set(int on);
/* gil_held(interp_id) and gil_holder(interp_id), module functions (unload's diagnosis). */
PyObject *appdomain_gil_held(PyObject *module, PyObject *arg);
PyObject *appdomain_gil_holder(PyObject *module, PyObject *arg);

/* method.c: the method types, made when the module is executed, and the module
 * functions that use them. */
int appdomain_method_init(PyObject *module, modstate *st);
int appdomain_method_traverse(modstate *st, visitproc visit, void *arg);
void appdomain_method_clear(modstate *st);
PyObject *appdomain_method_member(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *appdomain_set_method_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *appdomain_set_lean_counting(PyObject *module, PyObject *on);
PyObject *appdomain_lean_calls(PyObject *module, PyObject *Py_UNUSED(ignored));
/* method.c: the proxy of a reference a lean call through the proxy whose RemoteRef is
 * caller_ref returned (done == 2), made in C; Py_None when Python must make it. */
PyObject *appdomain_adopt_ref(modstate *st, PyObject *caller_ref, PyObject *data);

/* lock.c: the TableLock type, made when the module is executed; taking it (1 taken, 0
 * busy when not blocking, -1 error; blocking waits with the GIL released) and giving it
 * back (-1: it was not held). */
int appdomain_lock_init(PyObject *module, modstate *st);
int appdomain_lock_take(PyObject *lock, int blocking);
int appdomain_lock_give(PyObject *lock);

/* table.c: proxies' releases and the object table (module functions). */
PyObject *appdomain_proxy_gone(PyObject *module, PyObject *entry);
PyObject *appdomain_set_proxy_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *appdomain_set_table_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *appdomain_export(PyObject *module, PyObject *obj);
PyObject *appdomain_lean_ref(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *appdomain_apply_releases(PyObject *module, PyObject *Py_UNUSED(ignored));
PyObject *appdomain_releases_pending(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored));

/* table.c: the offset of tp's writable object slot name (from its __slots__), or 0 when
 * it has none (or on an error, cleared): callers then use the attribute. */
Py_ssize_t appdomain_slot_offset(PyObject *tp, PyObject *name);

/* table.c: queue a release of count references to oid at interpreter iid for it to drain
 * (apply_releases).  1: queued, and the owner must be armed (arm_py); 0: queued; -1: the
 * switch does not serve iid (Python releases it). */
int appdomain_push_release(long long iid, PyObject *oid, PyObject *count);

/* marshal_check.c: the link's frame check, marshal_problem(data, start, containers, nodes). */
PyObject *appdomain_marshal_problem(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* decode_frame(data, magic, version, shapes): a valid frame's (kind, body), else None. */
PyObject *appdomain_decode_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#if defined(__GNUC__)
#  pragma GCC visibility pop
#endif

#endif
