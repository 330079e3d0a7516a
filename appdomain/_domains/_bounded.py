"""Bound an unload's steps inside a domain, and say who holds a domain's GIL when one is stuck.

A step run inside a domain (``_compat.exec_in``, or the C switch's release of its thread
states) first takes the domain's GIL, and a thread stuck in C code that never releases it
(a catastrophic regex, a ``ctypes.PyDLL`` call blocked in ``read()``) keeps it forever: the
step cannot be interrupted.  So the steps run on a helper thread of the default domain, one
per domain and in order, and the unloader waits for each one only until its deadline.  A
step it gave up on stays blocked until the GIL frees, then runs: the in-domain code claims
a token first (``claims``/``give_up``), so a step nobody waits for any more does nothing,
and the cancel queued after it runs once the GIL is free, leaving the domain usable.

Only the default domain imports this (it is the one that unloads).
"""

from __future__ import annotations

import queue
import sys
import threading
import time

from .._core import _compat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["Stuck", "Step", "claims", "describe_gil", "give_up", "retire", "worker"]


class Stuck(Exception):
    """A step inside the domain did not finish by its deadline (it may still run later)."""


class Step:
    """One submitted step: done once it ran, with its result or its error."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        """Return the step's result, or raise its error (call once done)."""
        if self.error is not None:
            raise self.error
        return self.result


class _Worker:
    """A domain's helper: a daemon thread of the default domain running its steps in order.

    Daemon: a helper blocked on a stuck domain's GIL must not keep the process alive.
    """

    def __init__(self, interp_id: int) -> None:
        self._steps: queue.SimpleQueue[Step | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"appdomain-unload-{interp_id + 1}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while (step := self._steps.get()) is not None:
            try:
                step.result = step.fn()
            except BaseException as exc:  # handed to whoever waits for the step
                step.error = exc
            step.done.set()

    def submit(self, fn: Callable[[], Any]) -> Step:
        step = Step(fn)
        self._steps.put(step)
        return step

    def run(self, fn: Callable[[], Any], deadline: float) -> Any:
        """Run fn on the helper; return its result, or raise Stuck past deadline."""
        step = self.submit(fn)
        if not step.done.wait(max(0.0, deadline - time.monotonic())):
            raise Stuck
        return step.outcome()

    def close(self) -> None:
        self._steps.put(None)


_workers: dict[int, _Worker] = {}
_workers_lock = threading.Lock()


def worker(interp_id: int) -> _Worker:
    """Return the helper running interp_id's unload steps (started on first use)."""
    with _workers_lock:
        found = _workers.get(interp_id)
        if found is None:
            found = _workers[interp_id] = _Worker(interp_id)
        return found


def retire(interp_id: int) -> None:
    """Let the helper of an unloaded domain end."""
    with _workers_lock:
        found = _workers.pop(interp_id, None)
    if found is not None:
        found.close()


# -- tokens: a late step does nothing -------------------------------------------------------


def claims(count: int) -> int:
    """Make a token queue holding count claims: the in-domain step takes one per phase."""
    token = _compat.queue_create()
    for _ in range(count):
        _compat.queue_put(token, 1)
    return token


def give_up(token: int) -> int:
    """Take back every claim the step has not taken and destroy the token; return how many.

    Taking an item is atomic: each phase of the step either ran already or never will.
    """
    left = 0
    while True:
        try:
            _compat.queue_get(token)
        except _compat.QueueError:
            break
        left += 1
    _compat.queue_destroy(token)
    return left


# -- who holds the GIL -------------------------------------------------------------------


def describe_gil(interp_id: int) -> str | None:
    """Say which thread holds the domain's GIL; None when it is free.

    Where the C switch was not built, or on a CPython whose GIL layout it does not know,
    says only that the domain did not respond.
    """
    try:
        from .._native import _ext
    except ImportError:
        return "it did not respond (a thread may hold its GIL in native code)"
    try:
        held = _ext.gil_held(interp_id)
        holder = _ext.gil_holder(interp_id)
    except LookupError:
        return None
    if held is None:
        return "it did not respond (a thread may hold its GIL in native code)"
    if not held:
        return None
    if holder is None:
        return "a thread holds the domain's GIL in native code"
    ident, native_id = holder
    return f"a thread holds the domain's GIL in native code: {_name_thread(ident, native_id)}"


def _name_thread(ident: int, native_id: int) -> str:
    # A thread of this (the default) domain that made a call into the stuck one is known
    # here by name.  (Not its stack: sys._current_frames() reads every interpreter's
    # frames, the stuck one's too, without its GIL, and crashes.)
    active: dict[int, threading.Thread] = getattr(threading, "_active")  # noqa: B009 - no stub
    ours = active.get(ident)  # (no public lookup by ident)
    if ours is not None:
        return f"thread {ours.name!r} (ident {ident}) of the default domain, in a call into it"
    # A thread of the stuck domain: its name lives in that domain's threading module, out
    # of reach while its GIL is held; 3.14 also gives it to the OS thread (15 bytes).
    if sys.version_info >= (3, 14):
        os_name = _os_thread_name(native_id)
        if os_name:
            return f"thread {os_name!r} (ident {ident}, native id {native_id}) of the domain"
    return (
        f"thread ident {ident} (native id {native_id}) of the domain; its name is not known "
        "(Python 3.13 does not name OS threads)"
    )


def _os_thread_name(native_id: int) -> str:
    try:
        with open(f"/proc/self/task/{native_id}/comm", encoding="utf-8") as comm:
            return comm.read().strip()
    except OSError:
        return ""
