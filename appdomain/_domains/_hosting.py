"""Say where a domain runs: the host interface, the subinterpreter host, a host's exit.

A *host* starts a domain and gives back a ``HostedDomain``: the domain's route, where it
runs, how to unload it, and an event for its end.  Everything else a user does with a
domain goes through the route (``_core.call``), whichever host runs it: a subinterpreter's
route reaches it in this process; a process or Ray host's is a *foreign route*, carried by
a link to that process (``appdomain._hosts``).  The subinterpreter host is the default and
this process's own: ``AppDomain.create_domain`` builds its domains itself.
"""

from __future__ import annotations

from ._events import EventArgs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from .._core import Route
    from ._events import Event
    from ._setup import AppDomainSetup

    class HostedDomain(Protocol):
        """A domain some host started: how to reach it, where it is, how to end it."""

        route: Route
        host: object
        process_id: int
        node: str
        exited: Event

        def unload(self, timeout: float) -> None: ...

    class Host(Protocol):
        """What starts domains somewhere (ProcessHost, RayHost)."""

        def start_domain(
            self, name: str, setup: AppDomainSetup, sys_path: list[str]
        ) -> HostedDomain: ...


__all__ = ["HostExitedEventArgs", "SubinterpreterHost", "is_host"]


class SubinterpreterHost:
    """Run a domain as a subinterpreter of this process (the default host)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SubinterpreterHost()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubinterpreterHost)

    def __hash__(self) -> int:
        return hash(SubinterpreterHost)


def is_host(value: object) -> bool:
    """Tell whether value can host a domain (None and SubinterpreterHost: this process)."""
    return (
        value is None
        or isinstance(value, SubinterpreterHost)
        or callable(getattr(value, "start_domain", None))
    )


class HostExitedEventArgs(EventArgs):
    """Why a domain's host ended: its exit code or signal, and the whole cause in words."""

    __slots__ = ("cause", "exit_code", "signal")
    cause: str
    exit_code: int | None
    signal: int | None

    def __init__(self, cause: str, exit_code: int | None, signal: int | None) -> None:
        self.cause = cause
        self.exit_code = exit_code
        self.signal = signal

    def __repr__(self) -> str:
        return (
            f"HostExitedEventArgs(cause={self.cause!r}, exit_code={self.exit_code!r}, "
            f"signal={self.signal!r})"
        )
