"""Hide the differences between Python 3.13 (PEP 734 backport) and 3.14+ (stdlib).

Everything version-specific about subinterpreters lives here, so the rest of the
package talks to one small, stable surface: create/destroy/exec an interpreter, and
non-blocking put/get on a low-level cross-interpreter queue.  Blocking waits are never
done on queues (their blocking get polls every 10 ms); callers wake each other through
OS primitives (see ``_wake``).
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 13):  # noqa: UP036 - a clear error for old interpreters
    raise ImportError(
        f"appdomain needs Python 3.13 or newer for PEP 734 subinterpreters "
        f"(got {sys.version.split()[0]})"
    )

import _interpqueues
import _interpreters

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types
    from collections.abc import Callable
    from typing import Any

    from ._wire import Shareable

PY314 = sys.version_info >= (3, 14)

# The thread whose exec into another interpreter is slow: on 3.14 each exec made from the
# process's main thread re-reads that thread's stack limits (~130 µs instead of ~10 µs).
# -1 matches no thread.
SLOW_EXEC_THREAD: int = -1
if PY314:
    import _thread

    SLOW_EXEC_THREAD = getattr(_thread, "_get_main_thread_ident")()  # noqa: B009 - no stub

InterpreterError = _interpreters.InterpreterError
InterpreterNotFoundError = _interpreters.InterpreterNotFoundError
QueueError = _interpqueues.QueueError
QueueNotFoundError = _interpqueues.QueueNotFoundError

# When the interpreter that put an item is destroyed, the item is removed from the
# queue (rather than turned into an "unbound" marker): a dead domain's messages are moot.
# (CPython's flag values: 1 remove, 2 error, 3 replace with UNBOUND.)
_UNBOUND_REMOVE = 1


def current_interp_id() -> int:
    """Return the id of the interpreter running this code."""
    return int(_interpreters.get_current()[0])


def main_interp_id() -> int:
    """Return the id of the main interpreter."""
    return int(_interpreters.get_main()[0])


def create_interp() -> int:
    """Create an isolated interpreter (own GIL) and return its id."""
    return int(_interpreters.create("isolated"))


def destroy_interp(interp_id: int) -> None:
    """Destroy an idle interpreter; raise InterpreterError if it is running."""
    _interpreters.destroy(interp_id)


def interp_is_running(interp_id: int) -> bool:
    """Tell whether some thread runs in the interpreter (False if it no longer exists)."""
    try:
        return bool(_interpreters.is_running(interp_id))
    except InterpreterNotFoundError:
        return False


def interp_exists(interp_id: int) -> bool:
    """Tell whether an interpreter with this id still exists."""
    try:
        _interpreters.is_running(interp_id)
    except InterpreterNotFoundError:
        return False
    return True


def exec_in(
    interp_id: int,
    code: str | types.CodeType | Callable[[], object],
    shared: dict[str, Shareable] | None = None,
) -> types.SimpleNamespace | None:
    """Run code (source, or a no-argument function's code) in the interpreter's __main__.

    Returns None on success, or the excinfo namespace describing the uncaught exception.
    Raises InterpreterError when the interpreter is busy running another thread's code.
    """
    if shared:
        return _interpreters.exec(interp_id, code, shared)
    return _interpreters.exec(interp_id, code)


# The queue module's arguments changed order in 3.14, and its stub knows one version: named
# once as plain callables, each call below is checked by its own version's arguments.
_create: Callable[..., int] = _interpqueues.create
_put: Callable[..., None] = _interpqueues.put


def queue_create(maxsize: int = 0) -> int:
    """Create a low-level cross-interpreter queue (0: unbounded); return its id."""
    if PY314:
        return int(_create(maxsize, _UNBOUND_REMOVE, 0))
    return int(_create(maxsize, 0, _UNBOUND_REMOVE))


class QueueEmpty(QueueError):
    """Nothing was waiting on the queue."""


class QueueFull(QueueError):
    """The bounded queue has no room."""


class _QueueHandle:
    """The class _interpqueues builds when a queue object crosses (appdomain passes ids)."""

    def __init__(self, id: int) -> None:
        self.id = id


# The C module raises the exception types some Python module registered with it (without
# any, 3.13 imports test.support on the first empty get).  Registering our own spares every
# domain the stdlib's high-level queues module, which imports pickle, re and queue (~5 ms).
# Whoever registers last wins, so the wrappers below do not rely on the exact types.
getattr(_interpqueues, "_register_heap_types")(_QueueHandle, QueueEmpty, QueueFull)  # noqa: B009


def queue_put(queue_id: int, obj: Shareable) -> None:
    """Put a shareable object on the queue without blocking; raise QueueFull if full."""
    try:
        if PY314:
            _put(queue_id, obj, _UNBOUND_REMOVE, 0)
        else:
            _put(queue_id, obj, 0, _UNBOUND_REMOVE)
    except QueueNotFoundError:
        raise
    except QueueError:
        raise QueueFull from None


def queue_count(queue_id: int) -> int:
    """Return how many items wait on the queue."""
    return int(_interpqueues.get_count(queue_id))


def queue_get(queue_id: int) -> Any:
    """Take the next object from the queue without blocking; raise QueueEmpty if none."""
    try:
        item = _interpqueues.get(queue_id)
    except QueueNotFoundError:
        raise
    except QueueError:
        raise QueueEmpty from None
    return item[0]


def queue_bind(queue_id: int) -> None:
    """Hold a reference to the queue from this interpreter."""
    _interpqueues.bind(queue_id)


def queue_release(queue_id: int) -> None:
    """Drop this interpreter's reference to the queue."""
    try:
        _interpqueues.release(queue_id)
    except QueueError:
        pass


def queue_destroy(queue_id: int) -> None:
    """Destroy the queue; pending items are dropped."""
    try:
        _interpqueues.destroy(queue_id)
    except QueueError:
        pass
