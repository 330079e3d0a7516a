"""Run an operation in another domain and bring back its result or its exception.

This is the one mechanism everything else stands on, modelled on Mono's xdomain
wrappers (seed 003): the caller packs a request, the thread changes domain, the
callee dispatches it, and the reply travels back.  There are two routes:

* the fast route switches the calling thread itself into the target interpreter
  (``_interpreters.exec``), like Mono's ``mono_remoting_set_domain_by_id``;
* the dispatcher route hands the request to a pool of threads living inside the
  target, woken through the OS (``_wake``).  It serves the cases the fast route
  cannot: a target already running another thread's fast call, and the main
  interpreter, which nothing can exec into.

Requests and replies are tuples of shareable values (str, bytes, int, float, bool,
None, memoryview and tuples of them) carried by low-level cross-interpreter queues,
which are only ever used without blocking.  What the payload means is up to the
operation registered under its name (``register_op``); the call path only moves it.

Wire shapes (one table, so both sides agree):
    fast request        (op, payload, seq, ctx)           on the caller's mailbox
    dispatched request  (op, payload, seq, ctx, reply_queue, reply_address)
    reply               (seq, ok, value, ctx)             on the caller's mailbox
``ok`` is True when ``value`` is the op's result, False when it is an encoded
exception.  ``ctx`` carries the logical call context both ways (``_context``).
"""

from __future__ import annotations

import importlib
import itertools
import os
import threading
import time
import weakref

from . import _compat, _context
from ._errors import AppDomainUnloadedException, ThreadAbortException
from ._wake import WakeSocket, wake, watch

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections.abc would cost every new domain ~3 ms
    from collections.abc import Callable
    from typing import Any

    from ._pool import Pool

    OpHandler = Callable[[Any], Any]

__all__ = ["Route", "call", "register_op", "current_route"]

CURRENT_INTERP: int = _compat.current_interp_id()
MAIN_INTERP: int = _compat.main_interp_id()

# A waiting caller re-checks that its target still exists this often: the reply
# normally wakes it, this only bounds the wait if the target vanished without replying.
LIVENESS_SECONDS = 1.0

_ops: dict[str, OpHandler] = {}
# Ops that still run while the domain unloads (the unload itself uses them).
_control_ops: set[str] = set()


class Route(tuple[int, int, str, int]):  # a NamedTuple would import typing into every domain
    """Where a domain can be reached: its interpreter, dispatcher inbox and release queue.

    The release queue carries remote-object releases posted by other domains' finalizers,
    drained before each call.
    """

    __slots__ = ()

    def __new__(
        cls, interp_id: int, inbox_queue: int, inbox_address: str, release_queue: int
    ) -> Route:
        return tuple.__new__(cls, (interp_id, inbox_queue, inbox_address, release_queue))

    @property
    def interp_id(self) -> int:
        return self[0]

    @property
    def inbox_queue(self) -> int:
        return self[1]

    @property
    def inbox_address(self) -> str:
        return self[2]

    @property
    def release_queue(self) -> int:
        return self[3]

    def __repr__(self) -> str:
        return f"Route(interp_id={self[0]}, inbox_queue={self[1]}, release_queue={self[3]})"


def register_op(name: str, handler: OpHandler, *, control: bool = False) -> None:
    """Make handler(payload) -> shareable callable by name from other domains."""
    _ops[name] = handler
    if control:
        _control_ops.add(name)


class _State:
    """This interpreter's part of the call path (module state is per interpreter)."""

    def __init__(self) -> None:
        # Fast-route mailboxes bound by callers: (thread ident, caller interp) -> queue id.
        self.boxes: dict[tuple[int, int], int] = {}
        # The entry queues of those callers (see _Mailbox.entries), for unload to wait on.
        self.entry_queues: set[int] = set()
        # Threads currently running a call in this interpreter (unload aborts them).
        self.inside: set[int] = set()

    route: Route | None = None
    # Set when unload begins: new calls into this domain are refused.
    unloading = False
    # Set once domain_unload handlers have run: this domain's waiting threads abort.
    aborting = False
    pool: Pool | None = None


state = _State()


def current_route() -> Route:
    """Return the route of the domain this code runs in."""
    if state.route is None:
        raise RuntimeError("appdomain is not initialised in this interpreter")
    return state.route


# -- mailboxes ---------------------------------------------------------------------------


class _Mailbox:
    """A thread's private reply queue and wake socket, and its bindings to domains."""

    def __init__(self) -> None:
        self.queue = _compat.queue_create()
        self.waker = WakeSocket()
        self.seq = itertools.count(1)
        self.bound: set[int] = set()
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

    def take(self, seq: int, interp_id: int, deadline: float | None) -> tuple[Any, ...]:
        """Wait for the reply numbered seq; raise if the target domain disappears."""
        watched = False
        while True:
            try:
                reply = _compat.queue_get(self.queue)
            except _compat.QueueEmpty:
                if state.aborting:
                    raise ThreadAbortException() from None
                if not watched:
                    watched = True
                    if watch(self.queue):
                        continue
                wait = LIVENESS_SECONDS
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise TimeoutError(
                            f"domain {interp_id + 1} did not reply in time"
                        ) from None
                if not self.waker.wait(wait) and not _compat.interp_exists(interp_id):
                    raise AppDomainUnloadedException(
                        f"domain {interp_id + 1} was unloaded before it replied"
                    ) from None
                continue
            if reply[0] == seq:
                return tuple(reply)
            # A reply to a call this thread abandoned earlier: drop it.


_all_mailboxes: weakref.WeakSet[_Mailbox] = weakref.WeakSet()


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


def _mailbox() -> _Mailbox:
    try:
        box: _Mailbox = _local.mailbox
    except AttributeError:
        box = _local.mailbox = _Mailbox()
    return box


# thread ident -> wake address, for threads of this domain blocked waiting on a reply
_waiting: dict[int, str] = {}


def wake_waiting_threads() -> None:
    """Wake every thread of this domain blocked waiting for a reply (unload aborts them)."""
    for address in list(_waiting.values()):
        wake(address)


# -- calling ----------------------------------------------------------------------------

_native: Any = None
# True when the C switch was not built (no compiler at install time): said once, on first use.
native_missing = False
try:  # the C switch when it was built; the pure route otherwise
    from . import _native_path

    if _native_path.available():
        _native = _native_path
except ImportError:
    native_missing = not os.environ.get("APPDOMAIN_PURE")


def native_module() -> Any:
    """Return the C switch module when it is in use, else None."""
    return _native


# Calls from this thread go to the dispatcher threads: a switch costs it more (3.14's main thread).
_SLOW_EXEC_THREAD = _compat.SLOW_EXEC_THREAD


def call(route: Route, op: str, payload: Any, *, timeout: float | None = None) -> Any:
    """Run op(payload) in the domain at route and return its result (or raise its error).

    With a timeout the call always goes through the target's dispatcher threads (a
    thread switched into a domain cannot be bounded) and raises TimeoutError if no
    reply came in time.
    """
    target = route.interp_id
    if target == CURRENT_INTERP:
        return _call_here(op, payload)
    ctx = _context.capture()
    if _native is not None and timeout is None:
        native_reply = _call_native(target, op, payload, ctx)
        if native_reply is not None:
            return _finish(native_reply)
    box = _mailbox()
    seq = next(box.seq)
    reply = None
    if timeout is None and target != MAIN_INTERP and threading.get_ident() != _SLOW_EXEC_THREAD:
        reply = _try_fast(box, target, (op, payload, seq, ctx))
    if reply is None:
        deadline = None if timeout is None else time.monotonic() + timeout
        request = (op, payload, seq, ctx, box.queue, box.waker.address)
        reply = _dispatch(box, route, request, deadline)
    return _finish(reply)


def _finish(reply: tuple[Any, ...]) -> Any:
    _seq, ok, value, ctx_back = reply
    if ctx_back is not None:
        _context.merge(ctx_back)
    if ok:
        return value
    raise _decode_error(value)


def _call_native(target: int, op: str, payload: Any, ctx: Any) -> tuple[Any, ...] | None:
    """Switch into target with the C module; None if target takes no native calls."""
    try:
        return _native.call(target, op, payload, ctx)  # type: ignore[no-any-return]
    except LookupError:
        raise AppDomainUnloadedException(f"domain {target + 1} has been unloaded") from None
    except RuntimeError as exc:
        message = str(exc)
        if "no dispatcher" in message:
            return None  # an interpreter appdomain did not start: use the pure route
        if "being destroyed" in message or "shutting down" in message:
            raise AppDomainUnloadedException(f"domain {target + 1} is being unloaded") from None
        raise


def _call_here(op: str, payload: Any) -> Any:
    return _handler(op)(payload)


# Modules that register the operations under a prefix, loaded when the first such
# operation arrives: a domain nobody sends a proxy to never imports remoting.
_op_providers = {"remoting.": "appdomain._remoting", "pytest.": "appdomain._pytest_remote"}


def _handler(op: str) -> OpHandler:
    handler = _ops.get(op)
    if handler is None:
        for prefix, module in _op_providers.items():
            if op.startswith(prefix):
                importlib.import_module(module)
                handler = _ops.get(op)
        if handler is None:
            raise LookupError(f"no operation {op!r} is registered in this domain")
    return handler


_enter_code: dict[int, Any] = {}


def _try_fast(box: _Mailbox, target: int, request: tuple[Any, ...]) -> tuple[Any, ...] | None:
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
        raise AppDomainUnloadedException(f"domain {target + 1} has been unloaded") from None
    try:
        return _switch_in(box, target, entry_queue, request)
    finally:
        try:
            _compat.queue_get(entry_queue)  # the switch has returned: our thread state is gone
        except _compat.QueueError:
            pass  # an unload gave up waiting for us and destroyed the queue


def _switch_in(
    box: _Mailbox, target: int, entry_queue: int, request: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    """Bind this thread's mailbox in target once, then exec the request's entry there."""
    if target not in box.bound:
        try:
            _compat.exec_in(
                target,
                f"__appdomain_bind__({CURRENT_INTERP}, {box.queue}, {entry_queue})",
            )
        except _compat.InterpreterNotFoundError:
            raise AppDomainUnloadedException(f"domain {target + 1} has been unloaded") from None
        except (_compat.InterpreterError, SystemError):
            # Fix (tests/test_callpath.py::test_reentrant_chains_from_many_threads, pure):
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
        raise AppDomainUnloadedException(f"domain {target + 1} has been unloaded") from None
    except (_compat.InterpreterError, SystemError):
        # Busy (another thread runs there).  CPython 3.13.0 sometimes reports that race
        # as a SystemError; either way our request is normally still in the mailbox.
        return _reclaim(box.queue)
    try:
        return tuple(_compat.queue_get(box.queue))
    except _compat.QueueEmpty:
        detail = getattr(excinfo, "formatted", None) or getattr(excinfo, "msg", "") or "no reply"
        raise AppDomainUnloadedException(
            f"domain {target + 1} did not complete the call: {detail}"
        ) from None


def _reclaim(queue_id: int) -> tuple[Any, ...] | None:
    """Take back a request the target did not run; return its reply if it did run."""
    try:
        item = tuple(_compat.queue_get(queue_id))
    except _compat.QueueEmpty:
        return None
    # A request starts with its op name, a reply with its sequence number.
    return None if isinstance(item[0], str) else item


def _drain(queue_id: int) -> None:
    while True:
        try:
            _compat.queue_get(queue_id)
        except _compat.QueueEmpty:
            return


def _dispatch(
    box: _Mailbox, route: Route, request: tuple[Any, ...], deadline: float | None
) -> tuple[Any, ...]:
    """Hand request to the dispatcher threads of route's domain and wait for the reply."""
    try:
        _compat.queue_put(route.inbox_queue, request)
    except _compat.QueueNotFoundError:
        raise AppDomainUnloadedException(
            f"domain {route.interp_id + 1} has been unloaded"
        ) from None
    if not wake(route.inbox_address):
        raise AppDomainUnloadedException(f"domain {route.interp_id + 1} has been unloaded")
    ident = threading.get_ident()
    _waiting[ident] = box.waker.address
    try:
        return box.take(request[2], route.interp_id, deadline)
    finally:
        _waiting.pop(ident, None)


def _decode_error(value: Any) -> BaseException:
    from .marshal import decode_exception

    return decode_exception(value)


def _encode_error(exc: BaseException) -> Any:
    from .marshal import encode_exception

    return encode_exception(exc)


# -- serving ---------------------------------------------------------------------------


def serve(op: str, payload: Any, seq: int, ctx: Any) -> tuple[Any, ...]:
    """Run one request in this domain and build its reply; never raises."""
    if _release_hook is not None and state.route is not None:
        # Counting is cheap; an empty get() would raise, which costs ~2 µs per call.
        if _compat.queue_count(state.route.release_queue):
            _release_hook(state.route.release_queue)
    token = _context.install(ctx)
    try:
        if state.unloading and op not in _control_ops:
            raise AppDomainUnloadedException(f"domain {CURRENT_INTERP + 1} is being unloaded")
        result = _handler(op)(payload)
        return (seq, True, result, _context.collect())
    except BaseException as exc:  # the caller gets every error, aborts included
        if isinstance(exc, ThreadAbortException):
            exc = AppDomainUnloadedException(
                f"domain {CURRENT_INTERP + 1} was unloaded during the call"
            )
        try:
            try:
                return (seq, False, _encode_error(exc), None)
            except ThreadAbortException:
                # Fix (tests/test_domain_unload.py::test_call_blocked_in_channel_torn_down_
                # mid_call_raises): a thread can be aborted twice (Channel raises the abort
                # itself on waking, and unload's asynchronous one may land now): encode again
                # so the caller still gets AppDomainUnloadedException, not a RuntimeError.
                return (seq, False, _encode_error(exc), None)
        except BaseException as inner:  # an error that cannot even be encoded
            return (seq, False, _encode_error(RuntimeError(f"{exc!r} ({inner!r})")), None)
    finally:
        _context.uninstall(token)


# Set by remoting: drains the release queue (kept as a hook so the call path stays generic).
_release_hook: Callable[[int], None] | None = None


def set_release_hook(hook: Callable[[int], None]) -> None:
    """Install the function that processes posted releases before each served call."""
    global _release_hook
    _release_hook = hook


def post(route: Route, op: str, payload: Any) -> bool:
    """Queue op(payload) for route's dispatcher without waiting; False if the domain is gone.

    Nothing comes back, not even an exception: this is for one-way calls.
    """
    try:
        _compat.queue_put(route.inbox_queue, (op, payload, 0, _context.capture(), -1, ""))
    except _compat.QueueNotFoundError:
        return False
    return wake(route.inbox_address)


def _bind(caller_interp: int, queue_id: int, entry_queue: int) -> None:
    state.boxes[(threading.get_ident(), caller_interp)] = queue_id
    state.entry_queues.add(entry_queue)


def _enter(caller_interp: int) -> None:
    """Serve the request waiting on the calling thread's mailbox (fast route, callee side)."""
    ident = threading.get_ident()
    queue_id = state.boxes[(ident, caller_interp)]
    op, payload, seq, ctx = _compat.queue_get(queue_id)
    state.inside.add(ident)
    try:
        reply = serve(op, payload, seq, ctx)
    finally:
        state.inside.discard(ident)
    _compat.queue_put(queue_id, reply)


def install_entry_points() -> None:
    """Expose the fast-route entry points as builtins, where exec'd code finds them."""
    import builtins

    builtins.__appdomain_enter__ = _enter  # type: ignore[attr-defined]
    builtins.__appdomain_bind__ = _bind  # type: ignore[attr-defined]
