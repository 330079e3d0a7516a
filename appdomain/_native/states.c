/* appdomain._native._ext, part 1: the records of interpreters, cached thread states and
 * threads, and their release (release_interp, release_thread, the exit hooks).  The
 * lifecycle rules are at the top of module.c. */
#include "core.h"

struct native_globals G;

/* ------------------------------------------------------------------ records */

domain_t *
find_domain(int64_t id)
{
    for (domain_t *d = G.domains; d; d = d->next) {
        if (d->id == id) {
            return d;
        }
    }
    return NULL;
}

static void
unlink_domain(domain_t *d)
{
    for (domain_t **p = &G.domains; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            return;
        }
    }
}

void
unlink_from_thread(slot_t *s)
{
    if (s->owner == NULL) {
        return;
    }
    for (slot_t **p = &s->owner->slots; *p; p = &(*p)->tnext) {
        if (*p == s) {
            *p = s->tnext;
            break;
        }
    }
    s->owner = NULL;
}

/* Take the domain's slots that no call is using (only orphans if orphans_only) out of
 * both lists; return them chained through dnext, for deletion outside G.mutex. */
slot_t *
take_idle_slots(domain_t *d, int orphans_only)
{
    slot_t *taken = NULL;
    slot_t **p = &d->slots;
    while (*p) {
        slot_t *s = *p;
        if (s->uses == 0 && (!orphans_only || s->owner == NULL)) {
            *p = s->dnext;
            if (s->owner == NULL) {
                d->norphans--;
            }
            unlink_from_thread(s);
            s->dnext = taken;
            taken = s;
        }
        else {
            p = &s->dnext;
        }
    }
    return taken;
}

void
wake_waiters(domain_t *d)
{
    if (d->closing && G.nwaiters > 0) {
        PyThread_release_lock(G.wake);
    }
}

static void
threadrec_free(void *p)
{
    /* TSS destructor: the owning OS thread is exiting, with no thread state.  Calls it
     * left in flight were cut short (only at interpreter shutdown); drop their pins.
     * Its slots become orphans: deleting them needs their interpreter's GIL. */
    threadrec_t *r = (threadrec_t *)p;
    if (r == NULL) {
        return;
    }
    PyMutex_Lock(&G.mutex);
    for (int i = r->depth - 1; i >= 0; i--) {
        frame_t *f = &r->frames[i];
        if (f->slot) {
            f->slot->uses--;
        }
        f->d->active--;
        wake_waiters(f->d);
    }
    for (slot_t *s = r->slots; s; s = s->tnext) {
        s->owner = NULL;
        s->uses = 0;
        s->d->norphans++;
    }
    PyMutex_Unlock(&G.mutex);
    free(r->frames);
    free(r->scratch);
    free(r);
}

#ifdef _WIN32
static void WINAPI threadrec_free_fls(PVOID p) { threadrec_free(p); }
#  define TSS_GET() ((threadrec_t *)FlsGetValue(G.key))
#  define TSS_SET(v) (FlsSetValue(G.key, (v)) ? 0 : -1)
#else
#  define TSS_GET() ((threadrec_t *)pthread_getspecific(G.key))
#  define TSS_SET(v) pthread_setspecific(G.key, (v))

static void
after_fork_child(void)
{
    /* Only the forking thread survives and CPython deletes every subinterpreter in
     * the child: forget (leak) everything rather than touch it. */
    memset(&G.mutex, 0, sizeof(G.mutex));
    G.domains = NULL;
    G.nwaiters = 0;
    G.wake = NULL;  /* reallocated by the next module exec or drain */
    pthread_setspecific(G.key, NULL);
}
#endif

/* Process-wide setup, once, from the first module exec. */
int
globals_init(void)
{
    int err = 0;
    PyMutex_Lock(&G.mutex);
    if (!G.ready) {
#ifdef _WIN32
        G.key = FlsAlloc(threadrec_free_fls);
        err = (G.key == FLS_OUT_OF_INDEXES);
#else
        err = pthread_key_create(&G.key, threadrec_free) != 0;
        if (!err) {
            pthread_atfork(NULL, NULL, after_fork_child);
        }
#endif
        G.ready = !err;
    }
    if (!err && G.wake == NULL) {
        G.wake = PyThread_allocate_lock();
        if (G.wake == NULL) {
            err = 1;
        }
        else {
            PyThread_acquire_lock(G.wake, WAIT_LOCK);
        }
    }
    PyMutex_Unlock(&G.mutex);
    if (err) {
        PyErr_SetString(PyExc_RuntimeError, "appdomain._native._ext: cannot allocate thread storage");
        return -1;
    }
    return 0;
}

threadrec_t *
threadrec_get(void)
{
    threadrec_t *r = TSS_GET();
    if (r) {
        return r;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL || TSS_SET(r) != 0) {
        free(r);
        PyErr_NoMemory();
        return NULL;
    }
    return r;
}

int
scratch_reserve(threadrec_t *r, size_t n)
{
    if (n <= r->scratch_cap) {
        return 0;
    }
    size_t cap = r->scratch_cap ? r->scratch_cap : 256;
    while (cap < n) {
        cap *= 2;
    }
    char *p = realloc(r->scratch, cap);
    if (p == NULL) {
        return -1;
    }
    r->scratch = p;
    r->scratch_cap = cap;
    return 0;
}

/* Wait, with the GIL released, until no call but the caller's own (own) is in flight
 * in domain `id`.  G.mutex is held on entry and on return; the record may vanish
 * meanwhile, so it is looked up again each round.  Returns the record (or NULL if
 * it went away), or sets *timed_out. */
static domain_t *
drain_locked(int64_t id, Py_ssize_t own, long long timeout_us, int *timed_out)
{
    PyTime_t deadline = 0, now;
    *timed_out = 0;
    if (timeout_us >= 0) {
        (void)PyTime_MonotonicRaw(&now);
        deadline = now + timeout_us * 1000;
    }
    for (;;) {
        domain_t *d = find_domain(id);
        if (d == NULL || d->active <= own) {
            return d;
        }
        if (timeout_us >= 0) {
            (void)PyTime_MonotonicRaw(&now);
            if (now >= deadline) {
                *timed_out = 1;
                return d;
            }
        }
        if (G.wake == NULL) {  /* after fork */
            G.wake = PyThread_allocate_lock();
            if (G.wake) {
                PyThread_acquire_lock(G.wake, WAIT_LOCK);
            }
        }
        PyThread_type_lock wake = G.wake;
        G.nwaiters++;
        PyMutex_Unlock(&G.mutex);
        Py_BEGIN_ALLOW_THREADS
        /* Woken when a closing domain's count drops; the 20 ms cap is only a backstop
         * for a wake-up consumed by another waiter. */
        if (wake) {
            PyThread_acquire_lock_timed(wake, 20000, 0);
        }
        Py_END_ALLOW_THREADS
        PyMutex_Lock(&G.mutex);
        G.nwaiters--;
    }
}

static Py_ssize_t
own_frames(threadrec_t *r, domain_t *d)
{
    Py_ssize_t n = 0;
    for (int i = 0; r && i < r->depth; i++) {
        n += (r->frames[i].d == d);
    }
    return n;
}

/* Is ts still one of the current interpreter's thread states?  At exit CPython
 * deletes some on its own (finalize_subinterpreters() drops each subinterpreter's head
 * thread state first), so exit hooks check before deleting.  The walk is safe there:
 * we hold that interpreter's GIL and it admits no new calls. */
static int
ts_alive(PyThreadState *ts)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t)) {
        if (t == ts) {
            return 1;
        }
    }
    return 0;
}

/* Delete slots of the interpreter the calling thread is attached to. */
void
delete_slots_attached(slot_t *list, int check)
{
    while (list) {
        slot_t *s = list;
        list = s->dnext;
        if (!check || ts_alive(s->ts)) {
            PyThreadState_Clear(s->ts);
            PyThreadState_Delete(s->ts);
        }
        free(s);
    }
}

/* Delete slots of `interp` from whatever interpreter the caller is in: borrow a
 * throw-away thread state of interp for the duration. */
static void
delete_slots_in(PyInterpreterState *interp, slot_t *list)
{
    if (list == NULL) {
        return;
    }
    PyThreadState *cur = PyThreadState_Get();
    if (PyThreadState_GetInterpreter(cur) == interp) {
        delete_slots_attached(list, 0);
        return;
    }
    PyThreadState *tmp = PyThreadState_New(interp);
    if (tmp == NULL) {
        /* Out of memory: leave them; the interpreter's exit hook retries. */
        return;
    }
    PyEval_SaveThread();
    PyEval_RestoreThread(tmp);
    delete_slots_attached(list, 0);
    PyThreadState_Clear(tmp);
    PyThreadState_DeleteCurrent();
    PyEval_RestoreThread(cur);
}

/* Give back a domain pin taken by a releaser. */
static void
unpin(int64_t id)
{
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(id);
    if (d) {
        d->active--;
        wake_waiters(d);
    }
    PyMutex_Unlock(&G.mutex);
}

/* Free a record (G.mutex held, no call in flight).  Its slots must be gone already;
 * any left (a thread state CPython already deleted) are forgotten, never touched. */
void
free_domain_locked(domain_t *d, PyObject **fn, PyObject **type, PyObject **str)
{
    unlink_domain(d);
    while (d->slots) {
        slot_t *s = d->slots;
        d->slots = s->dnext;
        unlink_from_thread(s);
        free(s);
    }
    *fn = d->fn;
    *type = (PyObject *)d->argbuf_type;
    *str = d->str_release;
    free(d->rel);
    free(d);
}

/* ------------------------------------------------------------ release */

PyObject *
native_release_interp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "release_interp(interp_id, timeout=None)");
        return NULL;
    }
    long long id = PyLong_AsLongLong(args[0]);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long timeout_us = -1;
    if (nargs == 2 && args[1] != Py_None) {
        double t = PyFloat_AsDouble(args[1]);
        if (t == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        timeout_us = t <= 0 ? 0 : (long long)(t * 1e6);
    }
    threadrec_t *r = TSS_GET();
    int timed_out = 0;
    PyMutex_Lock(&G.mutex);
    domain_t *d = find_domain(id);
    if (d == NULL) {
        PyMutex_Unlock(&G.mutex);
        Py_RETURN_NONE;      /* nothing was ever cached there */
    }
    if (own_frames(r, d)) {
        PyMutex_Unlock(&G.mutex);
        PyErr_Format(PyExc_RuntimeError,
                     "cannot release interpreter %lld from a call running inside it", id);
        return NULL;
    }
    /* Refuse new calls, wait for those in flight, then every slot is idle. */
    d->closing = 1;
    d = drain_locked(id, 0, timeout_us, &timed_out);
    if (d == NULL) {
        PyMutex_Unlock(&G.mutex);
        Py_RETURN_NONE;
    }
    if (timed_out) {
        Py_ssize_t n = d->active;
        PyMutex_Unlock(&G.mutex);
        PyErr_Format(PyExc_TimeoutError,
                     "interpreter %lld still has %zd call(s) in flight", id, n);
        return NULL;
    }
    slot_t *list = take_idle_slots(d, 0);
    PyInterpreterState *interp = d->interp;
    d->active++;             /* pin the record (and the interpreter) while we delete */
    PyMutex_Unlock(&G.mutex);
    delete_slots_in(interp, list);
    unpin(id);
    Py_RETURN_NONE;
}

PyObject *
native_release_thread(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    threadrec_t *r = TSS_GET();
    if (r == NULL) {
        Py_RETURN_NONE;
    }
    PyThreadState *cur = PyThreadState_Get();
    for (;;) {
        /* One idle slot at a time: delete it on itself (it is ours), pinned. */
        slot_t *s = NULL;
        PyMutex_Lock(&G.mutex);
        for (slot_t *x = r->slots; x; x = x->tnext) {
            if (x->uses == 0 && x->ts != cur) {
                s = x;
                break;
            }
        }
        int64_t id = 0;
        if (s) {
            slot_t **p;
            for (p = &s->d->slots; *p != s; p = &(*p)->dnext) {}
            *p = s->dnext;
            unlink_from_thread(s);
            s->d->active++;
            id = s->d->id;
        }
        PyMutex_Unlock(&G.mutex);
        if (s == NULL) {
            break;
        }
        PyEval_SaveThread();
        PyEval_RestoreThread(s->ts);
        PyThreadState_Clear(s->ts);
        PyThreadState_DeleteCurrent();
        PyEval_RestoreThread(cur);
        free(s);
        unpin(id);
    }
    Py_RETURN_NONE;
}

/* atexit callback, registered in every interpreter that imports the module. */
PyObject *
native_on_exit(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    modstate *st = get_state(module);
    PyInterpreterState *interp = PyInterpreterState_Get();
    int64_t id = PyInterpreterState_GetID(interp);
    st->exited = 1;

    if (interp == PyInterpreterState_Main()) {
        /* Process exit: finalize_subinterpreters() comes next and needs each one down
         * to a single thread state.  Delete every idle slot everywhere and stop caching;
         * busy slots delete themselves when their call ends. */
        typedef struct { int64_t id; PyInterpreterState *interp; slot_t *list; } job_t;
        PyMutex_Lock(&G.mutex);
        __atomic_store_n(&G.shutdown, 1, __ATOMIC_RELEASE);   /* read unlocked: switch.c held() */
        Py_ssize_t njobs = 0;
        for (domain_t *d = G.domains; d; d = d->next) {
            njobs++;
        }
        job_t *jobs = njobs ? calloc((size_t)njobs, sizeof(job_t)) : NULL;
        Py_ssize_t k = 0;
        for (domain_t *d = G.domains; d && jobs; d = d->next) {
            slot_t *list = take_idle_slots(d, 0);
            if (list) {
                d->active++;
                jobs[k++] = (job_t){d->id, d->interp, list};
            }
        }
        PyMutex_Unlock(&G.mutex);
        for (Py_ssize_t i = 0; i < k; i++) {
            delete_slots_in(jobs[i].interp, jobs[i].list);
            unpin(jobs[i].id);
        }
        free(jobs);
        Py_RETURN_NONE;
    }

    /* A subinterpreter being destroyed: Py_EndInterpreter() runs atexit callbacks
     * right before it requires that only its own thread state is left. */
    threadrec_t *r = TSS_GET();
    PyMutex_Lock(&G.mutex);
    if (Py_IsFinalizing()) {
        /* finalize_subinterpreters() at process exit.  The runtime is finalizing, so a
         * thread still inside a call here can never run Python again: it exits (3.13)
         * or hangs (3.14) at its next GIL acquisition without touching its thread
         * state.  Waiting would be pointless; delete its thread state, as CPython zaps
         * the main interpreter's daemon threads, and leak what its frames point to. */
        domain_t *d = find_domain(id);
        if (d) {
            d->closing = 1;
            slot_t *list = take_idle_slots(d, 0);
            Py_ssize_t nbusy = 0;
            for (slot_t *x = d->slots; x; x = x->dnext) {
                nbusy++;
            }
            PyThreadState **busy = nbusy ? calloc((size_t)nbusy, sizeof(*busy)) : NULL;
            nbusy = 0;
            for (slot_t *x = d->slots; x && busy; x = x->dnext) {
                if (x->ts && x->ts != PyThreadState_Get()) {
                    busy[nbusy++] = x->ts;
                }
                x->ts = NULL;
            }
            PyObject *fn = NULL, *tp = NULL, *str = NULL;
            if (d->active == 0) {
                free_domain_locked(d, &fn, &tp, &str);
            }
            else {
                unlink_domain(d);   /* leaked: stuck frames still point at it */
                fn = d->fn, tp = (PyObject *)d->argbuf_type, str = d->str_release;
                d->fn = NULL, d->argbuf_type = NULL, d->str_release = NULL;
            }
            PyMutex_Unlock(&G.mutex);
            delete_slots_attached(list, 1);
            for (Py_ssize_t i = 0; i < nbusy; i++) {
                if (ts_alive(busy[i])) {
                    PyThreadState_Clear(busy[i]);
                    PyThreadState_Delete(busy[i]);
                }
            }
            free(busy);
            Py_XDECREF(fn);
            Py_XDECREF(tp);
            Py_XDECREF(str);
            Py_RETURN_NONE;
        }
        PyMutex_Unlock(&G.mutex);
        Py_RETURN_NONE;
    }
    /* An explicit destroy: refuse new calls, wait for those in flight (they finish
     * normally; a destroy waits like Py_EndInterpreter waits for threads), then delete
     * every slot.  During process exit (G.shutdown) the wait is bounded. */
    long long wait = G.shutdown ? EXIT_DRAIN_US : -1;
    int timed_out;
    for (;;) {
        domain_t *d = find_domain(id);
        if (d == NULL) {
            break;
        }
        d->closing = 1;
        Py_ssize_t own = own_frames(r, d);
        d = drain_locked(id, own, wait, &timed_out);
        if (d == NULL) {
            break;
        }
        slot_t *list = take_idle_slots(d, 0);
        if (list == NULL) {
            if (d->active == 0) {
                PyObject *fn, *tp, *str;
                free_domain_locked(d, &fn, &tp, &str);
                PyMutex_Unlock(&G.mutex);
                Py_XDECREF(fn);
                Py_XDECREF(tp);
                Py_XDECREF(str);
                Py_RETURN_NONE;
            }
            if (timed_out || own) {
                break;      /* calls stuck in flight: nothing more we can do */
            }
            continue;
        }
        PyMutex_Unlock(&G.mutex);
        delete_slots_attached(list, 1);
        PyMutex_Lock(&G.mutex);
    }
    PyMutex_Unlock(&G.mutex);
    Py_RETURN_NONE;
}

PyObject *
native_stats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    /* For tests: {interp_id: (cached slots, orphans, calls in flight, closing)}. */
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    PyMutex_Lock(&G.mutex);
    Py_ssize_t cap = 0;
    for (domain_t *d = G.domains; d; d = d->next) {
        cap++;
    }
    long long (*rows)[5] = cap ? calloc((size_t)cap, sizeof(*rows)) : NULL;
    Py_ssize_t k = 0;
    for (domain_t *d = G.domains; d && rows; d = d->next, k++) {
        long long nslots = 0;
        for (slot_t *s = d->slots; s; s = s->dnext) {
            nslots++;
        }
        rows[k][0] = d->id;
        rows[k][1] = nslots;
        rows[k][2] = d->norphans;
        rows[k][3] = d->active;
        rows[k][4] = d->closing;
    }
    PyMutex_Unlock(&G.mutex);
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *key = PyLong_FromLongLong(rows[i][0]);
        PyObject *val = Py_BuildValue("(LLLO)", rows[i][1], rows[i][2], rows[i][3],
                                      rows[i][4] ? Py_True : Py_False);
        if (key == NULL || val == NULL || PyDict_SetItem(out, key, val) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(val);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(key);
        Py_DECREF(val);
    }
    free(rows);
    return out;
}

