/* appdomain._native._ext, part 2: the switch.  The caller's thread leaves its interpreter,
 * runs the call in the target on a cached thread state (run_in_target: the dispatcher or
 * the invoker), and comes back with the reply (switch_call).  A lean invoke's by-reference
 * arguments are made objects of the target in refs.c. */
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
            ok = (made = PyList_New(0)) != NULL && appdomain_take_refs(refs, argv[2], made) == 0;
        }
    }
    if (ok) {
        res = PyObject_Vectorcall(fn, argv, 3, NULL);
    }
    if (made != NULL) {
        /* The call's own references go first: what still holds a new proxy kept it. */
        Py_CLEAR(argv[2]);
        PyObject *saved = PyErr_GetRaisedException();
        if (appdomain_settle_refs(refs, made) < 0) {
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
