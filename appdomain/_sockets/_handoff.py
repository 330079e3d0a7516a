"""Hold duplicated socket descriptors until their one rightful claimant takes them.

Two routes share this module (the blob that names them is ``appdomain._socket``'s):

* Same process (another domain of this process): the descriptor goes on a fresh
  low-level cross-interpreter queue as ``(nonce, fd)``.  Queues are process-wide, unlike
  module state, so any interpreter can take the item; a non-blocking get is atomic, so
  exactly one claimant gets it.
* Another process (Linux/macOS): the descriptor stays here, in a table keyed by nonce,
  behind a Unix-socket endpoint (abstract namespace on Linux).  A claimant connects and
  sends the nonce; the endpoint checks the peer's pid against the target's and passes the
  descriptor with SCM_RIGHTS.

Either way an unclaimed handoff expires after its TTL (``DEFAULT_TTL``, 60 s, or the
``ttl`` given to ``duplicate_and_close``) and its descriptor is closed; one serving
thread per interpreter (``_handoff_service``) does the expiring and the answering.

How long the source must live: the source domain (for route a) or process (route b)
must stay alive until the target has claimed, at most the TTL.  When it exits or is
unloaded first, ``_shutdown`` closes every descriptor still pending and later claims
fail with ``HandoffSourceGoneError`` or ``UnknownHandoffError``.  Once ``Socket(info)``
has returned, the source holds nothing and may exit.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import socket

from .._core._compat import (
    QueueEmpty,
    QueueNotFoundError,
    queue_create,
    queue_destroy,
    queue_get,
    queue_put,
)
from .._errors import SocketHandoffError
from ._handoff_service import (
    NONCE_SIZE,
    STATUS_OK,
    STATUS_UNKNOWN,
    STATUS_WRONG_PROCESS,
    _shutdown,
    close_fd,
    expired_count,
    forget_local,
    get_service,
    supports_remote,
    wait_expired,
)

__all__ = [
    "CLAIM_TIMEOUT",
    "DEFAULT_TTL",
    "NONCE_SIZE",
    "HandoffSourceGoneError",
    "SocketInformationFormatError",
    "TargetProcessNotFoundError",
    "UnknownHandoffError",
    "WrongProcessError",
    "_shutdown",
    "claim_local",
    "claim_remote",
    "close_fd",
    "expired_count",
    "offer_local",
    "offer_remote",
    "process_exists",
    "supports_remote",
    "wait_expired",
]

DEFAULT_TTL = 60.0
"""Seconds an unclaimed handoff waits before its descriptor is closed."""

CLAIM_TIMEOUT = 10.0
"""Seconds a cross-process claimant waits for the source's answer."""


class SocketInformationFormatError(SocketHandoffError, ValueError):
    """The SocketInformation bytes are truncated, corrupt or of an unknown version."""


class UnknownHandoffError(SocketHandoffError):
    """No pending handoff matches: it was already claimed, it expired, or it is forged."""


class WrongProcessError(SocketHandoffError, PermissionError):
    """The SocketInformation was made for another process than the claimant."""


class HandoffSourceGoneError(SocketHandoffError, ConnectionError):
    """The source that holds the descriptor is gone (exited, or its domain unloaded)."""


class TargetProcessNotFoundError(SocketHandoffError, ProcessLookupError):
    """The target process does not exist, so nobody could ever claim the socket."""


def process_exists(pid: int) -> bool:
    """Tell whether a process with this id exists (POSIX only: signal 0 probes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just somebody else's
    return True


# ---------------------------------------------------------------- same-process route


def offer_local(fd: int, ttl: float) -> tuple[int, bytes]:
    """Park a descriptor for any domain of this process; return (queue id, nonce)."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    service = get_service()
    queue_id = queue_create()
    try:
        queue_put(queue_id, (nonce, fd))
        service.track_local(queue_id, nonce, ttl)
    except BaseException:
        queue_destroy(queue_id)  # drops the item: the caller closes the descriptor
        raise
    return queue_id, nonce


def claim_local(queue_id: int, nonce: bytes) -> int:
    """Take the descriptor parked under (queue id, nonce); raise if it is not there."""
    try:
        item = queue_get(queue_id)
    except (QueueEmpty, QueueNotFoundError):
        raise UnknownHandoffError(
            f"no pending handoff in queue {queue_id}: the socket was already claimed, "
            f"its handoff expired, or the SocketInformation is forged"
        ) from None
    if item is None:
        # The queue turns an item into None when the interpreter that put it is
        # destroyed; that interpreter's shutdown already closed the descriptor.
        queue_destroy(queue_id)
        raise HandoffSourceGoneError(
            f"the domain that duplicated the socket (queue {queue_id}) was unloaded "
            f"before the socket was claimed"
        )
    got_nonce, fd = item
    if not hmac.compare_digest(got_nonce, nonce):
        # Not ours to take: put it back for the rightful claimant.
        try:
            queue_put(queue_id, item)
        except QueueNotFoundError:
            close_fd(fd)  # its source expired it meanwhile; nobody else can close it
        raise UnknownHandoffError(
            f"the token does not match the handoff in queue {queue_id}: "
            f"the SocketInformation is forged or corrupt"
        )
    queue_destroy(queue_id)
    forget_local(queue_id)  # in case the domain that offered it is the one claiming
    return int(fd)


# ---------------------------------------------------------------- cross-process route


def offer_remote(fd: int, target_pid: int, ttl: float) -> tuple[bytes, bytes]:
    """Hold a descriptor for one other process; return (endpoint address, nonce)."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    address = get_service().track_remote(nonce, fd, target_pid, ttl)
    return address, nonce


def claim_remote(address: bytes, nonce: bytes, timeout: float = CLAIM_TIMEOUT) -> int:
    """Ask the endpoint at address for the descriptor held under nonce; return it."""
    shown = address.lstrip(b"\0").decode("ascii", "replace")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        try:
            conn.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise HandoffSourceGoneError(
                f"handoff endpoint {shown!r} is gone: the source process exited, shut "
                f"its handoff service down, or runs on another machine (sockets cannot "
                f"cross machines) ({exc.strerror})"
            ) from None
        try:
            conn.sendall(nonce)
            msg, fds, _flags, _addr = socket.recv_fds(conn, 1, 1, _RECV_FLAGS)
            # The source closes its copies before its end of the connection: waiting
            # for EOF means that when a claim returns, the source holds nothing more.
            with contextlib.suppress(OSError):
                conn.recv(1)
        except TimeoutError:
            raise HandoffSourceGoneError(
                f"handoff endpoint {shown!r} did not answer within {timeout} s"
            ) from None
        except (ConnectionResetError, BrokenPipeError):
            msg, fds = b"", []
    finally:
        conn.close()
    status = msg[0] if msg else None
    if status == STATUS_OK and len(fds) == 1:
        return fds[0]
    for fd in fds:
        close_fd(fd)
    if status == STATUS_UNKNOWN:
        raise UnknownHandoffError(
            f"handoff endpoint {shown!r} holds no socket for this token: it was already "
            f"claimed, its handoff expired, or the SocketInformation is forged"
        )
    if status == STATUS_WRONG_PROCESS:
        raise WrongProcessError(
            f"handoff endpoint {shown!r} refused process {os.getpid()}: the socket was "
            f"duplicated for another process"
        )
    raise HandoffSourceGoneError(
        f"handoff endpoint {shown!r} closed the connection without an answer "
        f"(status {status!r}, {len(fds)} descriptors)"
    )


# Descriptors received must not leak into children this process spawns later.
_RECV_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
