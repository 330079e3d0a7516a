"""Call an operation in another domain and bring back its result or its exception.

This is the caller's side of the one mechanism everything else stands on, modelled on
Mono's xdomain wrappers (seed 003): the caller packs a request, the thread changes
domain, the callee serves it (``_serve``), and the reply travels back.  ``call`` picks
the route, in this order:

* the native route (``_native_route``, when the C switch was built): the calling thread
  switches itself into the target with a cached thread state, ~1 µs;
* the fast route: the calling thread switches into the target with
  ``_interpreters.exec``, like Mono's ``mono_remoting_set_domain_by_id``;
* the dispatcher route: the request goes on the target's inbox and one of its dispatcher
  threads (``_pool``) is woken through the OS (``_wake``).  It serves what the others
  cannot: a call with a timeout (a thread switched into a domain cannot be bounded), a
  target already running another thread's fast call, and the main interpreter, which
  nothing can exec into.

Messages are the shapes named in ``_wire``, carried by low-level cross-interpreter queues
that are only ever used without blocking.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref

from .._errors import AppDomainUnloadedException, ThreadAbortException
from . import _compat, _context, _foreign
from ._foreign import FOREIGN_BASE, gone_cause
from ._serve import (
    CURRENT_INTERP,
    MAIN_INTERP,
    call_here,
    decode_error,
    state,
    unloaded,
    visiting,
)
from ._wake import WATCH_SECONDS, WakeSocket, wake, watch
from ._wire import ONE_WAY, is_request

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections.abc would cost every new domain ~3 ms
    from collections.abc import Callable
    from types import CodeType, ModuleType
    from typing import Any

    from ._wire import Dispatched, Reply, Request, Route, Shareable

__all__ = [
    "abortable_wait",
    "call",
    "close_mailboxes",
    "native_missing",
    "native_built",
    "native_module",
    "post",
    "thread_waker",
    "use_native_route",
    "wake_waiting_threads",
]

# A waiting caller re-checks that its target still exists this often: the reply
# normally wakes it, this only bounds the wait if the target vanished without replying.
LIVENESS_SECONDS = 1.0
# How long a thread switched in by the fast route watches for the reply to a call it makes
# from there (a callback, mostly into the default domain) before it sleeps.  That reply
# needs the target's dispatcher woken (tens of µs on an idle VM) and often comes just
# after the usual watch: sleeping as well would cost a second wake-up.  The watch holds
# this domain's GIL, which the visiting call holds anyway (it takes no other fast call).
VISITOR_WATCH_SECONDS = 4 * WATCH_SECONDS


# -- mailboxes ---------------------------------------------------------------------------


class _Mailbox:
    """A thread's private reply queue and wake socket, and its bindings to domains."""

    def __init__(self) -> None:
        self.queue = _compat.queue_create()
        self.waker = WakeSocket()
        self.seq = itertools.count(1)
        self.bound: set[int] = set()
        # For a visiting thread's mailbox (see _mailbox): its mailbox queue at home.
        self.home = 0
        # Target interp id -> a queue holding one item while this thread switches into the
        # target.  The target's running flag drops before the switch has deleted the thread's
        # state there, and destroying an interpreter in that gap aborts the process ("not the
        # last thread"); an item leaves the queue only once the switch has returned, so
        # unload waits for these queues to empty (see _unload._wait_for_entries).
        self.entries: dict[int, int] = {}
        # Closing happens when the owning thread's locals die, never from __del__ I/O.
        self.close = weakref.finalize(
            self, _close_mailbox, _compat.queue_destroy, self.queue, self.waker, self.entries
        )
        # Not at exit: unloading the remaining domains then still needs this mailbox.
        self.close.atexit = False
        _all_mailboxes.add(self)

    def take(self, seq: int, route: Route, deadline: float | None) -> Reply:
        """Wait for the reply numbered seq; raise if the target domain disappears."""
        interp_id = route.interp_id
        # Watched first: the reply is rarely there yet, and an empty get raises (~2 µs).
        watch(self.queue, VISITOR_WATCH_SECONDS if self.home else WATCH_SECONDS)
        while True:
            try:
                reply: Reply = _compat.queue_get(self.queue)
            except _compat.QueueEmpty:
                wait = LIVENESS_SECONDS
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise TimeoutError(
                            f"domain {interp_id + 1} did not reply in time"
                        ) from None
                if not abortable_wait(self.waker, wait) and not _alive(route):
                    raise _gone(route, "was unloaded before it replied") from None
                continue
            if reply[0] == seq:
                return reply
            # A reply to a call this thread abandoned earlier: drop it.


_all_mailboxes: weakref.WeakSet[_Mailbox] = weakref.WeakSet()


def _gone(route: Route, what: str = "has been unloaded") -> AppDomainUnloadedException:
    """Build the error for a call whose target domain is gone (a foreign one says why)."""
    if route.interp_id >= FOREIGN_BASE:
        return AppDomainUnloadedException(f"domain {gone_cause(route, what)}")
    return unloaded(route.interp_id, what)


def _alive(route: Route) -> bool:
    """Tell whether the domain at route still exists (a foreign one: while its link does)."""
    if route.interp_id >= FOREIGN_BASE:
        # A link answers every request it took, and destroys the route's inbox when it ends.
        try:
            _compat.queue_count(route.inbox_queue)
        except _compat.QueueError:
            return False
        return True
    return _compat.interp_exists(route.interp_id)


def close_mailboxes() -> None:
    """Release every mailbox of this interpreter (its threads are gone: it is unloading)."""
    for box in list(_all_mailboxes):
        box.close()


def _close_mailbox(
    destroy: Callable[[int], None], queue_id: int, waker: WakeSocket, entries: dict[int, int]
) -> None:
    # Gets what it needs as arguments: at interpreter teardown module globals may be gone.
    destroy(queue_id)
    for entry_queue in entries.values():
        destroy(entry_queue)  # a no-op for those the target's unload destroyed already
    waker.close()


_local = threading.local()
_get_ident = threading.get_ident
# The mailboxes of threads of other domains switched in here by the fast route, by ident.
# Their thread locals here last one switch (each switch makes a new thread state), and a
# mailbox made per switch costs a queue, a socket and an exec to bind it (~40 µs a call
# that calls out, a callback for one).  Closed once their home mailbox is gone.
_visitors: dict[int, _Mailbox] = {}


def _mailbox() -> _Mailbox:
    ident = _get_ident()
    home = visiting.get(ident)
    if home is None:  # a thread of this domain
        try:
            box: _Mailbox = _local.mailbox
        except AttributeError:
            box = _local.mailbox = _Mailbox()
        return box
    found = _visitors.get(ident)
    if found is None or found.home != home:  # new here (or a dead one's ident, reused)
        _close_departed()
        found = _visitors.get(ident)
        if found is None:
            found = _visitors[ident] = _Mailbox()
        found.home = home
    return found


def _close_departed() -> None:
    """Close the mailboxes of visiting threads that have ended (their home mailbox is gone)."""
    for ident, box in list(_visitors.items()):
        try:
            _compat.queue_count(box.home)
        except _compat.QueueNotFoundError:
            del _visitors[ident]
            box.close()


def thread_waker() -> WakeSocket:
    """Return the calling thread's wake socket (made once per thread, with its mailbox)."""
    return _mailbox().waker


def abortable_wait(waker: WakeSocket, timeout: float | None) -> bool:
    """Block on waker up to timeout seconds; True if woken.

    Raises ThreadAbortException when this domain's unload begins meanwhile: unload wakes
    the threads listed in ``state.waiting`` and lets them raise the abort themselves, so a
    thread blocked in one of appdomain's waits is listed while it blocks (an asynchronous
    abort could land anywhere on its way out, an import included).
    """
    ident = threading.get_ident()
    waiting = state.waiting
    previous = waiting.get(ident)
    waiting[ident] = waker.address
    try:
        if state.aborting:
            raise ThreadAbortException()
        woken = waker.wait(timeout)
    finally:
        if previous is None:
            waiting.pop(ident, None)
        else:
            waiting[ident] = previous
    if state.aborting:
        raise ThreadAbortException()
    return woken


def wake_waiting_threads() -> None:
    """Wake every thread of this domain blocked waiting for a reply (unload aborts them)."""
    for address in list(state.waiting.values()):
        wake(address)


# -- calling ----------------------------------------------------------------------------

_native: ModuleType | None = None
# The native route when the C switch was built, in use or not.
_built: ModuleType | None = None
# True when the C switch was not built (no compiler at install time): said once, on first use.
native_missing = False
try:  # the C switch when it was built; the pure route otherwise
    from . import _native_route

    _built = _native_route
    if _native_route.available():
        _native = _native_route
except ImportError:
    native_missing = not os.environ.get("APPDOMAIN_PURE")


def native_module() -> ModuleType | None:
    """Return the native route (``_native_route``) when it is in use, else None."""
    return _native


def native_built() -> ModuleType | None:
    """Return the native route when the C switch was built, whether it is in use or not."""
    return _built


def use_native_route(on: bool) -> bool:
    """Send this interpreter's calls by the native route (on) or the pure ones; True if taken.

    For tests that run on both routes in one process: domains created afterwards choose
    for themselves as they start, by APPDOMAIN_PURE, so a caller sets that too.  Proxy
    methods keep binding as at import (in C when it was built).
    """
    global _native
    _native = _built if on else None
    return _native is not None


# Calls from this thread go to the dispatcher threads: a switch costs it more (3.14's main thread).
_SLOW_EXEC_THREAD = _compat.SLOW_EXEC_THREAD
_thread_time_ns = time.thread_time_ns


def call(route: Route, op: str, payload: Shareable, *, timeout: float | None = None) -> Any:
    """Run op(payload) in the domain at route and return its result (or raise its error).

    With a timeout the call always goes through the target's dispatcher threads (a
    thread switched into a domain cannot be bounded) and raises TimeoutError if no
    reply came in time.  This is the one place that picks a call's route.
    """
    target = route.interp_id
    if target == CURRENT_INTERP:
        return call_here(op, payload)
    meter = state.meter
    if meter is not None:
        started = _thread_time_ns()
        meter.calls_out += 1
    try:
        ctx = _context.capture()
        if target >= FOREIGN_BASE:  # another process's domain: through its link
            if _foreign.direct is not None:  # this interpreter holds the link
                return _finish(_foreign.direct(route, op, payload, ctx, timeout))
            box = _mailbox()
            seq = next(box.seq)
            deadline = None if timeout is None else time.monotonic() + timeout
            dispatched: Dispatched = (op, payload, seq, ctx, box.queue, box.waker.address)
            return _finish(_dispatch(box, route, dispatched, deadline))
        if timeout is None and _native is not None:
            native_reply = _native.call(target, op, payload, ctx)
            if native_reply is not None:  # None: the target takes no native calls
                return _finish(native_reply)
        box = _mailbox()
        seq = next(box.seq)
        reply = None
        if timeout is None and target != MAIN_INTERP and threading.get_ident() != _SLOW_EXEC_THREAD:
            reply = _try_fast(box, target, (op, payload, seq, ctx))
        if reply is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            request: Dispatched = (op, payload, seq, ctx, box.queue, box.waker.address)
            reply = _dispatch(box, route, request, deadline)
        return _finish(reply)
    finally:
        if meter is not None:
            elapsed = _thread_time_ns() - started
            meter.out_ns += elapsed  # no call in between: no thread switch


def _finish(reply: Reply) -> Any:
    _seq, ok, value, ctx_back = reply
    if ctx_back is not None:
        _context.merge(ctx_back)
    if ok:
        return value
    raise decode_error(value)


_enter_code: dict[int, CodeType] = {}


def _try_fast(box: _Mailbox, target: int, request: Request) -> Reply | None:
    """Switch this thread into target and serve request there; None if target is busy."""
    if _compat.interp_is_running(target):
        # A failed exec costs ~10 µs and takes the target's GIL; this check costs neither.
        return None
    entry_queue = box.entries.get(target)
    if entry_queue is None:
        entry_queue = box.entries[target] = _compat.queue_create()
    try:
        _compat.queue_put(entry_queue, target)
    except _compat.QueueNotFoundError:  # destroyed by the target's unload
        raise unloaded(target) from None
    try:
        return _switch_in(box, target, entry_queue, request)
    finally:
        try:
            _compat.queue_get(entry_queue)  # the switch has returned: our thread state is gone
        except _compat.QueueError:
            pass  # an unload gave up waiting for us and destroyed the queue


def _switch_in(box: _Mailbox, target: int, entry_queue: int, request: Request) -> Reply | None:
    """Bind this thread's mailbox in target once, then exec the request's entry there."""
    if target not in box.bound:
        try:
            _compat.exec_in(
                target,
                f"__appdomain_bind__({CURRENT_INTERP}, {box.queue}, {entry_queue})",
            )
        except _compat.InterpreterNotFoundError:
            raise unloaded(target) from None
        except (_compat.InterpreterError, SystemError):
            # Fix (tests/test_core.py::test_reentrant_chains_from_many_threads, pure):
            # the 3.13.0 busy race reported as SystemError, as for the enter exec below;
            # binding is idempotent, so taking the dispatcher route instead is safe.
            return None
        box.bound.add(target)
    code = _enter_code.get(target)
    if code is None:
        code = _enter_code[target] = compile(
            f"__appdomain_enter__({CURRENT_INTERP})", "<appdomain fast call>", "exec"
        )
    _compat.queue_put(box.queue, request)
    try:
        excinfo = _compat.exec_in(target, code)
    except _compat.InterpreterNotFoundError:
        _drain(box.queue)
        raise unloaded(target) from None
    except (_compat.InterpreterError, SystemError):
        # Busy (another thread runs there).  CPython 3.13.0 sometimes reports that race
        # as a SystemError; either way our request is normally still in the mailbox.
        return _reclaim(box.queue, request[2])
    seq = request[2]
    while True:
        try:
            reply: Reply = _compat.queue_get(box.queue)
        except _compat.QueueEmpty:
            detail = getattr(excinfo, "formatted", None) or getattr(excinfo, "msg", "")
            raise unloaded(target, f"did not complete the call: {detail or 'no reply'}") from None
        if reply[0] == seq:
            return reply
        # A late reply to a dispatched call this thread gave up on (its timeout passed,
        # e.g. while the target's GIL was held): it shares the mailbox, and is dropped.


def _reclaim(queue_id: int, seq: int) -> Reply | None:
    """Take back a request the target did not run; return its reply if it did run."""
    while True:
        try:
            item = _compat.queue_get(queue_id)
        except _compat.QueueEmpty:
            return None
        if is_request(item):
            return None
        if item[0] == seq:
            reply: Reply = item
            return reply
        # else a late reply to an abandoned call (see _switch_in): dropped


def _drain(queue_id: int) -> None:
    while True:
        try:
            _compat.queue_get(queue_id)
        except _compat.QueueEmpty:
            return


def _dispatch(box: _Mailbox, route: Route, request: Dispatched, deadline: float | None) -> Reply:
    """Hand request to the dispatcher threads of route's domain and wait for the reply."""
    try:
        _compat.queue_put(route.inbox_queue, request)
    except _compat.QueueNotFoundError:
        raise _gone(route) from None
    if not wake(route.inbox_address):
        raise _gone(route)
    ident = threading.get_ident()
    waiting = state.waiting
    waiting[ident] = box.waker.address
    try:
        return box.take(request[2], route, deadline)
    finally:
        waiting.pop(ident, None)


def post(route: Route, op: str, payload: Shareable) -> bool:
    """Queue op(payload) for route's dispatcher without waiting; False if the domain is gone.

    Nothing comes back, not even an exception: this is for one-way calls.
    """
    if state.meter is not None:
        state.meter.calls_out += 1
    try:
        request: Dispatched = (op, payload, 0, _context.capture(), ONE_WAY, "")
        _compat.queue_put(route.inbox_queue, request)
    except _compat.QueueNotFoundError:
        return False
    return wake(route.inbox_address)
