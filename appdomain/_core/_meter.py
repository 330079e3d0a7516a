"""Count what a domain serves and sends while monitoring is on (AppDomain.monitoring_is_enabled).

The call path looks at ``state.meter`` once per call and does nothing more while it is
None, which is how monitoring that is off costs (nearly) nothing: one attribute read and
two comparisons per call, measured by bench/bench_plugin_host.py.  While it is set, each
call served here adds the serving thread's CPU time (its own clock, read at entry and
exit) and each call sent from here the CPU time the thread spent in it, so that the
domain's total can leave out what other domains did.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._wire import NativeReply

    type Invoker = Callable[[int, str, tuple[object, ...]], NativeReply]

__all__ = ["Meter"]

_thread_time_ns = time.thread_time_ns


class Meter:
    """This domain's call counts and CPU nanoseconds.

    Plain ints: each update is a read, an add and a store with no call in between, where
    the interpreter never switches threads, so concurrent calls lose no count.
    """

    __slots__ = ("calls_in", "calls_out", "out_ns", "served_ns")

    def __init__(self) -> None:
        self.calls_in = 0  # calls served here, on every route
        self.calls_out = 0  # calls sent from here through _core.call and post
        self.served_ns = 0  # CPU time of the threads while serving those calls
        self.out_ns = 0  # CPU time of the threads while in calls sent from here

    def wrap_invoker(self, invoker: Invoker) -> Invoker:
        """Return the C switch's lean invoke handler, metered (it bypasses serve)."""

        def metered(oid: int, name: str, args: tuple[object, ...]) -> NativeReply:
            started = _thread_time_ns()
            self.calls_in += 1
            try:
                return invoker(oid, name, args)
            finally:
                elapsed = _thread_time_ns() - started
                self.served_ns += elapsed  # no call in between: no thread switch

        return metered
