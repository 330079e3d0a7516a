"""Let the threads of this domain that call one target domain take turns on the fast route.

A domain takes one fast-route call at a time (``_interpreters.exec`` refuses a second
thread).  A caller that finds it busy could hand its call to the target's dispatcher
threads, but that costs two thread wake-ups (the dispatcher's, then the caller's), more than
the call; waiting for the running call to end costs one, or none when the lock is free by
the time the caller asks.  So this domain's callers of one target queue on a lock (the
interpreter's own mutex: waiters sleep without the GIL, and one that has waited over a
millisecond is handed the lock directly).

Waiting is bounded, and skipped where it could be a deadlock or pointless: by a thread that
is serving a call here (it may be the callback the running call waits for), and when the
running call has already lasted long (it may block; the dispatcher serves beside it).  In
those cases, and when the wait times out, the caller takes the dispatcher route as before.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Gate", "gate_for"]

# How long a caller waits for its turn before it takes the dispatcher route instead.
WAIT_SECONDS = 2e-3
# A call running longer than this is treated as one that may block: nobody waits for it.
LONG_SECONDS = 1e-3

_clock = time.monotonic


class Gate:
    """The turn of this domain's threads on the fast route into one target domain."""

    __slots__ = ("lock", "since")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since = 0.0  # when the running call took its turn

    def enter(self, wait: bool) -> bool:
        """Take the turn, waiting (if wait) a bounded time; True once taken."""
        lock = self.lock
        if not lock.acquire(blocking=False):
            if not wait or _clock() - self.since > LONG_SECONDS:
                return False
            if not lock.acquire(timeout=WAIT_SECONDS):
                return False
        self.since = _clock()
        return True

    def leave(self) -> None:
        """Give the turn back."""
        self.lock.release()


_gates: dict[int, Gate] = {}


def gate_for(interp_id: int) -> Gate:
    """Return the gate of calls from this domain into interp_id."""
    gate = _gates.get(interp_id)
    if gate is None:
        gate = _gates.setdefault(interp_id, Gate())
    return gate
