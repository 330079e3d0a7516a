"""Serve requests in this domain: the registered operations, and the callee side of every route.

Every route ends here: the fast route's entry point (``_enter``, exec'd by the caller's
thread), the dispatcher threads (``_pool``) and the native switch (``_native_route``) all
hand a request to ``serve``, which runs the operation registered under its name and builds
the reply; it never raises.  Which threads run a call here is kept in one place
(``enter_call``/``leave_call``), since unload aborts exactly those.

An operation is ``handler(payload) -> shareable`` registered with ``register_op``.  Its name
is ``"module:name"`` when a module provides it on first use: a domain that receives such an
operation before it has imported that module imports it then, so a domain nobody sends a
proxy to never loads remoting, and this layer names none of the layers above it.
"""

from __future__ import annotations

import importlib
import threading
import time

from .._errors import AppDomainUnloadedException, ThreadAbortException
from . import _compat, _context
from ._wire import is_request

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections.abc would cost every new domain ~3 ms
    from collections.abc import Callable
    from typing import Any

    from ._meter import Meter
    from ._pool import Pool
    from ._wire import Reply, Request, Route, Shareable, WireContext

    # handler(payload): the payload is the shape its op defines, the result shareable.
    OpHandler = Callable[[Any], Shareable]

__all__ = [
    "CURRENT_INTERP",
    "MAIN_INTERP",
    "call_here",
    "current_route",
    "decode_error",
    "drain_releases",
    "encode_error",
    "encode_failure",
    "enter_call",
    "install_entry_points",
    "leave_call",
    "register_op",
    "serve",
    "set_release_hook",
    "state",
    "unload_hooks",
    "unloaded",
    "visiting",
]

CURRENT_INTERP: int = _compat.current_interp_id()
MAIN_INTERP: int = _compat.main_interp_id()

_ops: dict[str, OpHandler] = {}
# Ops that still run while the domain unloads (the unload itself uses them).
_control_ops: set[str] = set()


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
        # The entry queues of those callers (see _client._Mailbox.entries), for unload.
        self.entry_queues: set[int] = set()
        # Threads currently running a call in this interpreter, on any route: unload
        # aborts these.  Kept by enter_call/leave_call only.
        self.inside: set[int] = set()
        # Threads of this domain blocked waiting for a reply: ident -> wake address.
        self.waiting: dict[int, str] = {}

    route: Route | None = None
    # Set when unload begins: new calls into this domain are refused.
    unloading = False
    # Set once domain_unload handlers have run: this domain's waiting threads abort.
    aborting = False
    pool: Pool | None = None
    # Set while monitoring is on (_meter): the call path counts into it.
    meter: Meter | None = None


state = _State()

# Clean-ups run when this domain's unload begins, after its domain_unload event: the layers
# above register theirs (the socket handoff service, the async executor of remoting).
unload_hooks: list[Callable[[], object]] = []

_get_ident = threading.get_ident
_thread_time_ns = time.thread_time_ns

# The threads of other domains switched in here by the fast route, for the switch: thread
# ident -> the queue of the thread's mailbox in its own domain (destroyed when it ends there).
# By ident, not in a thread local: such a thread gets a new thread state (new locals) on every
# switch, and a local's dict made per switch cost ~2 µs a call; _client keeps its mailbox
# here by ident too (see _client._mailbox).  A thread is in an interpreter once at most (a
# running one takes no fast call), so an ident is listed once.
visiting: dict[int, int] = {}


def current_route() -> Route:
    """Return the route of the domain this code runs in."""
    if state.route is None:
        raise RuntimeError("appdomain is not initialised in this interpreter")
    return state.route


def enter_call() -> tuple[int, bool]:
    """Note that this thread now runs a call here; return (ident, nested) for leave_call."""
    ident = _get_ident()
    inside = state.inside
    nested = ident in inside
    inside.add(ident)
    return ident, nested


def leave_call(ident: int, nested: bool) -> None:
    """Undo enter_call (a nested call leaves the thread inside its outer call)."""
    if not nested:
        state.inside.discard(ident)


def unloaded(interp_id: int, what: str = "has been unloaded") -> AppDomainUnloadedException:
    """Build the error for a call that met an unloaded domain: 'domain N <what>'."""
    return AppDomainUnloadedException(f"domain {interp_id + 1} {what}")


def _handler(op: str) -> OpHandler:
    handler = _ops.get(op)
    if handler is None:
        provider, sep, _ = op.partition(":")
        if sep:
            importlib.import_module(provider)
            handler = _ops.get(op)
        if handler is None:
            raise LookupError(f"no operation {op!r} is registered in this domain")
    return handler


def call_here(op: str, payload: Shareable) -> Shareable:
    """Run op(payload) in this domain directly (a call whose target is the caller's domain)."""
    return _handler(op)(payload)


def serve(op: str, payload: Shareable, seq: int, ctx: WireContext, *, drain: bool = True) -> Reply:
    """Run one request in this domain and build its reply; never raises.

    Releases posted here are applied first, unless drain is False: the caller applies
    them after replying (a dispatcher thread; applying late only keeps objects longer).
    """
    if drain and _release_hook is not None and state.route is not None:
        # Inline (every call passes here): counting is cheap; an empty get() would raise.
        if _compat.queue_count(state.route.release_queue) or (
            _releases_pending is not None and _releases_pending()
        ):
            _release_hook(state.route.release_queue)
    meter = state.meter
    if meter is not None:
        started = _thread_time_ns()
        meter.calls_in += 1
    token = _context.install(ctx)
    try:
        if state.unloading and op not in _control_ops:
            raise unloaded(CURRENT_INTERP, "is being unloaded")
        result = _handler(op)(payload)
        return (seq, True, result, _context.collect())
    except BaseException as exc:  # the caller gets every error, aborts included
        return (seq, False, encode_failure(exc), None)
    finally:
        _context.uninstall(token)
        if meter is not None:
            elapsed = _thread_time_ns() - started
            meter.served_ns += elapsed  # no call in between: no thread switch


def encode_failure(exc: BaseException) -> Shareable:
    """Encode the error a call raised here for its caller; never raises.

    An unload's abort reaches the caller as AppDomainUnloadedException.
    """
    if isinstance(exc, ThreadAbortException):
        exc = unloaded(CURRENT_INTERP, "was unloaded during the call")
    try:
        try:
            return encode_error(exc)
        except ThreadAbortException:
            # Fix (tests/test_domain_unload.py::test_call_blocked_in_channel_torn_down_
            # mid_call_raises): a thread can be aborted twice (Channel raises the abort
            # itself on waking, and unload's asynchronous one may land now): encode again
            # so the caller still gets AppDomainUnloadedException, not a RuntimeError.
            return encode_error(exc)
    except BaseException as inner:  # an error that cannot even be encoded
        return encode_error(RuntimeError(f"{exc!r} ({inner!r})"))


def decode_error(value: Shareable) -> BaseException:
    """Rebuild an error that crossed as encode_error's value."""
    from ..marshal import decode_exception

    return decode_exception(value)


def encode_error(exc: BaseException) -> Shareable:
    """Encode an error to cross to another domain (same type, remote traceback)."""
    from ..marshal import encode_exception

    wire: Shareable = encode_exception(exc)
    return wire


# Set by remoting: drains the release queue (kept as a hook so the call path stays generic).
_release_hook: Callable[[int], None] | None = None
# Set with it: how many releases the C switch holds for this domain (None: no switch).
_releases_pending: Callable[[], int] | None = None


def set_release_hook(hook: Callable[[int], None], pending: Callable[[], int] | None = None) -> None:
    """Install the function that processes posted releases before each served call.

    pending() says how many releases wait elsewhere than on the release queue (the C
    switch's), which the hook drains too.
    """
    global _release_hook, _releases_pending
    _release_hook = hook
    _releases_pending = pending


def drain_releases(*, only_pending: bool = False) -> None:
    """Process the releases posted to this domain, if remoting installed a hook.

    only_pending: call the hook only if some are queued (counting is cheap; an empty
    get() would raise, which costs ~2 µs).
    """
    if _release_hook is None or state.route is None:
        return
    queue_id = state.route.release_queue
    if only_pending and not (
        _compat.queue_count(queue_id) or (_releases_pending is not None and _releases_pending())
    ):
        return
    _release_hook(queue_id)


# -- the fast route's entry points, exec'd in this domain by the calling thread ---------------


def _bind(caller_interp: int, queue_id: int, entry_queue: int) -> None:
    state.boxes[(_get_ident(), caller_interp)] = queue_id
    state.entry_queues.add(entry_queue)


def _enter(caller_interp: int) -> None:
    """Serve the request waiting on the calling thread's mailbox (fast route, callee side)."""
    ident = _get_ident()
    queue_id = visiting[ident] = state.boxes[(ident, caller_interp)]
    try:
        while True:
            request: Request = _compat.queue_get(queue_id)
            if is_request(request):
                break
            # A late reply to a dispatched call the caller gave up on, ahead of its request
            # on the mailbox they share: nobody waits for it any more.
        op, payload, seq, ctx = request
        ident, nested = enter_call()
        try:
            reply = serve(op, payload, seq, ctx)
        finally:
            leave_call(ident, nested)
        _compat.queue_put(queue_id, reply)
    finally:
        del visiting[ident]


def install_entry_points() -> None:
    """Expose the fast-route entry points as builtins, where exec'd code finds them."""
    import builtins

    vars(builtins).update(__appdomain_enter__=_enter, __appdomain_bind__=_bind)
