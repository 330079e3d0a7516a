"""Serve one interpreter's pending socket handoffs from a thread woken by the OS.

The thread sleeps in ``select`` on a wake socket and (once a cross-process handoff
exists) the Unix-socket endpoint, with a timeout set to the next deadline: it runs only
when a claimant connects, a handoff expires, or an offer needs an earlier wake-up.
It answers claimants (checking the peer's pid, passing the descriptor with SCM_RIGHTS)
and closes what expires.  It is non-daemon (subinterpreters refuse daemon threads) and
``_shutdown``, registered with ``threading._register_atexit``, stops it before the
interpreter joins its threads, closing every descriptor still pending.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import heapq
import hmac
import itertools
import math
import os
import secrets
import selectors
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from .._core import unload_hooks
from .._core._compat import QueueEmpty, QueueNotFoundError, queue_destroy, queue_get, queue_put
from .._errors import SocketHandoffError

__all__ = [
    "NONCE_SIZE",
    "STATUS_OK",
    "STATUS_UNKNOWN",
    "STATUS_WRONG_PROCESS",
    "close_fd",
    "expired_count",
    "forget_local",
    "get_service",
    "peer_pid",
    "reclaim_local",
    "supports_remote",
    "wait_expired",
]

NONCE_SIZE = 16

# A connected claimant that does not send its nonce within this time is dropped, so a
# stalled peer cannot pin a descriptor-table slot in the source.
_REQUEST_TIMEOUT = 5.0

# The endpoint's one-byte answers.
STATUS_OK = 0
STATUS_UNKNOWN = 1
STATUS_WRONG_PROCESS = 2

_LOCAL = 0
_REMOTE = 1

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_PEERPID = struct.Struct("i")
_SOL_LOCAL = 0  # macOS <sys/un.h>; the socket module does not export these
_LOCAL_PEERPID = 2


def close_fd(fd: int) -> None:
    """Close a socket descriptor (a handle on Windows), ignoring one already closed."""
    with contextlib.suppress(OSError):
        _socket.close(fd)


def peer_pid(conn: socket.socket) -> int | None:
    """Return the pid of the process at the other end of a Unix socket, if the OS says."""
    if sys.platform == "linux":
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        return int(_PEERCRED.unpack(raw)[0])
    if sys.platform == "darwin":
        raw = conn.getsockopt(_SOL_LOCAL, _LOCAL_PEERPID, _PEERPID.size)
        return int(_PEERPID.unpack(raw)[0])
    return None


def supports_remote() -> bool:
    """Tell whether this platform can check a claimant's pid (needed for route b)."""
    return sys.platform in ("linux", "darwin")


def reclaim_local(queue_id: int, nonce: bytes) -> None:
    """Close a parked descriptor that nobody claimed, and drop its queue."""
    try:
        item = queue_get(queue_id)
    except QueueEmpty:
        item = None  # claimed meanwhile; the claimant owns the descriptor
    except QueueNotFoundError:
        return
    if item is not None:
        got_nonce, fd = item
        if not hmac.compare_digest(got_nonce, nonce):
            queue_put(queue_id, item)  # not ours (queue ids are not reused, but be sure)
            return
        close_fd(fd)
    queue_destroy(queue_id)


@dataclass(slots=True)
class _Pending:
    fd: int
    target_pid: int
    deadline: float


@dataclass(slots=True)
class _Request:
    deadline: float
    buf: bytes = field(default=b"")


class _Service:
    """Expire this interpreter's handoffs and answer claimants, from one thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local: dict[int, bytes] = {}  # queue id -> nonce
        self._remote: dict[bytes, _Pending] = {}  # nonce -> pending
        self._heap: list[tuple[float, int, int, int | bytes]] = []
        self._seq = itertools.count()
        self._requests: dict[socket.socket, _Request] = {}  # serving thread only
        self._wait_until = math.inf
        self._stopping = False
        self._listener: socket.socket | None = None
        self._listener_registered = False
        self._address = b""
        self._tmpdir: str | None = None
        # A socket pair, not a pipe: Windows can only select on sockets.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        # Non-daemon: subinterpreters refuse daemon threads; _shutdown stops it.
        self._thread = threading.Thread(
            target=self._run, name="appdomain-socket-handoff", daemon=False
        )
        self._thread.start()

    # -- called from any thread

    def track_local(self, queue_id: int, nonce: bytes, ttl: float) -> None:
        """Expire the parked (queue id, nonce) after ttl seconds unless claimed."""
        deadline = time.monotonic() + ttl
        with self._lock:
            self._check_running()
            self._local[queue_id] = nonce
            wake = self._push(deadline, _LOCAL, queue_id)
        if wake:
            self._wake()

    def forget_local(self, queue_id: int) -> None:
        """Stop tracking a parked descriptor that was claimed."""
        with self._lock:
            if self._local.pop(queue_id, None) is not None:
                self._compact()

    def track_remote(self, nonce: bytes, fd: int, target_pid: int, ttl: float) -> bytes:
        """Hold fd for target_pid under nonce; return the endpoint's address."""
        deadline = time.monotonic() + ttl
        with self._lock:
            self._check_running()
            if self._listener is None:
                self._listen()
            self._remote[nonce] = _Pending(fd, target_pid, deadline)
            wake = self._push(deadline, _REMOTE, nonce) or not self._listener_registered
        if wake:
            self._wake()
        return self._address

    def shutdown(self) -> None:
        """Stop the thread, close every descriptor still pending, release the endpoint."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._release(owner=True)

    def abandon(self) -> None:
        """Drop this copy of the service in a forked child (its thread did not survive)."""
        self._lock = threading.Lock()  # the forking thread's copy may be held forever
        self._stopping = True
        self._release(owner=False)

    # -- helpers (lock held)

    def _check_running(self) -> None:
        if self._stopping:
            raise SocketHandoffError("the socket handoff service is shutting down")

    def _push(self, deadline: float, kind: int, key: int | bytes) -> bool:
        heapq.heappush(self._heap, (deadline, next(self._seq), kind, key))
        return deadline < self._wait_until

    def _compact(self) -> None:
        # Claimed entries stay in the heap until their deadline; rebuild it when they
        # dominate, so a busy domain's heap stays proportional to what is pending.
        if len(self._heap) > 1024 and len(self._heap) > 4 * (len(self._local) + len(self._remote)):
            self._heap = [e for e in self._heap if self._is_pending(e[2], e[3])]
            heapq.heapify(self._heap)

    def _is_pending(self, kind: int, key: int | bytes) -> bool:
        return key in (self._local if kind == _LOCAL else self._remote)

    def _listen(self) -> None:
        if not supports_remote():
            raise SocketHandoffError(
                f"handing a socket to another process needs peer credentials "
                f"(Linux or macOS), not available on {sys.platform!r}"
            )
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if sys.platform == "linux":
                # Abstract namespace: no file to clean up, gone when the socket closes.
                name = f"\0appdomain-handoff-{os.getpid()}-{secrets.token_hex(8)}"
                listener.bind(name)
                address = name.encode("ascii")
            else:
                # Short base directory: sun_path is limited to 104 bytes on macOS.
                self._tmpdir = tempfile.mkdtemp(prefix="appdomain-", dir="/tmp")
                os.chmod(self._tmpdir, 0o711)  # claimants may run as other users
                path = os.path.join(self._tmpdir, "handoff.sock")
                listener.bind(path)
                os.chmod(path, 0o777)  # access is checked by pid and nonce instead
                address = os.fsencode(path)
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._address = address

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # -- the serving thread

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                listener = None if self._listener_registered else self._listener
                self._listener_registered = self._listener is not None
                deadline = self._heap[0][0] if self._heap else math.inf
                if self._requests:
                    deadline = min(deadline, next(iter(self._requests.values())).deadline)
                self._wait_until = deadline
            if listener is not None:
                # Registered here, not by the offering thread, so the selector is only
                # ever touched by the thread that waits on it.
                self._selector.register(listener, selectors.EVENT_READ)
            timeout = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
            for key, _events in self._selector.select(timeout):
                sock = key.fileobj
                if sock is self._wake_r:
                    self._drain_wake()
                elif sock is self._listener:
                    self._accept()
                elif isinstance(sock, socket.socket):
                    self._receive(sock)
            self._expire(time.monotonic())

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(512):
                pass

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the claimant sees a reset and may retry
            conn.setblocking(False)
            self._requests[conn] = _Request(time.monotonic() + _REQUEST_TIMEOUT)
            # Claimants send their nonce right after connecting: it is often here
            # already, and answering now saves a trip through select.
            if not self._receive(conn):
                self._selector.register(conn, selectors.EVENT_READ)

    def _receive(self, conn: socket.socket) -> bool:
        """Read what the claimant sent; answer once the nonce is in. Tell if done."""
        request = self._requests[conn]
        try:
            data = conn.recv(NONCE_SIZE - len(request.buf))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if data:
            request.buf += data
            if len(request.buf) < NONCE_SIZE:
                return False
            self._answer(conn, request.buf)
        self._drop(conn)
        return True

    def _answer(self, conn: socket.socket, nonce: bytes) -> None:
        with self._lock:
            pending = self._remote.get(nonce)
        if pending is None:
            status = STATUS_UNKNOWN
        else:
            try:
                pid = peer_pid(conn)
            except OSError:
                pid = None
            status = STATUS_OK if pid == pending.target_pid else STATUS_WRONG_PROCESS
        try:
            if status == STATUS_OK and pending is not None:
                socket.send_fds(conn, [bytes([status])], [pending.fd])
            else:
                conn.send(bytes([status]))
        except OSError:
            return  # the claimant left; a pending handoff stays pending
        if pending is not None and status == STATUS_OK:
            with self._lock:
                del self._remote[nonce]
                self._compact()
            close_fd(pending.fd)  # the target holds its own copy now

    def _drop(self, conn: socket.socket) -> None:
        del self._requests[conn]
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()

    def _expire(self, now: float) -> None:
        fds: list[int] = []
        parked: list[tuple[int, bytes]] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _deadline, _seq, kind, key = heapq.heappop(self._heap)
                if kind == _LOCAL:
                    assert isinstance(key, int)
                    nonce = self._local.pop(key, None)
                    if nonce is not None:
                        parked.append((key, nonce))
                else:
                    assert isinstance(key, bytes)
                    pending = self._remote.pop(key, None)
                    if pending is not None:
                        fds.append(pending.fd)
        for fd in fds:
            close_fd(fd)
        for queue_id, nonce in parked:
            reclaim_local(queue_id, nonce)
        if fds or parked:
            _note_expired(len(fds) + len(parked))
        while self._requests:
            conn, request = next(iter(self._requests.items()))
            if request.deadline > now:
                break
            self._drop(conn)

    def _release(self, *, owner: bool) -> None:
        """Close everything this service holds (its thread must not be running).

        A forked child (not the owner) only closes its copies of the descriptors: the
        parked queue items and the macOS socket file still belong to the parent.
        """
        for conn in list(self._requests):
            conn.close()
        self._requests.clear()
        with self._lock:
            local, self._local = self._local, {}
            remote, self._remote = self._remote, {}
            self._heap.clear()
        for pending in remote.values():
            close_fd(pending.fd)
        if owner:
            for queue_id, nonce in local.items():
                reclaim_local(queue_id, nonce)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._listener is not None:
            self._listener.close()
        if owner and self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


# Expiry is observable so tests (and monitoring) can wait for it instead of sleeping.
_expired_count = 0
_expired_changed = threading.Condition()


def _note_expired(count: int) -> None:
    global _expired_count
    with _expired_changed:
        _expired_count += count
        _expired_changed.notify_all()


def expired_count() -> int:
    """Return how many handoffs of this interpreter have expired unclaimed so far."""
    return _expired_count


def wait_expired(count: int, timeout: float) -> bool:
    """Wait until at least count handoffs have expired in total; tell whether they did."""
    with _expired_changed:
        return _expired_changed.wait_for(lambda: _expired_count >= count, timeout)


def forget_local(queue_id: int) -> None:
    """Tell this interpreter's service (if any) that a parked descriptor was claimed."""
    service = _service
    if service is not None:
        service.forget_local(queue_id)


# One service per interpreter: module state is per interpreter, which is what we want,
# since the serving thread must belong to (and stop with) the domain that offers.
_service: _Service | None = None
_service_lock = threading.Lock()
_atexit_registered = False


def get_service() -> _Service:
    global _service, _atexit_registered
    service = _service
    if service is not None:
        return service
    with _service_lock:
        if _service is None:
            if not _atexit_registered:
                try:
                    # Runs before the interpreter joins non-daemon threads, so the
                    # serving thread never holds up exit or interpreter destruction.
                    getattr(threading, "_register_atexit")(_shutdown)  # noqa: B009 - no stub
                except RuntimeError:
                    raise SocketHandoffError(
                        errno.ESHUTDOWN, "cannot hand off a socket: the interpreter is exiting"
                    ) from None
                _atexit_registered = True
            _service = _Service()
        return _service


def _shutdown() -> None:
    """Stop this interpreter's handoff service, closing every unclaimed descriptor."""
    global _service
    with _service_lock:
        service, _service = _service, None
    if service is not None:
        service.shutdown()


# The serving thread must end before an unloading domain can be joined.
unload_hooks.append(_shutdown)


def _after_fork_in_child() -> None:
    global _service, _service_lock, _expired_changed
    _service_lock = threading.Lock()
    _expired_changed = threading.Condition()
    service, _service = _service, None
    if service is not None:
        service.abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
