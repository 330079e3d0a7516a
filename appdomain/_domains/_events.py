"""Give domains .NET-style events: handlers added with ``+=`` and removed with ``-=``."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from collections.abc import Callable
    from typing import Any

    # handler(sender, args): users annotate sender as AppDomain, args as their EventArgs.
    Handler = Callable[[Any, Any], object]

__all__ = ["Event", "EventArgs", "UnhandledExceptionEventArgs"]


# Plain classes rather than dataclasses: every new domain imports this module, and
# dataclasses (with inspect) would add several milliseconds to each domain's start.


class EventArgs:
    """Arguments of an event that carries no data."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class UnhandledExceptionEventArgs(EventArgs):
    """What escaped a thread: the exception, and whether the domain goes down with it."""

    __slots__ = ("exception_object", "is_terminating")
    exception_object: BaseException
    is_terminating: bool

    def __init__(self, exception_object: BaseException, is_terminating: bool) -> None:
        self.exception_object = exception_object
        self.is_terminating = is_terminating

    def __repr__(self) -> str:
        return (
            f"UnhandledExceptionEventArgs(exception_object={self.exception_object!r}, "
            f"is_terminating={self.is_terminating!r})"
        )

    @property
    def ExceptionObject(self) -> BaseException:
        return self.exception_object

    @property
    def IsTerminating(self) -> bool:
        return self.is_terminating


class Event:
    """A list of handlers called as handler(sender, args) when the event fires."""

    def __init__(
        self,
        name: str,
        on_first_subscribe: Callable[[], None] | None = None,
        on_last_unsubscribe: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._handlers: list[Handler] = []
        self._on_first_subscribe = on_first_subscribe
        # An event that costs while subscribed (a hook installed) takes it out again.
        self._on_last_unsubscribe = on_last_unsubscribe

    def __iadd__(self, handler: Handler) -> Event:
        if not callable(handler):
            raise TypeError(
                f"'handler' must be callable (got {handler!r} that is a {type(handler).__name__})"
            )
        if not self._handlers and self._on_first_subscribe is not None:
            self._on_first_subscribe()
        self._handlers.append(handler)
        return self

    def __isub__(self, handler: Handler) -> Event:
        # Like a .NET delegate: removing a handler that is not there is not an error.
        for index in range(len(self._handlers) - 1, -1, -1):
            if self._handlers[index] == handler:
                del self._handlers[index]
                if not self._handlers and self._on_last_unsubscribe is not None:
                    self._on_last_unsubscribe()
                break
        return self

    @property
    def handlers(self) -> tuple[Handler, ...]:
        """The subscribed handlers, in order (a snapshot)."""
        return tuple(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def __repr__(self) -> str:
        return f"<Event {self.name} with {len(self._handlers)} handler(s)>"

    def fire(self, sender: object, args: EventArgs) -> list[BaseException]:
        """Call every handler in order; return the exceptions they raised, if any."""
        errors: list[BaseException] = []
        for handler in list(self._handlers):
            try:
                handler(sender, args)
            except Exception as exc:  # one failing handler must not starve the others
                errors.append(exc)
        return errors
