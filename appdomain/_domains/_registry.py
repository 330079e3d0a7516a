"""Keep the default domain's record of the loaded domains: their names, routes and hosts.

The default domain (the main interpreter) creates and unloads every domain, so it alone
holds a ``Record`` for each one loaded; other domains ask it, through the operations
``domain.route``, ``domain.where`` and ``domain.unload`` registered here.  ``_domain``'s
``AppDomain`` handles read it; ``_create`` adds to it.
"""

from __future__ import annotations

import os
import threading

from .. import _core
from .._core import Route, _foreign
from .._errors import AppDomainError, AppDomainUnloadedException
from . import _runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._hosting import HostedDomain

__all__ = [
    "Record",
    "add",
    "default_route",
    "hosted_of",
    "is_foreign_id",
    "loaded_routes",
    "records",
    "route_of",
    "unload",
    "unload_hosted",
    "where",
]


class Record:
    """The default domain's bookkeeping for one loaded domain."""

    __slots__ = ("hosted", "lock", "name", "route", "unloaded")

    def __init__(self, name: str, route: Route, hosted: HostedDomain | None = None) -> None:
        self.name = name
        self.route = route
        self.hosted = hosted  # None: a subinterpreter of this process
        self.lock = threading.Lock()
        self.unloaded = False


# Domain id -> its record, in the default domain only (empty elsewhere).
records: dict[int, Record] = {}


def add(domain_id: int, name: str, route: Route, hosted: HostedDomain | None = None) -> None:
    """Record a domain that has started (on a host other than this process: hosted)."""
    records[domain_id] = Record(name, route, hosted)


def default_route() -> Route:
    """Return the route of the default domain, which keeps the records."""
    route = _runtime.info.default_route
    if route is None:
        raise AppDomainError(
            "this interpreter was not started by appdomain: it has no default domain"
        )
    return route


def route_of(domain_id: int) -> Route:
    """Return where calls into the domain go (asking the default domain from elsewhere)."""
    if _runtime.info.is_default:
        record = records.get(domain_id)
        if record is None:
            raise AppDomainUnloadedException(f"domain {domain_id} has been unloaded")
        return record.route
    return Route(*_core.call(default_route(), "domain.route", domain_id))


def is_foreign_id(domain_id: int) -> bool:
    """Tell whether the domain runs in another process (a process host or a Ray actor)."""
    return _foreign.is_foreign(domain_id - 1)


def hosted_of(domain_id: int) -> HostedDomain | None:
    """Return the hosted domain behind domain_id when this (default) domain created it."""
    record = records.get(domain_id) if _runtime.info.is_default else None
    return None if record is None else record.hosted


def where(domain_id: int) -> tuple[int, str]:
    """Return (process id, node) of the process the domain runs in."""
    hosted = hosted_of(domain_id)
    if hosted is not None:
        return hosted.process_id, hosted.node
    if not is_foreign_id(domain_id):
        return os.getpid(), _this_node()
    pid, node = _core.call(default_route(), "domain.where", domain_id)
    return int(pid), str(node)


def _this_node() -> str:
    import socket  # costs a domain ~2 ms: only when asked

    return socket.gethostname()


def loaded_routes() -> list[Route]:
    """The routes of the domains loaded now, but the default one (for _monitoring)."""
    return [record.route for record in list(records.values())]


def unload(domain_id: int, timeout: float) -> None:
    """Unload the domain from the default domain, once (its record lock orders callers)."""
    record = records.get(domain_id)
    if record is None:
        raise AppDomainUnloadedException(f"domain {domain_id} has already been unloaded")
    with record.lock:
        if record.unloaded:
            raise AppDomainUnloadedException(f"domain {domain_id} has already been unloaded")
        if record.hosted is not None:
            record.hosted.unload(timeout)
        else:
            from . import _unload  # only the default domain unloads: others need not import it

            _unload.tear_down(record.name, record.route, domain_id, timeout)
        record.unloaded = True
        del records[domain_id]
        from . import _shadow

        _shadow.release(domain_id)


def unload_hosted(timeout: float) -> None:
    """Unload the domains on other hosts (their processes end; nothing here waits for them)."""
    for domain_id, record in list(records.items()):
        if record.hosted is not None:
            try:
                unload(domain_id, timeout)
            except AppDomainError:
                pass


def _op_where(domain_id: int) -> tuple[int, str]:
    hosted = hosted_of(domain_id)
    if hosted is None:
        raise AppDomainUnloadedException(f"domain {domain_id} has been unloaded")
    return hosted.process_id, hosted.node


def _op_unload(payload: tuple[int, float]) -> None:
    domain_id, timeout = payload
    unload(domain_id, timeout)


def _op_route(domain_id: int) -> tuple[int, int, str, int]:
    return (*route_of(domain_id),)  # a plain tuple: a Route cannot cross


if _runtime.info.is_default:
    _core.register_op("domain.unload", _op_unload)
    _core.register_op("domain.route", _op_route)
    _core.register_op("domain.where", _op_where)
