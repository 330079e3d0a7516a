"""Run appdomain's runtime as a host: the default domain of a process serving its creator.

A host process (``ProcessHost``'s child, a Ray actor) is a default domain of its own: its
main interpreter serves the creator's calls through the link, and it can create
subinterpreter domains inside itself, whose proxies work from the creator too.
"""

from __future__ import annotations

import gc
import socket
import sys
import threading

from .. import _core
from .._core._foreign import PROCESS_KEY
from .._domains import _domain, _registry, _runtime
from .._domains._events import EventArgs
from .._errors import AppDomainError
from .._remoting._proxy import release_all
from . import _frames, _links
from ._lane import LaneListener
from ._link import Link

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._link import Connection

__all__ = ["UNLOAD_OP", "serve_creator"]

# The operation the creator sends to unload this host: domain_unload runs, the domains
# inside unload, then the process ends.
UNLOAD_OP = f"{__name__}:unload"

_unloaded = threading.Event()


def serve_creator(
    conn: Connection, creator_key: str, name: str, lane_key: bytes | None = None
) -> Link:
    """Make this process a host for the creator at the other end of conn; return the link.

    The first frame is HELLO, naming this process, its default domain's route, and where
    the creator's threads open their lanes (with lane_key; none without one).
    """
    _runtime.info.name = name
    route = _runtime.ensure_started()
    link = Link(conn, creator_key, "creator", check_local=_links.check_local)
    # Known as the parent before any request can arrive: one may come right after HELLO.
    _links.set_parent(link)
    address = ""
    if lane_key is not None and sys.platform.startswith("linux"):  # abstract Unix sockets
        listener = LaneListener(link, lane_key)
        link.on_close(lambda cause: listener.close())
        address = listener.address
    hello = (PROCESS_KEY, _pid(), socket.gethostname(), (*route,), address)
    conn.send_bytes(_frames.encode(_frames.HELLO, hello))
    link.start()
    return link


def wait_until_done(link: Link) -> None:
    """Block until the creator unloads this host or goes away."""
    link.closed.wait()


def _pid() -> int:
    import os

    return os.getpid()


def _op_unload(timeout: float) -> None:
    """Run this host's domain_unload, unload the domains inside, then end the link."""
    if _unloaded.is_set():
        return
    _unloaded.set()
    if len(_runtime.domain_unload):
        _runtime.domain_unload.fire(_domain.AppDomain.current_domain, EventArgs())
    for domain_id in list(_registry.records):
        try:
            _registry.unload(domain_id, timeout)
        except AppDomainError:
            pass
    # What this process's proxies hold in other processes: given back before the reply,
    # which the link sends after the releases queued by then.
    gc.collect()
    release_all()
    link = _links.parent()
    if link is not None:
        # After the reply to this call has gone: the reply is sent when this returns.
        threading.Thread(target=_say_bye, args=(link,), name="appdomain-host-bye").start()


def _say_bye(link: Link) -> None:
    link.bye("was unloaded")
    link.close("was unloaded")


_core.register_op(UNLOAD_OP, _op_unload)
