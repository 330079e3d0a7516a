"""Name domains of other processes: the process key, and routes that stand for their domains.

A route's numbers (interpreter id, queue ids) mean something only in the process that made
them.  A domain in another process (a process host, a Ray actor) is reached here through a
*foreign route*: a Route whose interpreter id is at or above FOREIGN_BASE and whose queues
belong to the link to that process (``appdomain._hosts``), which carries each request
there and brings the reply back.  The call path treats a foreign route as it treats the
main interpreter's: the request goes on its inbox, the link's thread is woken.

A reference that crosses names its domain by *origin*: the key of the process that owns it
and the route there.  Each interpreter keeps the foreign routes it has met, both ways, so
turning an origin into a route here (and back) is a dictionary look-up after the first time.
"""

from __future__ import annotations

import _socket  # not socket: it costs every new domain ~2 ms (enum, selectors)
import os

from . import _compat
from ._wire import Route

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._wire import Reply, Shareable

    # (process key, the route in that process as a plain tuple)
    type Origin = tuple[str, tuple[int, int, str, int]]

__all__ = [
    "FOREIGN_BASE",
    "GONE",
    "PROCESS_KEY",
    "is_foreign",
    "gone_cause",
    "known_route",
    "origin_of",
    "remember",
    "set_direct",
    "set_resolver",
]

# Interpreter ids of foreign routes start here: far above any real one (CPython counts up
# from 0 and never reuses an id), and within int64, so they still cross as plain ints.
FOREIGN_BASE = 1 << 40

# The key naming this process to others: host name and process id, so that two processes
# of a cluster, or a process and a later one given the same id, never share a key.
# Every interpreter of a process must agree on the key (references name it): the first to
# make one (the main interpreter) leaves it in the environment, which domains created
# afterwards copy; the process id in it tells a key inherited by a child process.
PROCESS_KEY = os.environ.get("APPDOMAIN_PROCESS_KEY", "")
if PROCESS_KEY.split(":")[1:2] != [str(os.getpid())]:
    PROCESS_KEY = (
        f"{_socket.gethostname()}:{os.getpid()}:{int.from_bytes(os.urandom(4), 'big'):08x}"
    )
    os.environ["APPDOMAIN_PROCESS_KEY"] = PROCESS_KEY

# foreign interpreter id -> its origin, and back: what this interpreter has met.
_origins: dict[int, Origin] = {}
_routes: dict[tuple[str, int], Route] = {}

# Fills in a foreign route for an origin this interpreter has not met (the hosts layer sets
# it: in the main interpreter it asks the links, elsewhere the main interpreter).
_resolver: Callable[[str, tuple[int, int, str, int]], Route] | None = None


# Sends a call over a link from the calling thread itself (the hosts layer sets it in the
# main interpreter, which holds the links; other interpreters go through the link's inbox).
direct: Callable[[Route, str, Shareable, Shareable, float | None], Reply] | None = None


def set_direct(
    send: Callable[[Route, str, Shareable, Shareable, float | None], Reply],
) -> None:
    """Install the function that carries this interpreter's calls over a link directly."""
    global direct
    direct = send


def set_resolver(resolver: Callable[[str, tuple[int, int, str, int]], Route]) -> None:
    """Install the function that finds the route for a domain of another process."""
    global _resolver
    _resolver = resolver


def is_foreign(interp_id: int) -> bool:
    """Tell a route to a domain of another process (through a link) from a local one."""
    return interp_id >= FOREIGN_BASE


def remember(route: Route, key: str, origin: tuple[int, int, str, int]) -> None:
    """Note that foreign route stands for the domain at origin in process key."""
    _origins[route[0]] = (key, origin)
    _routes[(key, origin[0])] = route


def origin_of(route: Route) -> Origin:
    """Return the process key and route in that process of the domain route reaches."""
    if route[0] >= FOREIGN_BASE:
        origin = _origins.get(route[0])
        if origin is None:
            raise LookupError(f"no link is known for the foreign route {route!r}")
        return origin
    return (PROCESS_KEY, (route[0], route[1], route[2], route[3]))


def known_route(key: str, origin: tuple[int, int, str, int]) -> Route:
    """Return the route here to the domain at origin in process key (a foreign one if need be)."""
    if key == PROCESS_KEY:
        return Route(*origin)
    route = _routes.get((key, origin[0]))
    if route is not None:
        return route
    if _resolver is None:
        raise LookupError(f"a reference names process {key!r}, which this process has no link to")
    route = _resolver(key, origin)
    remember(route, key, origin)
    return route


# What a dead link leaves on each of its routes' release queues: (GONE, why).
GONE = "gone"


def gone_cause(route: Route, what: str) -> str:
    """Say which domain the foreign route reached and why it went (else: its id, what)."""
    queue_id = route.release_queue
    seen = 0
    try:
        while seen < _compat.queue_count(queue_id):  # look at each item once, putting it back
            item = _compat.queue_get(queue_id)
            seen += 1
            if type(item) is tuple and len(item) == 2 and item[0] == GONE:
                _compat.queue_put(queue_id, item)
                return str(item[1])
    except _compat.QueueError:
        pass
    return f"{route[0] + 1} {what}"
