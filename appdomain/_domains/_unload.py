"""Tear a domain down for AppDomain.unload: stop its threads, let its callers leave, destroy it.

Runs in the default domain, under the domain's record lock (see ``_registry.unload``).
Any step that cannot finish in time cancels the unload: the domain stays loaded and usable,
and CannotUnloadAppDomainException says why.  Steps that run inside the domain run on its
unload helper (``_bounded``), so a thread holding the domain's GIL cannot hold the unloader
past its deadline.
"""

from __future__ import annotations

import functools
import time

from .. import _core
from .._core import _compat
from .._errors import CannotUnloadAppDomainException
from . import _bounded, _runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._core import Route
    from .._core._wire import Shareable

__all__ = ["tear_down"]

# Run inside the domain by the domain's unload helper (the module named from the imported
# one).  token: see _bounded; deadline: a time.monotonic() value, the same clock there.
_JOIN_SOURCE = (
    f"import {_runtime.__name__} as _rt\n_rt.join_threads(deadline, report, token)\ndel _rt\n"
)
_CANCEL_SOURCE = f"import {_runtime.__name__} as _rt\n_rt.cancel_unload()\ndel _rt\n"


def tear_down(name: str, route: Route, domain_id: int, timeout: float) -> None:
    """Unload the domain of record within timeout seconds, or raise and leave it loaded.

    Every step that runs inside the domain is bounded by the deadline, a thread holding the
    domain's GIL included (see _bounded): past it, the unload is cancelled.
    """
    deadline = time.monotonic() + timeout
    helper = _bounded.worker(route.interp_id)
    _begin(name, route, timeout)
    native = _core.native_built()  # in use or not: a caller may have switched in natively
    if native is not None:
        # Native calls are invisible to the running check below: refuse new ones and
        # wait for those in flight (already aborted) before anything is torn down.  Its
        # deletion of idle thread states switches into the domain: bounded too.
        remaining = max(0.0, deadline - time.monotonic())
        try:
            helper.run(lambda: native.release_interp(route.interp_id, remaining), deadline)
        except TimeoutError:
            _cancel(name, route, "a native call into it is still running", timeout)
        except _bounded.Stuck:
            _cancel_stuck(name, route, "a native call into it is still running", timeout)
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
    _bounded.retire(route.interp_id)


def _begin(name: str, route: Route, timeout: float) -> None:
    """Run the domain's unload_begin (its handlers, then the aborts) on its dispatcher."""
    token = _bounded.claims(1)
    try:
        _core.call(route, "domain.unload_begin", token, timeout=timeout)
    except TimeoutError:
        # Unless it has started, it never will (a late start finds no claim left); one that
        # has started stops short of its aborts once the cancel has run (_runtime's
        # unload generation).
        _bounded.give_up(token)
        _cancel_stuck(name, route, "its domain_unload handlers did not finish", timeout)
    else:
        _compat.queue_destroy(token)


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


# How long past the deadline the unloader waits for a step that bounds itself.
_STEP_GRACE_SECONDS = 0.25


def _join_domain(name: str, route: Route, deadline: float, timeout: float, report: int) -> None:
    helper = _bounded.worker(route.interp_id)
    delay = 0.0005
    while True:
        # Two claims: one to start joining, one to release the domain's resources once
        # joined.  A join that starts after the unload gave up does nothing; one that was
        # joining then stops short of releasing anything (the cancel follows it).
        token = _bounded.claims(2)
        shared: dict[str, Shareable] = {"deadline": deadline, "report": report, "token": token}
        step = helper.submit(
            functools.partial(_compat.exec_in, route.interp_id, _JOIN_SOURCE, shared)
        )
        # The join gives up by itself at the deadline: a little longer, so that its own
        # report (the thread still running) arrives before we call it stuck.
        if not step.done.wait(max(0.0, deadline - time.monotonic()) + _STEP_GRACE_SECONDS):
            if _bounded.give_up(token):
                _cancel_stuck(name, route, "its threads did not stop", timeout)
            step.done.wait()  # it has released the domain's resources: it ends at once
        else:
            _compat.queue_destroy(token)
        try:
            excinfo = step.outcome()
        except _compat.InterpreterError:
            # A thread is still inside on the fast route; it leaves once its abort lands.
            if time.monotonic() >= deadline:
                _cancel(name, route, "a call into it is still running", timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
            continue
        if excinfo is None:
            return
        detail = getattr(excinfo, "msg", "") or "its threads did not stop"
        _cancel(name, route, detail, timeout)


# How long a cancelled unload waits for the domain to serve again, unless its GIL is held.
_CANCEL_GRACE_SECONDS = 5.0


def _cancel_stuck(name: str, route: Route, why: str, timeout: float) -> None:
    """Cancel after a step did not finish: say so, naming a thread holding the GIL if one does."""
    gil = _bounded.describe_gil(route.interp_id)
    if gil is not None:
        why = gil
    _cancel(name, route, why, timeout, wait=gil is None)


def _cancel(name: str, route: Route, why: str, timeout: float, *, wait: bool = True) -> None:
    """Leave the domain loaded and usable, and raise CannotUnloadAppDomainException.

    The cancel runs on the domain's unload helper, after any step still blocked there: when
    a thread holds the domain's GIL it runs once the GIL is free, and wait is False.
    """
    step = _bounded.worker(route.interp_id).submit(lambda: _run_cancel(route, timeout))
    if wait:
        step.done.wait(_CANCEL_GRACE_SECONDS)
    raise CannotUnloadAppDomainException(
        f"domain {name!r} could not be unloaded within {timeout:g} s: {why}; "
        "it is still loaded and usable"
    )


def _run_cancel(route: Route, timeout: float) -> None:
    # Switch in directly when the domain is idle (its dispatcher may already be stopped),
    # else ask its dispatcher; again while both fail (a fast call runs, its pool stopped).
    delay = 0.001
    while _compat.interp_exists(route.interp_id):
        try:
            _compat.exec_in(route.interp_id, _CANCEL_SOURCE)
            return
        except _compat.InterpreterError:
            pass
        try:
            _core.call(route, "domain.unload_cancel", None, timeout=max(timeout, 1.0))
            return
        except TimeoutError:
            pass
        except Exception:  # the domain could not even be told; it stays loaded all the same
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
