"""Carry values between domains through a bounded, closable channel woken by the OS."""

from __future__ import annotations

import time
import weakref

from .. import _core
from .._core import _compat
from .._core._foreign import PROCESS_KEY
from .._core._wake import WATCH_SECONDS, wake, watch
from .._errors import ChannelClosedError, SerializationException
from ._rehome import sent_to

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from collections.abc import Iterator
    from typing import Any, NoReturn

__all__ = ["Channel"]

# A value queued by a domain other than the default one is noted, to outlive its unload.
_REHOME = _core.CURRENT_INTERP != _core.MAIN_INTERP


class Channel:
    """A bounded first-in first-out channel of values that any domain may send to or receive from.

    Values are copied by the marshalling tiers (a MarshalByRefObject crosses as a proxy).
    Blocking operations wait on an OS wake socket, never by polling, and accept fractional
    timeouts.  The channel itself can be passed to other domains, as an argument or with
    ``set_data``; every copy refers to the same channel.
    """

    def __init__(self, maxsize: int = 64) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"'maxsize' must be an int >= 0 (got {maxsize!r}); 0 means unbounded")
        self._maxsize = maxsize
        # items; addresses of blocked receivers; of blocked senders; a marker once closed
        self._queues = (
            _compat.queue_create(maxsize),
            _compat.queue_create(),
            _compat.queue_create(),
            _compat.queue_create(),
        )
        # A queue lives while some interpreter holds a binding on it.
        for queue_id in self._queues:
            _compat.queue_bind(queue_id)
        self._finalizer = weakref.finalize(self, _release, self._queues)

    @classmethod
    def _attach(cls, queues: tuple[int, int, int, int], maxsize: int) -> Channel:
        channel = object.__new__(cls)
        channel._maxsize = maxsize
        channel._queues = queues
        # The binding taken by _reduce for the value in flight now belongs to this copy.
        channel._finalizer = weakref.finalize(channel, _release, queues)
        return channel

    @property
    def maxsize(self) -> int:
        """How many values the channel holds before send() blocks (0: no limit)."""
        return self._maxsize

    @property
    def closed(self) -> bool:
        """Whether close() was called (values already sent can still be received)."""
        try:
            return _compat.queue_count(self._queues[3]) > 0
        except _compat.QueueNotFoundError:
            return True

    def __len__(self) -> int:
        return _compat.queue_count(self._queues[0])

    def send(self, value: object, timeout: float | None = None) -> None:
        """Send a copy of value, waiting up to timeout seconds for room (None: forever)."""
        from ..marshal import to_shareable

        wire = (to_shareable(value, name="value"),)
        items, receivers, senders, _ = self._queues
        deadline = _deadline(timeout)
        while True:
            if self.closed:
                raise ChannelClosedError("send() on a closed channel")
            try:
                _compat.queue_put(items, wire)
            except _compat.QueueFull:
                self._wait(senders, deadline, "send")
                continue
            if _REHOME:
                sent_to.add(items)  # see _rehome
            _wake_all(receivers)
            return

    def recv(self, timeout: float | None = None) -> Any:
        """Receive the next value, waiting up to timeout seconds (None: forever).

        Raises TimeoutError when nothing came in time, ChannelClosedError when the
        channel is closed and empty.
        """
        from ..marshal import from_shareable

        items, receivers, senders, _ = self._queues
        deadline = _deadline(timeout)
        while True:
            try:
                wire = _compat.queue_get(items)
            except _compat.QueueEmpty:
                if self.closed:
                    raise ChannelClosedError("the channel is closed and empty") from None
                if _worth_watching(deadline) and watch(items):
                    continue
                self._wait(receivers, deadline, "recv")
                continue
            if self._maxsize:
                _wake_all(senders)
            return from_shareable(wire[0])

    def _wait(self, waiters: int, deadline: float | None, what: str) -> None:
        # Fix: a wait whose time is already up (timeout=0, or a deadline passed while
        # looping) times out without registering; it used to leave one stale waiter entry
        # per call (millions for a recv(timeout=0) poll loop), all woken on close().
        if deadline is not None and deadline - time.monotonic() <= 0:
            raise TimeoutError(f"{what}() timed out")
        waker = _core.thread_waker()
        _compat.queue_put(waiters, waker.address)
        # The state may have changed between our failed attempt and registering: the
        # caller loops and retries, so a wake that came in between is never lost.
        # Fix (tests/test_channel.py::test_blocked_sender_resumes_when_room_is_made): a
        # wake sent between the caller's failed attempt and the registration above went
        # to nobody, so look again before blocking (the caller loops and retries).
        # Wakes left over from earlier registrations are dropped first (the check below
        # sees whatever they announced): they made receivers spin and re-register.
        waker.drain()
        if self._ready(what):
            return
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"{what}() timed out")
        woken = _core.abortable_wait(waker, remaining)
        if not woken and deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what}() timed out")

    def _ready(self, what: str) -> bool:
        """Tell whether the operation `what` ("send"/"recv") may now succeed or fail at once."""
        if self.closed:
            return True
        count = _compat.queue_count(self._queues[0])
        if what == "recv":
            return count > 0
        return self._maxsize == 0 or count < self._maxsize

    def close(self) -> None:
        """Close the channel: sends fail; receivers drain it, then ChannelClosedError."""
        if not self.closed:
            _compat.queue_put(self._queues[3], True)
        _wake_all(self._queues[1])
        _wake_all(self._queues[2])

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.recv()
            except ChannelClosedError:
                return

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Channel {state} maxsize={self._maxsize} queued={len(self)}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Channel crosses domains through appdomain's marshalling, not pickle")


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError(f"'timeout' must be a number >= 0 or None (got {timeout!r})")
    return time.monotonic() + timeout


def _worth_watching(deadline: float | None) -> bool:
    # Not for polls (timeout=0) and short timeouts: the watch would outlast them.
    return deadline is None or deadline - time.monotonic() > 2 * WATCH_SECONDS


def _wake_all(waiters: int) -> None:
    # Fix (tests/test_channel.py::test_producer_and_consumer_in_two_domains): wake only
    # the waiters registered now.  Draining "until empty" livelocked: each woken receiver
    # finds nothing yet, registers again at once, and this loop never ended.  A waiter
    # registering later re-checks the channel before it blocks (Channel._ready).
    try:
        count = _compat.queue_count(waiters)
    except _compat.QueueNotFoundError:
        return
    for _ in range(count):
        try:
            address = _compat.queue_get(waiters)
        except (_compat.QueueEmpty, _compat.QueueNotFoundError):
            return
        wake(address)


def _release(queues: tuple[int, ...]) -> None:
    for queue_id in queues:
        _compat.queue_release(queue_id)


def _reduce(channel: Channel) -> tuple[int | str, ...]:
    # Bind for the copy in flight, so the queues outlive this side if it is collected first.
    for queue_id in channel._queues:
        _compat.queue_bind(queue_id)
    # Queue ids mean something in this process only: the key lets another refuse them.
    return (PROCESS_KEY, *channel._queues, channel._maxsize)


def _rebuild(data: tuple[str, int, int, int, int, int]) -> Channel:
    if data[0] != PROCESS_KEY:
        raise SerializationException(
            f"a Channel cannot cross to another process (it was made in process "
            f"{data[0]!r}); pass values between processes through a MarshalByRefObject"
        )
    return Channel._attach((data[1], data[2], data[3], data[4]), data[5])


def register() -> None:
    """Teach the marshalling layer to pass channels by reference."""
    from ..marshal import register_reference_type

    register_reference_type(Channel, _reduce, _rebuild)


register()
