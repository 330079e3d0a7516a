"""Keep this process's links to others, and find the route to a domain of another process.

The main interpreter holds every link: one to each host process or actor it started, and
one to its parent when this process is itself a host.  A domain of this process that meets
a reference to another process's object asks here (``_core._foreign``'s resolver; other
interpreters ask through the ``route`` operation) for a route to it.  A process with no
link of its own to the object's process goes through its parent, which relays.
"""

from __future__ import annotations

import threading

from .. import _core
from .._core import CURRENT_INTERP, MAIN_INTERP, Route
from .._core._foreign import set_direct, set_resolver
from .._domains import _registry, _runtime
from .._errors import AppDomainUnloadedException
from ._link import direct_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._link import Link

    type RouteTuple = tuple[int, int, str, int]

__all__ = ["add", "check_local", "parent", "remove", "resolve", "set_parent"]

_lock = threading.Lock()
_links: dict[str, Link] = {}
_parent: Link | None = None


def add(link: Link) -> None:
    """Register a link to a process this one started."""
    with _lock:
        _links[link.peer_key] = link


def remove(link: Link) -> None:
    """Forget a link that ended."""
    with _lock:
        if _links.get(link.peer_key) is link:
            del _links[link.peer_key]


def set_parent(link: Link) -> None:
    """Register the link to the process that started this one (this process is a host)."""
    global _parent
    _parent = link


def parent() -> Link | None:
    """Return the link to the process that started this one, if it is a host."""
    return _parent


def resolve(key: str, origin: RouteTuple) -> Route:
    """Return a foreign route to the domain at origin in process key."""
    with _lock:
        link = _links.get(key) or _parent
    if link is None:
        raise LookupError(f"a reference names process {key!r}, which this process has no link to")
    return link.route_for(key, origin)


def check_local(origin: RouteTuple) -> Route:
    """Return the route of the domain of this process that origin names, if it is loaded."""
    domain_id = origin[0] + 1
    if origin[0] == CURRENT_INTERP:
        route = _runtime.ensure_started()
    else:
        record = _registry.records.get(domain_id)
        if record is None or record.hosted is not None:
            raise AppDomainUnloadedException(f"domain {domain_id} has been unloaded")
        route = record.route
    if tuple(route) != origin:
        raise AppDomainUnloadedException(f"domain {domain_id} has been unloaded")
    return route


def _op_route(payload: tuple[str, RouteTuple]) -> RouteTuple:
    key, origin = payload
    return (*resolve(key, origin),)


if CURRENT_INTERP == MAIN_INTERP:
    set_resolver(resolve)
    set_direct(direct_call)
_core.register_op(f"{__name__}:route", _op_route)
