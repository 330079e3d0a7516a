"""Wake a waiting thread of any interpreter by name, through the operating system.

Each waiter owns a Unix datagram socket bound to a unique name (the abstract namespace
on Linux, a private temporary folder elsewhere).  A wake is one datagram; a waiter
blocks in recv() with its GIL released.  Names rather than descriptor numbers travel
between interpreters on purpose: when a waiter is gone its name vanishes and a late
wake fails with ConnectionRefusedError, whereas a recycled descriptor number could
silently receive bytes meant for someone else.
"""

from __future__ import annotations

# The C module: socket.py would cost every new domain ~2 ms (enum, selectors) for nothing.
import _socket
import os
import sys
import threading
import time
import weakref

from . import _compat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["WakeSocket", "wake", "is_internal", "watch"]


class _Socket(_socket.socket):
    """A C-level socket that weak references can track (the base class takes none)."""

    __slots__ = ("__weakref__",)


_ABSTRACT = sys.platform.startswith("linux")
_tmpdir: str | None = None
_sender: _socket.socket | None = None
_sender_lock = threading.Lock()
# appdomain's own sockets: unload shuts down a domain's sockets, but never these.
_internal: weakref.WeakSet[_socket.socket] = weakref.WeakSet()


def is_internal(sock: _socket.socket) -> bool:
    """Tell whether sock is one of appdomain's own wake sockets."""
    return sock in _internal


def _new_address() -> str:
    global _tmpdir
    token = os.urandom(8).hex()  # not secrets: it costs every new domain ~3 ms to import
    if _ABSTRACT:
        return f"\0appdomain-{os.getpid()}-{token}"
    if _tmpdir is None:
        import tempfile

        _tmpdir = tempfile.mkdtemp(prefix="appdomain-")
    return os.path.join(_tmpdir, token)


class WakeSocket:
    """A named datagram socket that one or more threads block on until woken."""

    __slots__ = ("address", "sock")

    def __init__(self) -> None:
        self.sock = _Socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 20)
        self.address = _new_address()
        self.sock.bind(self.address)
        _internal.add(self.sock)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until woken (True) or until timeout seconds pass (False)."""
        if timeout is None:
            self.sock.settimeout(None)
        else:
            self.sock.settimeout(timeout)
        try:
            self.sock.recv(16)
        except TimeoutError:
            return False
        return True

    def drain(self) -> None:
        """Discard wakes already received without blocking.

        Added for Channel (tests/test_channel.py::test_producer_and_consumer_in_two_domains):
        a waiter that re-checks its condition right after draining loses nothing, and
        stale wakes no longer make it spin.
        """
        sock = self.sock
        sock.settimeout(0.0)  # wait() sets the timeout it needs again
        while True:
            try:
                sock.recv(16)
            except (BlockingIOError, InterruptedError):
                return

    def close(self) -> None:
        """Close the socket; later wakes to its name fail."""
        self.sock.close()
        if not _ABSTRACT:
            try:
                os.unlink(self.address)
            except OSError:
                pass


def wake(address: str) -> bool:
    """Wake one thread waiting at address; return False if nobody listens there any more."""
    global _sender
    sender = _sender
    if sender is None:
        with _sender_lock:
            if _sender is None:
                _sender = _Socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
                _internal.add(_sender)
            sender = _sender
    try:
        # Fix (bench_domains dispatcher run hung in Channel.close): never block.  A waiter
        # whose buffer is full of unread wakes is woken already; a blocking sendto would
        # hang the waker until that thread reads, which may be never.
        sender.sendto(b"!", _socket.MSG_DONTWAIT, address)
    except BlockingIOError:
        return True
    except OSError:  # refused or missing: the waiter is gone
        return False
    return True


# How long a waiter watches its queue before it sleeps in the OS.  Waking a sleeping
# thread costs ~40 µs on a 2-core VM (most of it the idle core waking up); in a
# request/reply exchange the answer usually comes sooner, and a watching thread sees it
# at once.  Like an adaptive mutex: spin briefly, then block.  Useless on one core.
WATCH_SECONDS = 60e-6 if (os.cpu_count() or 1) > 1 else 0.0
# Lets another runnable thread have this core, if one waits for it (POSIX; else a no-op).
_yield: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


def watch(queue_id: int, seconds: float = WATCH_SECONDS) -> bool:
    """Watch a queue for up to seconds without sleeping; True once it holds an item.

    Between looks the watcher yields its core (and its GIL).  On a busy machine the thread
    that will put the item was often woken onto this very core, as the waker's: a watcher
    that only spins keeps it waiting for the whole watch, and the item then needs a wake-up
    as well (a callback ~300-500 µs instead of ~80; one in twenty calls on a shared 2-core VM).
    """
    count = _compat.queue_count
    clock = time.perf_counter
    end = clock() + seconds
    while True:
        if count(queue_id):
            return True
        if clock() >= end:
            return False
        _yield()
