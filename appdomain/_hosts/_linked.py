"""Keep what every domain of another process has: its link, its route here, its end.

``ProcessDomain`` and ``RayDomain`` differ in how their process starts and ends; the rest,
the ``HostedDomain`` the registry holds, is here.
"""

from __future__ import annotations

import threading

from .. import _core
from .._core import Route
from .._domains import _domain, _registry
from .._domains._events import Event
from .._domains._hosting import HostExitedEventArgs
from .._errors import AppDomainUnloadedException
from . import _links
from ._child import UNLOAD_OP
from ._link import Link

__all__ = ["LinkedDomain"]


class LinkedDomain:
    """A domain of another process, reached through a link (a HostedDomain)."""

    host: object
    name: str
    process_id: int
    node: str
    exited: Event
    link: Link
    route: Route

    def __init__(
        self,
        host: object,
        name: str,
        link: Link,
        hello: tuple[str, int, str, tuple[int, int, str, int]],
    ) -> None:
        key, pid, node, origin = hello
        self.host = host
        self.name = name
        self.process_id = pid
        self.node = node
        self.exited = Event("host_exited")
        self.link = link
        self._unloading = False
        _links.add(link)
        self.route = link.route_for(key, origin)
        link.on_close(self._closed)
        link.start()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} in process {self.process_id} on {self.node}>"

    def exit_args(self, cause: str) -> HostExitedEventArgs:
        """Say why the host ended on its own (a process host knows its exit code)."""
        return HostExitedEventArgs(f"domain {self.link.label} {cause}", None, None)

    def end(self, deadline: float) -> None:
        """End the host's process or actor once its unload has run (or its time is up)."""
        raise NotImplementedError

    def _closed(self, cause: str) -> None:
        _links.remove(self.link)
        if self._unloading:
            return
        # It died on its own: an unloaded domain, and its creator hears why.
        domain_id = self.route.interp_id + 1
        _registry.records.pop(domain_id, None)
        args = self.exit_args(cause)
        sender = _domain.handle(domain_id, self.name, self.route)
        if len(self.exited):
            # Not on the link's thread: the calls in flight fail first, whatever handlers do.
            threading.Thread(
                target=self.exited.fire, args=(sender, args), name="appdomain-host-exited"
            ).start()

    def unload(self, timeout: float) -> None:
        """Run the domain's domain_unload there, end its host, and close the link."""
        import time

        self._unloading = True
        deadline = time.monotonic() + timeout
        if self.link.cause is None:
            try:
                _core.call(self.route, UNLOAD_OP, float(timeout), timeout=timeout)
            except (AppDomainUnloadedException, TimeoutError):
                pass  # it went meanwhile, or did not finish in time: it is ended below
        # Ending the host may be seen as its death by another thread first: it was unloaded.
        self.link.ending = "was unloaded"
        self.end(deadline)
        self.link.close("was unloaded")
        self.link.join(2.0)
