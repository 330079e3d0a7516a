"""Tear a domain down for AppDomain.unload: stop its threads, let its callers leave, destroy it.

Runs in the default domain, under the domain's record lock (see ``_domain._unload_here``).
Any step that cannot finish in time cancels the unload: the domain stays loaded and usable,
and CannotUnloadAppDomainException says why.
"""

from __future__ import annotations

import time

from .. import _core
from .._core import _compat
from .._errors import CannotUnloadAppDomainException
from . import _runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._core import Route

__all__ = ["tear_down"]

# Run inside the domain by the unloading thread (the module named from the imported one).
_JOIN_SOURCE = f"import {_runtime.__name__} as _rt\n_rt.join_threads(timeout, report)\ndel _rt\n"
_CANCEL_SOURCE = f"import {_runtime.__name__} as _rt\n_rt.cancel_unload()\ndel _rt\n"


def tear_down(name: str, route: Route, domain_id: int, timeout: float) -> None:
    """Unload the domain of record within timeout seconds, or raise and leave it loaded."""
    deadline = time.monotonic() + timeout
    try:
        _core.call(route, "domain.unload_begin", None, timeout=timeout)
    except TimeoutError:
        _cancel(name, route, "its domain_unload handlers did not finish", timeout)
    native = _core.native_built()  # in use or not: a caller may have switched in natively
    if native is not None:
        # Native calls are invisible to the running check below: refuse new ones and
        # wait for those in flight (already aborted) before anything is torn down.
        try:
            native.release_interp(route.interp_id, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            _cancel(name, route, "a native call into it is still running", timeout)
    channels, entry_queues = _wait_until_quiet(name, route, deadline, timeout)
    left = _wait_for_entries(entry_queues, deadline)
    if channels:
        from .._channels._rehome import rehome

        rehome(channels)
    if left:
        _compat.destroy_interp(route.interp_id)
    # else: its threads are stopped and its calls refused; CPython finalizes it at exit.
    for entry_queue in entry_queues:
        _compat.queue_destroy(entry_queue)
    _core.fail_pending(route.inbox_queue, f"domain {domain_id} was unloaded")
    _compat.queue_destroy(route.inbox_queue)
    _compat.queue_destroy(route.release_queue)


def _wait_until_quiet(
    name: str, route: Route, deadline: float, timeout: float
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Join the domain's threads from inside it, retrying while a fast call still runs there.

    Returns the channels the domain sent values to, and the entry queues of the threads
    that switched into it (see _wait_for_entries).
    """
    report = _compat.queue_create()
    try:
        _join_domain(name, route, deadline, timeout, report)
        channels, entry_queues = _compat.queue_get(report)
        return tuple(channels), tuple(entry_queues)
    finally:
        _compat.queue_destroy(report)


# How long a thread may take to finish leaving a domain it no longer runs in: it only has
# to delete its thread state, but on a loaded machine it may wait for a CPU first.
_LEAVE_GRACE_SECONDS = 2.0


def _wait_for_entries(entry_queues: tuple[int, ...], deadline: float) -> bool:
    """Wait until no thread is still leaving the domain after a switch into it.

    A thread whose call was aborted stops running in the domain a moment before its thread
    state there is deleted; destroying the interpreter in between aborts the process.  Each
    switch holds an item on its entry queue until the switch has returned.  Returns False
    if a thread has not left within the grace period (the interpreter must not be destroyed).
    """
    give_up = max(deadline, time.monotonic() + _LEAVE_GRACE_SECONDS)
    delay = 0.0001
    for entry_queue in entry_queues:
        while True:
            try:
                if not _compat.queue_count(entry_queue):
                    break
            except _compat.QueueError:
                break  # its thread's domain is gone, and the thread with it
            if time.monotonic() > give_up:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
    return True


def _join_domain(name: str, route: Route, deadline: float, timeout: float, report: int) -> None:
    delay = 0.0005
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            excinfo = _compat.exec_in(
                route.interp_id, _JOIN_SOURCE, {"timeout": remaining, "report": report}
            )
        except _compat.InterpreterError:
            # A thread is still inside on the fast route; it leaves once its abort lands.
            if remaining <= 0:
                _cancel(name, route, "a call into it is still running", timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
            continue
        if excinfo is None:
            return
        detail = getattr(excinfo, "msg", "") or "its threads did not stop"
        _cancel(name, route, detail, timeout)


def _cancel(name: str, route: Route, why: str, timeout: float) -> None:
    """Leave the domain loaded and usable, and raise CannotUnloadAppDomainException."""
    # Switch in directly when the domain is idle (its dispatcher may already be stopped),
    # else ask its dispatcher.
    try:
        _compat.exec_in(route.interp_id, _CANCEL_SOURCE)
    except _compat.InterpreterError:
        try:
            _core.call(route, "domain.unload_cancel", None, timeout=max(timeout, 1.0))
        except Exception:  # the domain could not even be told; it stays loaded all the same
            pass
    raise CannotUnloadAppDomainException(
        f"domain {name!r} could not be unloaded within {timeout:g} s: {why}; "
        "it is still loaded and usable"
    )
