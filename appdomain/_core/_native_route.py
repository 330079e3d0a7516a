"""Carry calls through the C domain switch (``appdomain._native._ext``) when it was built.

The native route switches the calling thread into the target interpreter with a cached
thread state (about 1 µs, versus ~15 µs for ``_interpreters.exec``), works for the main
interpreter too, and lets many threads be inside one domain at once.  Payloads cross as
bytes only: the request and reply tuples are packed with the stdlib ``marshal`` module
(their items are all shareable values), and large buffers travel as separate parts that
the callee reads in place while the caller waits.
"""

from __future__ import annotations

import marshal as _stdlib_marshal
import os

from .._native import _ext as _native  # ImportError: the C switch was not built
from .._native._ext import Closing, NotServed
from . import _context
from ._serve import encode_failure, enter_call, leave_call, serve, state, unloaded

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from collections.abc import Callable
    from typing import Any

    from .._errors import AppDomainUnloadedException
    from ._wire import NativeReply, Reply, Shareable, WireContext

    type Part = bytes | bytearray | memoryview
    # Serves a lean invoke in this domain: invoker(oid, name, args) (remoting's).
    type Invoker = Callable[[int, str, tuple[object, ...]], NativeReply]
    # (proxies, make, settle, home, fast): how lean invokes' references become objects here.
    type RefHooks = tuple[
        dict[Any, Any],
        Callable[[Any], object],
        Callable[[Any], object],
        Callable[[int], object],
        tuple[object, ...] | None,
    ]

__all__ = [
    "BoundMethod",
    "TableLock",
    "apply_releases",
    "available",
    "call",
    "export",
    "lean_ref",
    "method_member",
    "proxy_gone",
    "refresh",
    "refusal",
    "register",
    "release_interp",
    "releases_pending",
    "set_invoke_handler",
    "set_method_hooks",
    "set_proxy_hooks",
    "set_reference_hooks",
    "set_table_hooks",
]

# Buffers at least this large cross as parts of their own instead of inside the packed header.
_PART_MIN = 64 * 1024
_BUFFER = "\0appdomain.part"

_dumps = _stdlib_marshal.dumps
_loads = _stdlib_marshal.loads


def available() -> bool:
    """Tell whether the native route should be used (APPDOMAIN_PURE=1 turns it off)."""
    return not os.environ.get("APPDOMAIN_PURE")


def _split(value: Any, parts: list[Part], depth: int) -> Any:  # Any: type() is checked below
    """Replace large buffers in the top levels of value by (marker, part index)."""
    kind = type(value)
    if kind is bytes or kind is memoryview or kind is bytearray:
        if len(value) >= _PART_MIN:
            parts.append(value)
            return (_BUFFER, len(parts) - 1)
        return value
    if kind is tuple and depth < 4:
        changed = False
        items = []
        for item in value:
            new = _split(item, parts, depth + 1)
            changed = changed or new is not item
            items.append(new)
        return tuple(items) if changed else value
    return value


def _join(value: Any, parts: tuple[memoryview, ...], depth: int) -> Any:
    if type(value) is tuple and depth < 4:
        if len(value) == 2 and value[0] == _BUFFER:
            # The part is a view of the caller's memory, valid only during the call: copy.
            return bytes(parts[value[1]])
        return tuple(_join(item, parts, depth + 1) for item in value)
    return value


# invoke() declines (returns NotImplemented) while the caller carries a logical call context.
_native.set_context_var(_context._data)

# Proxy methods bound and called in C (see _native/method.c and remoting's RemoteMethod).
BoundMethod = _native.BoundMethod
TableLock = _native.TableLock
method_member = _native.method_member
set_method_hooks = _native.set_method_hooks
# By-reference arguments of lean calls (remoting's MarshalByRefObject, _ref_out, _ref_done).
set_reference_hooks = _native.set_reference_hooks
# Proxies' releases (remoting's _proxy and _server): a dead proxy's weak entry calls
# proxy_gone, which queues the release at an owner the switch serves.
set_proxy_hooks = _native.set_proxy_hooks
proxy_gone = _native.proxy_gone
lean_ref = _native.lean_ref
releases_pending = _native.releases_pending
# The object table's common steps in C (remoting's _table: export of an object without a
# lease, the releases queued for this domain).
set_table_hooks = _native.set_table_hooks
export = _native.export
apply_releases = _native.apply_releases


def refusal(error: BaseException, interp_id: int) -> AppDomainUnloadedException | None:
    """Turn the C switch's refusal of a call into the caller's error.

    Returns None when the target takes no native calls (an interpreter appdomain did not
    start): the call then takes the pure route.  Re-raises an error that is no refusal.
    """
    if isinstance(error, NotServed):
        return None
    if isinstance(error, LookupError):
        return unloaded(interp_id)
    if isinstance(error, Closing):
        return unloaded(interp_id, "is being unloaded")
    raise error


def call(interp_id: int, op: str, payload: Shareable, ctx: WireContext) -> Reply | None:
    """Run op(payload) in the interpreter on this thread; None if it takes no native calls."""
    parts: list[Part] = [b""]
    request = (op, _split(payload, parts, 0), ctx, len(parts) > 1)
    parts[0] = _dumps(request)
    try:
        blob = _native.call(interp_id, tuple(parts))
    except (LookupError, NotServed, Closing) as exc:
        error = refusal(exc, interp_id)
        if error is None:
            return None
        raise error from None
    reply: Reply = _loads(blob)
    return reply


def _dispatch(parts: tuple[memoryview, ...]) -> bytes:
    message = _loads(parts[0])
    ident, nested = enter_call()
    try:
        op, payload, ctx, has_parts = message
        if has_parts:
            payload = _join(payload, parts, 0)
        reply = serve(op, payload, 0, ctx)
    finally:
        leave_call(ident, nested)
    try:
        return _dumps(reply)
    except ValueError:  # a value stdlib marshal cannot pack: say so as the call's error
        error = TypeError(f"the reply of {op!r} holds a value that cannot cross: {reply!r:.200}")
        return _dumps((0, False, encode_failure(error), None))


_registered = False
# Set by remoting when it loads: serves invoke(oid, name, args) in this domain, and turns the
# references among its arguments into objects.
_invoker: Invoker | None = None
_refs: RefHooks | None = None


def set_invoke_handler(handler: Invoker, refs: RefHooks | None = None) -> None:
    """Install the function that serves lean invokes, handler(oid, name, args).

    refs, (proxies, make, settle, home, fast), lets their arguments hold references (see
    _native.register_dispatcher).
    """
    global _invoker, _refs
    _invoker, _refs = handler, refs
    refresh()


def refresh() -> None:
    """Register the invoke handler again, metered or not as state.meter now says."""
    # The lean route carries proxy calls without Python: C counts them for a metered caller.
    _native.set_lean_counting(state.meter is not None)
    if _registered and not state.unloading:
        _native.register_dispatcher(_dispatch, _metered_invoker(), _refs)


def _metered_invoker() -> Invoker | None:
    # Lean invokes bypass serve: monitoring wraps their handler instead, so that while it
    # is off they pay nothing.
    if _invoker is None or state.meter is None:
        return _invoker
    return state.meter.wrap_invoker(_invoker)


def register() -> None:
    """Accept native calls into this interpreter."""
    global _registered
    _registered = True
    _native.set_lean_counting(state.meter is not None)
    _native.register_dispatcher(_dispatch, _metered_invoker(), _refs)


def lean_calls() -> int:
    """Return how many proxy calls this interpreter sent by the lean route while metered."""
    return int(_native.lean_calls())


def release_interp(interp_id: int, timeout: float | None = None) -> None:
    """Drop every cached thread state of an interpreter about to be destroyed."""
    _native.release_interp(interp_id, timeout)
