"""List what a domain still holds after a test: threads, open sockets, live proxies.

Runs inside the domain being checked (through ``do_callback``), so it imports nothing
heavier than the standard library: the ``appdomain`` fixture must not pay for pytest there.
"""

from __future__ import annotations

import gc
import socket
import threading

__all__ = ["leftovers"]

# appdomain's own threads, which unload stops by itself.
_INTERNAL_THREADS = frozenset(
    {"appdomain-dispatcher", "appdomain-socket-handoff", "appdomain-release-waker"}
)


def leftovers() -> list[str]:
    """Describe each thread, open socket and proxy the test left behind in this domain."""
    from .._core import is_internal
    from .._remoting import live_proxies

    # Unreachable proxies and sockets are not leaks: let their finalizers run first.
    gc.collect()
    found: list[str] = []
    me = threading.current_thread()
    for thread in threading.enumerate():
        if thread is me or thread is threading.main_thread():
            continue
        if thread.name in _INTERNAL_THREADS:
            continue
        if isinstance(thread, threading._DummyThread):
            continue  # a foreign thread merely visiting this domain (a call in progress)
        kind = "daemon thread" if thread.daemon else "thread"
        found.append(f"{kind} {thread.name!r} is still running")
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and not is_internal(obj) and obj.fileno() != -1:
            found.append(f"socket {_describe(obj)} is still open")
    proxies = live_proxies()
    if proxies:
        found.append(f"{proxies} proxy(ies) to objects of other domains are still alive")
    return found


def _describe(sock: socket.socket) -> str:
    try:
        where = sock.getsockname()
    except OSError:
        where = "?"
    return f"fd={sock.fileno()} {sock.family.name}/{sock.type.name} at {where!r}"
