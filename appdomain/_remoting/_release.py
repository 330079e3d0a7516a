"""Tell owners about dead proxies: queue each release at once, wake each owner lazily.

A proxy's death queues (object id, count) on the owner's release queue right away, so the
owner's reference counts are exact whenever it looks (it drains the queue before serving
each call and before answering live_count).  Waking the owner's dispatcher to drain it is
what costs (~25 µs a release: a datagram, and a thread that takes the owner's GIL), so wakes
are batched: a thread of this domain sends them at most once per WAKE_DELAY seconds per owner.
Passing a callback per call then costs a queue put, not a wake.
"""

from __future__ import annotations

import os
import threading
from _queue import Empty, SimpleQueue  # not queue: it imports heapq and more

from .. import _core
from .._core import CURRENT_INTERP, MAIN_INTERP, Route, wake
from .._core._compat import queue_put
from .._core._foreign import FOREIGN_BASE

__all__ = ["WAKE_DELAY", "arm", "release", "stop"]

# How long a release may wait for its owner to be woken (its queue holds it meanwhile).
WAKE_DELAY = 0.01

_STOP = "stop"
# Owners' wake addresses with releases queued since their last wake.  A plain set: a
# finalizer may call release() while this thread is anywhere, so no lock is taken there
# (set operations are atomic under the GIL).
_armed: set[str] = set()
_signal: SimpleQueue[str | None] = SimpleQueue()  # reentrant, finalizer-safe
_thread: threading.Thread | None = None
_start_lock = threading.Lock()
_stopping = False


def release(route: Route, oid: int, count: int) -> None:
    """Queue the release of count references to oid at its owner (finalizer context)."""
    try:
        # One reference of a domain of this process (the common case) crosses as the bare
        # object id: an int costs the queue half what a tuple does (_server drains both).
        # A link reads its routes' queues as pairs.
        local = count == 1 and route[0] < FOREIGN_BASE
        queue_put(route[3], oid if local else (oid, count))  # its release queue
    except Exception:  # the owner is gone, and its objects with it
        return
    address = route[2]  # its inbox address (indexed: a property costs a Python call)
    if address in _armed:
        return  # a wake is due already; it comes after this put
    if _stopping or not _arm(address):
        wake(address)


def arm(route: Route) -> None:
    """Have route's owner woken within WAKE_DELAY to drain the releases the C switch queued."""
    address = route.inbox_address
    if address in _armed:
        return
    if _stopping or not _arm(address):
        wake(address)


def _arm(address: str) -> bool:
    """Have the waker thread wake address soon; False if it cannot run."""
    if _thread is None and not _start():
        return False
    _armed.add(address)
    _signal.put(None)
    return True


def _start() -> bool:
    global _thread
    # Never block here: release() runs in finalizers, maybe in a thread holding this lock.
    if not _start_lock.acquire(blocking=False):
        return False
    try:
        if _thread is None:
            daemon = CURRENT_INTERP == MAIN_INTERP  # subinterpreters refuse daemon threads
            thread = threading.Thread(target=_run, name="appdomain-release-waker", daemon=daemon)
            if not daemon:
                # Runs before the interpreter joins its non-daemon threads at exit.
                getattr(threading, "_register_atexit")(stop)  # noqa: B009 - no stub
            thread.start()
            _thread = thread
        return True
    except RuntimeError:  # the interpreter is exiting: wake at once instead
        return False
    finally:
        _start_lock.release()


def _run() -> None:
    stopping = threading.Event()
    while True:
        if _signal.get() == _STOP:
            stopping.set()
        else:
            stopping.wait(WAKE_DELAY)  # let more releases gather behind this wake
        while True:
            try:
                if _signal.get_nowait() == _STOP:
                    stopping.set()
            except Empty:
                break
        addresses = list(_armed)
        _armed.difference_update(addresses)  # before waking: a later release re-arms
        for address in addresses:
            wake(address)
        if stopping.is_set():
            return


def stop() -> None:
    """Wake every owner due a wake now and end the waker thread (unload, exit)."""
    global _thread, _stopping
    _stopping = True
    with _start_lock:
        thread, _thread = _thread, None
    if thread is not None:
        _signal.put(_STOP)
        thread.join()
    for address in list(_armed):
        _armed.discard(address)
        wake(address)


_core.unload_hooks.append(stop)


def _after_fork_in_child() -> None:
    global _thread, _start_lock, _signal
    _thread, _start_lock, _signal = None, threading.Lock(), SimpleQueue()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
