/* What the C files of appdomain._native._ext share among themselves (method.c needs
 * only _native.h): limits, the records of interpreters, cached thread states and threads
 * (states.c), and what one switch carries (switch.c).  The overview is at
 * the top of module.c. */
#ifndef APPDOMAIN_NATIVE_CORE_H
#define APPDOMAIN_NATIVE_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>
#include <stdlib.h>
#include <string.h>
#include "native.h"

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
#  error "appdomain._native._ext needs CPython 3.13 or newer"
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
#define INLINE_RELEASES 128        /* queued releases a call entering their owner applies */

#if defined(__GNUC__)
#  pragma GCC visibility push(hidden)   /* shared between the files, not exported */
#endif

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
    /* Releases of this interpreter's objects by dead proxies elsewhere (proxy_gone):
     * (oid, count) pairs, applied by apply_releases() in this interpreter. */
    long long *rel;
    Py_ssize_t nrel, caprel;   /* in pairs */
    int rel_armed;             /* a wake to drain them is due (arm_py ran) */
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

/* Process-global state, under mutex (defined in states.c). */
struct native_globals {
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
};
extern struct native_globals G;

/* One switch: what the caller asks, and what the target answers. */
enum { OUT_SMALL, OUT_LARGE, OUT_ERROR };

enum { KIND_PARTS, KIND_INVOKE };

typedef struct {
    int kind;
    modstate *st;             /* the caller's module state: its refusal types */
    int not_served;           /* OUT_ERROR: the target has no dispatcher for this kind */
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
    int has_refs;             /* some arguments are references (the invoker's 4th argument) */
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

/* The read-only window on a caller's buffer (switch.c). */
extern PyType_Spec argbuf_spec;

/* states.c: records, thread states and their release. */
domain_t *find_domain(int64_t id);
void unlink_from_thread(slot_t *s);
slot_t *take_idle_slots(domain_t *d, int orphans_only);
void wake_waiters(domain_t *d);
int globals_init(void);
threadrec_t *threadrec_get(void);
int scratch_reserve(threadrec_t *r, size_t n);
void delete_slots_attached(slot_t *list, int check);
void free_domain_locked(domain_t *d, PyObject **fn, PyObject **type, PyObject **str);
PyObject *native_release_interp(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *native_release_thread(PyObject *module, PyObject *Py_UNUSED(ignored));
PyObject *native_on_exit(PyObject *module, PyObject *Py_UNUSED(ignored));
PyObject *native_stats(PyObject *module, PyObject *Py_UNUSED(ignored));

/* refs.c: a lean invoke's by-reference arguments in its target: made objects of it before
 * the call (made lists the new proxies), settled after it.  0 on success, -1 on an error. */
int appdomain_take_refs(PyObject *refs, PyObject *args, PyObject *made);
int appdomain_settle_refs(PyObject *refs, PyObject *made);

/* switch.c: the switch. */
PyObject *refuse(modstate *st, int64_t id, int why);
PyObject *switch_call(threadrec_t *r, long long iid, callctx *c);

/* table.c: apply d's queued releases from a call entering it, once there are enough. */
void appdomain_apply_inline(domain_t *d);
/* module.c: whether fast is None or the refs' fast tuple its users expect. */
int appdomain_fast_ok(PyObject *fast);
threadrec_t *caller_record(void);

#if defined(__GNUC__)
#  pragma GCC visibility pop
#endif

#endif
