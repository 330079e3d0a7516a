"""The call path: run an operation in another domain and bring back its result or its error.

The lowest layer of appdomain above the exception types, the marshalling tiers and the C
switch: it imports nothing from the layers above it (domains, remoting, channels,
sockets, the pytest plugin), which reach it through the names below.

- ``_compat``: every difference between 3.13's backport and 3.14's stdlib.
- ``_wake``: OS wake-ups (named datagram sockets): nothing here polls a queue.
- ``_context``: the logical call context that flows with calls.
- ``_wire``: the shapes of the messages (the one table both sides agree on).
- ``_serve``: the callee side: registered operations, ``serve``, who runs a call here.
- ``_pool``: the dispatcher threads that serve a domain's inbox.
- ``_native_route``: the route through the C switch, when it was built.
- ``_client``: the caller side: ``call`` picks the route; ``post`` for one-way calls.
"""

from ._client import (
    abortable_wait,
    call,
    close_mailboxes,
    native_built,
    native_missing,
    native_module,
    post,
    thread_waker,
    use_native_route,
    wake_waiting_threads,
)
from ._context import CallContext
from ._pool import Pool, fail_pending
from ._serve import (
    CURRENT_INTERP,
    MAIN_INTERP,
    current_route,
    drain_releases,
    encode_error,
    encode_failure,
    enter_call,
    install_entry_points,
    leave_call,
    register_op,
    set_release_hook,
    state,
    unload_hooks,
    unloaded,
)
from ._wake import WakeSocket, is_internal, wake
from ._wire import Route

__all__ = [
    "CURRENT_INTERP",
    "MAIN_INTERP",
    "CallContext",
    "Pool",
    "Route",
    "WakeSocket",
    "abortable_wait",
    "call",
    "close_mailboxes",
    "current_route",
    "drain_releases",
    "encode_error",
    "encode_failure",
    "enter_call",
    "fail_pending",
    "install_entry_points",
    "is_internal",
    "leave_call",
    "native_built",
    "native_missing",
    "native_module",
    "post",
    "register_op",
    "set_release_hook",
    "state",
    "thread_waker",
    "unload_hooks",
    "unloaded",
    "use_native_route",
    "wake",
    "wake_waiting_threads",
]
