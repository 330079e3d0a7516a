/* appdomain._native: run a call in another interpreter on the calling thread.
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
 * Speed is the easy part; the rest of this file is lifecycle.  A thread state may
 * only be cleared while attached to its interpreter, Py_EndInterpreter() aborts
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
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>
#include "_native.h"
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#  include <windows.h>
#  define yield_cpu() SwitchToThread()
#else
#  include <pthread.h>
#  include <sched.h>
#  define yield_cpu() sched_yield()
#endif
/* A spin-wait hint to the CPU (x86 PAUSE, ARM YIELD), where the compiler has one. */
#if defined(__x86_64__) || defined(__i386__)
#  define spin_hint() __builtin_ia32_pause()
#elif defined(__aarch64__)
#  define spin_hint() __asm__ __volatile__("yield")
#else
#  define spin_hint() ((void)0)
#endif

#if PY_VERSION_HEX < 0x030D0000
#  error "appdomain._native needs CPython 3.13 or newer"
#endif

#define MAX_DEPTH 128              /* nested calls per thread before RecursionError */
#define SMALL_RESULT (64 * 1024)   /* replies up to this size go through a scratch copy */
#define NPARTS_STACK 8             /* parts handled without a heap allocation */
#define EXIT_DRAIN_US 2000000      /* how long exit hooks wait for calls in flight */
/* invoke() packs plain values: marshal version 2 has no back-references, so packing
 * needs no hash table (version 4 sets one up for every dumps, ~40% of the cost). */
#define LEAN_MARSHAL_VERSION 2
#define MAX_BIG_ARGS 8            /* large bytes arguments an invoke carries in place */
#define SPIN_LOOKS 256             /* looks at a held GIL before yielding the CPU between looks */
#define BUSY_WAIT_NS 30000         /* how long a thread watches a held GIL before sleeping on it */

typedef struct domain domain_t;
typedef struct slot slot_t;
typedef struct threadrec threadrec_t;

/* A cached thread state of interpreter d->interp, bound to one OS thread. */
struct slot {
    PyThreadState *ts;
    domain_t *d;
    threadrec_t *owner;   /* NULL once the owning thread has exited (an orphan) */
    int uses;             /* calls of the owner currently running on ts (nesting) */
    slot_t *dnext;        /* next slot of the same domain */
    slot_t *tnext;        /* next slot of the same thread */
};

/* An interpreter that registered a dispatcher. */
struct domain {
    domain_t *next;
    int64_t id;
    PyInterpreterState *interp;  /* valid while the record exists: see the exit hook */
    PyObject *fn;                /* the dispatcher; these three belong to interp */
    PyTypeObject *argbuf_type;
    PyObject *str_release;
    void *owner_state;           /* module state that registered (identity only) */
    int closing;                 /* no new calls admitted */
    Py_ssize_t active;           /* calls in flight + releasers at work */
    Py_ssize_t norphans;
    slot_t *slots;
};

/* One call in flight on this thread. */
typedef struct {
    domain_t *d;
    slot_t *slot;            /* slot running the call, or NULL */
    PyThreadState *ts;       /* thread state running the call */
    PyThreadState *caller;   /* suspended thread state of the caller */
    int64_t caller_id;
    slot_t *caller_slot;     /* caller is one of our slots (nested call), or NULL */
} frame_t;

/* Per OS thread, reachable through thread-specific storage; freed when it exits. */
struct threadrec {
    slot_t *slots;
    frame_t *frames;         /* owner-only; heap so the exit destructor can read it */
    int depth, cap;
    char *scratch;           /* owner-only reply / message buffer */
    size_t scratch_cap;
};

static struct {
    PyMutex mutex;
    domain_t *domains;
    int shutdown;            /* main interpreter's exit hook ran: no more caching */
    int nwaiters;
    PyThread_type_lock wake; /* kept acquired; released to wake drain waiters */
    int ready;
#ifdef _WIN32
    DWORD key;
#else
    pthread_key_t key;
#endif
} G;

/* ------------------------------------------------------------------ records */

static domain_t *
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

static void
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
static slot_t *
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

static void
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
static int
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
        PyErr_SetString(PyExc_RuntimeError, "appdomain._native: cannot allocate thread storage");
        return -1;
    }
    return 0;
}

static threadrec_t *
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

static int
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
static void
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
static void
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
    free(d);
}

/* --------------------------------------------------------- module state */

/* modstate and get_state() are in _native.h, shared with _native_method.c. */

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

static PyType_Spec argbuf_spec = {
    .name = "appdomain._native.ArgBuffer",
    .basicsize = sizeof(ArgBuffer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = argbuf_slots,
};

/* ------------------------------------------------------------------ call */

enum { OUT_SMALL, OUT_LARGE, OUT_ERROR };

enum { KIND_PARTS, KIND_INVOKE };

typedef struct {
    int kind;
    /* KIND_PARTS: the caller's buffers, handed to the dispatcher as read-only views. */
    Py_buffer *bufs;
    Py_ssize_t n;
    unsigned char *retained;  /* per part: callee kept a view, pin the buffer */
    /* KIND_INVOKE: method `name` of object `oid`, arguments as a stdlib-marshal blob,
     * except large bytes arguments: None in the blob, read from the caller's object. */
    long long oid;
    const char *name;
    Py_ssize_t name_len;
    const char *payload;
    Py_ssize_t payload_len;
    int nbig;
    Py_ssize_t big_index[MAX_BIG_ARGS];
    const char *big_buf[MAX_BIG_ARGS];
    Py_ssize_t big_len[MAX_BIG_ARGS];
    int held_value;           /* OUT_LARGE of an invoke: held is the bytes result itself */
    int out;
    size_t len;               /* OUT_SMALL / OUT_ERROR: bytes in r->scratch */
    PyObject *held;           /* OUT_LARGE: the reply (exact bytes), still in the target */
    Py_buffer hv;
} callctx;

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
run_invoke(threadrec_t *r, callctx *c, PyObject *fn)
{
    if (fn == Py_None) {
        fail_text(r, c, "RuntimeError: no dispatcher for invokes in the target interpreter");
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
    if (ok) {
        res = PyObject_Vectorcall(fn, argv, 3, NULL);
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

    /* d->fn, the pair (dispatcher, invoker), is read under the target's GIL:
     * register/unregister run there too. */
    PyObject *pair = Py_XNewRef(d->fn);
    if (pair == NULL) {
        fail_text(r, c, "RuntimeError: no dispatcher registered in the target interpreter");
        return;
    }
    if (c->kind == KIND_INVOKE) {
        run_invoke(r, c, PyTuple_GET_ITEM(pair, 1));
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
static PyObject *
refuse(int64_t id, int why)
{
    if (why == 1) {
        PyErr_Format(PyExc_RuntimeError, "interpreter %lld is being destroyed", (long long)id);
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
        PyErr_Format(PyExc_RuntimeError,
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

/* Give a GIL another thread holds a moment before taking it (no GIL held here).  Blocking
 * on a taken GIL puts the thread to sleep, and waking it costs tens of µs: with several
 * threads calling one domain, every call would pay that on the way in and on the way back,
 * and the calls last a few µs.  So look again for a while, yielding the CPU, then take the
 * GIL anyway. */
static void
wait_for_gil(PyInterpreterState *interp)
{
    if (!appdomain_gil_locked(interp)) {
        return;
    }
    /* The holder usually lets go within a µs or two (a call's Python part): look without
     * a system call first. */
    for (int i = 0; i < SPIN_LOOKS; i++) {
        spin_hint();
        if (!appdomain_gil_locked(interp)) {
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
    } while (appdomain_gil_locked(interp) && now - start < BUSY_WAIT_NS);
}

/* Switch the calling thread into interpreter iid, run the call described by c there,
 * and come back: admission, the switch, and leaving, shared by call() and invoke(). */
static PyObject *
switch_call(threadrec_t *r, long long iid, callctx *c)
{
    PyObject *result = NULL;
    PyThreadState *caller = PyThreadState_Get();
    int64_t caller_id = PyInterpreterState_GetID(PyThreadState_GetInterpreter(caller));
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
        return refuse(iid, why);
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
    if (c->out == OUT_LARGE) {
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
    PyMutex_Unlock(&G.mutex);
    if (!same) {
        if (drop_ts) {
            PyThreadState_Clear(ts);
            PyThreadState_DeleteCurrent();
        }
        else {
            PyEval_SaveThread();
        }
        wait_for_gil(PyThreadState_GetInterpreter(caller));
        PyEval_RestoreThread(caller);
    }

    /* ---- back in the caller ---- */
    if (c->out == OUT_SMALL) {
        result = make_result(c, r->scratch, (Py_ssize_t)c->len);
    }
    else if (c->out == OUT_ERROR) {
        Py_CLEAR(result);
        PyObject *msg = PyUnicode_DecodeUTF8(r->scratch, (Py_ssize_t)c->len, "replace");
        if (msg) {
            PyErr_SetObject(PyExc_RuntimeError, msg);
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
static threadrec_t *
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

#define BIG_ARG_BYTES (64 * 1024)   /* bytes arguments this large skip the blob */

/* Tell whether a lean invoke may carry these arguments: exact None, bool, float, str,
 * bytes and 64-bit ints (the values that cross unchanged), and no logical call context
 * to carry along.  Anything else takes the generic route. */
static int
is_lean(modstate *st, PyObject *args)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
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
        return empty;
    }
    return 1;
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
    if (!is_lean(get_state(module), args[3])) {
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
    callctx c = {.kind = KIND_INVOKE, .oid = oid, .name = name, .name_len = name_len};
    /* Large bytes arguments stay where they are (the caller's tuple keeps them alive
     * for the call): None stands in for them in the blob. */
    PyObject *packed = args[3];
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
            Py_RETURN_NOTIMPLEMENTED;
        }
        if (packed == args[3]) {
            /* A copy to edit (PyTuple_GetSlice would hand back the same tuple). */
            if ((packed = PyTuple_New(n)) == NULL) {
                return NULL;
            }
            for (Py_ssize_t j = 0; j < n; j++) {
                PyTuple_SET_ITEM(packed, j, Py_NewRef(PyTuple_GET_ITEM(args[3], j)));
            }
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
    if (blob == NULL) {
        return NULL;
    }
    c.payload = PyBytes_AS_STRING(blob);
    c.payload_len = PyBytes_GET_SIZE(blob);
    PyObject *result = switch_call(r, iid, &c);
    Py_DECREF(blob);
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

    callctx c = {.kind = KIND_PARTS, .bufs = bufs, .n = n, .retained = kept};
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

static PyObject *
native_register_dispatcher(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    modstate *st = get_state(module);
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "register_dispatcher(fn, invoker=None) takes 1 or 2 arguments");
        return NULL;
    }
    PyObject *invoker = nargs == 2 ? args[1] : Py_None;
    if (!PyCallable_Check(args[0]) || (invoker != Py_None && !PyCallable_Check(invoker))) {
        PyErr_SetString(PyExc_TypeError, "dispatcher must be callable");
        return NULL;
    }
    /* The record holds both as one pair, so its lifecycle handles a single object. */
    PyObject *fn = PyTuple_Pack(2, args[0], invoker);
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

/* ------------------------------------------------------------ release */

static PyObject *
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

static PyObject *
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
static PyObject *
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
        G.shutdown = 1;
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

static PyObject *
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

/* ------------------------------------------------------------- module */

static PyMethodDef native_methods[] = {
    {"register_dispatcher", (PyCFunction)(void (*)(void))native_register_dispatcher, METH_FASTCALL,
     "register_dispatcher(fn, invoker=None)\n--\n\nMake fn(parts: tuple[memoryview, ...]) -> "
     "bytes the target of call() for the current interpreter, and invoker(oid, name, args) "
     "-> marshallable the target of invoke()."},
    {"invoke", (PyCFunction)(void (*)(void))appdomain_invoke, METH_FASTCALL,
     "invoke(interp_id, oid, name, args)\n--\n\nRun the invoker of interpreter interp_id on "
     "the calling thread with args (plain values); return its reply, or NotImplemented "
     "when args (or a logical call context) need the generic route."},
    {"method_member", (PyCFunction)(void (*)(void))appdomain_method_member, METH_FASTCALL,
     "method_member(spec, bound_type)\n--\n\nMake the proxy-type member for the remote "
     "method spec: reading it from a proxy binds a bound_type (a BoundMethod subclass)."},
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
    if (st->str_release == NULL || appdomain_method_init(module, st) < 0) {
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
    Py_VISIT(st->ctxvar);
    return appdomain_method_traverse(st, visit, arg);
}

static int
native_clear(PyObject *module)
{
    modstate *st = get_state(module);
    Py_CLEAR(st->argbuf_type);
    Py_CLEAR(st->str_release);
    Py_CLEAR(st->ctxvar);
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
    .m_name = "appdomain._native",
    .m_doc = "Switch the calling thread into another interpreter (see _native.c).",
    .m_size = sizeof(modstate),
    .m_methods = native_methods,
    .m_slots = native_slots,
    .m_traverse = native_traverse,
    .m_clear = native_clear,
    .m_free = native_free,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
