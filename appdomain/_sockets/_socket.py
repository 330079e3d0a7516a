"""Duplicate a socket into another domain or process, as .NET's ``DuplicateAndClose``.

``sock.duplicate_and_close(target_pid)`` returns a ``SocketInformation``: a value (bytes
plus flags) to send by any means; ``Socket(info)`` in the target rebuilds the socket.
The target pid picks the route:

* this process's id: any domain (subinterpreter) of this process may claim it, once;
* another process's id (Linux/macOS): that process alone may claim it, once, from a
  Unix-socket endpoint that checks its pid; the source must stay alive until then;
* on Windows, ``socket.share``/``socket.fromshare`` (written, but untested).

An unclaimed handoff expires after ``ttl`` seconds (default 60) and its descriptor is
closed.  The source domain or process must live until the target has claimed (at most
``ttl``): its exit closes what is still pending.

Blob format (all integers big-endian; see ``_encode``)::

    offset size  field
    0      1     version (1)
    1      1     kind: 1 same process, 2 Unix handoff, 3 Windows share
    2      1     SocketInformationOptions bits
    3      1     reserved, 0
    4      4     target pid (u32)
    8      12    family, type, proto (i32 each)
    20     8     timeout (IEEE-754 double; -1.0 means None, i.e. blocking)
    28     ...   route: kind 1: queue id (u64), nonce (16 bytes)
                        kind 2: address length (u16), address, nonce (16 bytes)
                        kind 3: share length (u32), share bytes
    end-4  4     CRC-32 of everything before it

No blob names a descriptor number: claims go through single-use random nonces.
"""

from __future__ import annotations

import enum
import errno
import math
import os
import socket
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

from .._errors import SocketHandoffError
from . import _handoff
from ._handoff import (
    HandoffSourceGoneError,
    SocketInformationFormatError,
    TargetProcessNotFoundError,
    UnknownHandoffError,
    WrongProcessError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Placed(Protocol):
        """A domain, as duplicate_and_close sees one: where it runs (AppDomain has both)."""

        @property
        def process_id(self) -> int: ...
        @property
        def node(self) -> str: ...


__all__ = [
    "Socket",
    "SocketInformation",
    "SocketInformationOptions",
    "duplicate_and_close",
    "HandoffSourceGoneError",
    "SocketHandoffError",
    "SocketInformationFormatError",
    "TargetProcessNotFoundError",
    "UnknownHandoffError",
    "WrongProcessError",
]


class SocketInformationOptions(enum.IntFlag):
    """State of a duplicated socket (values as in .NET's enum of the same name)."""

    NON_BLOCKING = 1
    CONNECTED = 2
    LISTENING = 4
    USE_ONLY_OVERLAPPED_IO = 8

    NonBlocking = NON_BLOCKING
    Connected = CONNECTED
    Listening = LISTENING
    UseOnlyOverlappedIO = USE_ONLY_OVERLAPPED_IO


_ALL_OPTIONS = int(
    SocketInformationOptions.NON_BLOCKING
    | SocketInformationOptions.CONNECTED
    | SocketInformationOptions.LISTENING
    | SocketInformationOptions.USE_ONLY_OVERLAPPED_IO
)


@dataclass(frozen=True, slots=True)
class SocketInformation:
    """The information needed to rebuild a duplicated socket; crosses domains by value."""

    protocol_information: bytes
    options: SocketInformationOptions

    def __post_init__(self) -> None:
        if not isinstance(self.protocol_information, bytes):
            raise TypeError(
                f"'protocol_information' must be bytes "
                f"(got {self.protocol_information!r} that is a "
                f"{type(self.protocol_information).__name__})"
            )
        if not isinstance(self.options, int) or isinstance(self.options, bool):
            raise TypeError(
                f"'options' must be SocketInformationOptions "
                f"(got {self.options!r} that is a {type(self.options).__name__})"
            )
        if not isinstance(self.options, SocketInformationOptions):
            # Plain ints arrive from serializers that flatten IntFlag.
            object.__setattr__(self, "options", SocketInformationOptions(self.options))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Rebuild a SocketInformation from its ``protocol_information`` bytes."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"'data' must be bytes (got {data!r} that is a {type(data).__name__})")
        blob = bytes(data)
        return cls(blob, SocketInformationOptions(_decode(blob).options))

    def __repr__(self) -> str:
        return (
            f"SocketInformation(<{len(self.protocol_information)} bytes>, options={self.options!r})"
        )

    @property
    def ProtocolInformation(self) -> bytes:
        """Alias of ``protocol_information``."""
        return self.protocol_information

    @property
    def Options(self) -> SocketInformationOptions:
        """Alias of ``options``."""
        return self.options


class Socket(socket.socket):
    """A socket that can be duplicated into another domain or process, and rebuilt."""

    def __init__(
        self,
        family: socket.AddressFamily | int | SocketInformation = -1,
        type: socket.SocketKind | int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        if not isinstance(family, SocketInformation):
            super().__init__(family, type, proto, fileno)
            return
        if type != -1 or proto != -1 or fileno is not None:
            raise TypeError("Socket(info) takes no other arguments")
        info = family
        blob = _decode(info.protocol_information)
        fd = _claim(blob)
        try:
            super().__init__(blob.family, blob.type, blob.proto, fd)
        except BaseException:
            _handoff.close_fd(fd)
            raise
        # The options win over the recorded timeout, as .NET's Socket(info) does.
        if info.options & SocketInformationOptions.NON_BLOCKING:
            self.settimeout(0.0)
        else:
            self.settimeout(blob.timeout or None)

    def accept(self) -> tuple[Socket, Any]:
        """Accept a connection; the new connection is a Socket too, so it can be handed off."""
        fd, address = self._accept()  # type: ignore[attr-defined]
        conn = Socket(self.family, self.type, self.proto, fileno=fd)
        # As socket.socket.accept: a listener with a timeout yields a blocking connection.
        if socket.getdefaulttimeout() is None and self.gettimeout():
            conn.setblocking(True)
        return conn, address

    def duplicate_and_close(
        self, target_pid: int | Placed, *, ttl: float | None = None
    ) -> SocketInformation:
        """Hand this socket to target_pid (a domain of this process, or another one).

        target_pid is a process id, or a domain (``AppDomain``: its process_id, after a
        check that it runs on this machine).  Closes this socket and returns the
        SocketInformation the target passes to ``Socket(info)``.  An unclaimed handoff is
        closed after ttl seconds.
        """
        return duplicate_and_close(self, target_pid, ttl=ttl)

    DuplicateAndClose = duplicate_and_close


def duplicate_and_close(
    sock: socket.socket, target_pid: int | Placed, *, ttl: float | None = None
) -> SocketInformation:
    """Hand any socket.socket to target_pid and close it; return its SocketInformation.

    target_pid is a process id, or a domain (its process_id, on this machine only).
    On failure the socket is left open and untouched.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(
            f"'sock' must be socket.socket (got {sock!r} that is a {type(sock).__name__})"
        )
    target_pid = _pid_of(target_pid)
    ttl = _check_ttl(ttl)
    if sock.fileno() == -1:
        raise SocketHandoffError(errno.EBADF, "cannot duplicate a closed socket")
    options = _options_of(sock)
    timeout = sock.gettimeout()
    if target_pid == os.getpid():
        kind, route = _offer_local(sock, ttl)
    elif sys.platform == "win32":
        kind, route = _KIND_WINDOWS, _share(sock, target_pid)
    else:
        kind, route = _offer_remote(sock, target_pid, ttl)
    blob = _encode(kind, options, target_pid, sock, timeout, route)
    sock.close()
    return SocketInformation(blob, options)


# ---------------------------------------------------------------- routes


def _offer_local(sock: socket.socket, ttl: float) -> tuple[int, bytes]:
    fd = _dup(sock)
    try:
        queue_id, nonce = _handoff.offer_local(fd, ttl)
    except BaseException:
        _handoff.close_fd(fd)
        raise
    return _KIND_LOCAL, _QUEUE_ROUTE.pack(queue_id, nonce)


def _offer_remote(sock: socket.socket, target_pid: int, ttl: float) -> tuple[int, bytes]:
    if not _handoff.process_exists(target_pid):
        raise TargetProcessNotFoundError(errno.ESRCH, f"target process {target_pid} does not exist")
    fd = _dup(sock)
    try:
        address, nonce = _handoff.offer_remote(fd, target_pid, ttl)
    except BaseException:
        _handoff.close_fd(fd)
        raise
    return _KIND_UNIX, _LEN16.pack(len(address)) + address + nonce


def _share(sock: socket.socket, target_pid: int) -> bytes:
    # Windows only, and untested: WSADuplicateSocket binds the blob to target_pid, so
    # the OS enforces "that process alone"; it cannot enforce "once" or expiry.
    if sys.platform != "win32":  # pragma: no cover - keeps type checkers on POSIX calm
        raise SocketHandoffError("socket.share is only available on Windows")
    try:
        data = sock.share(target_pid)
    except OSError as exc:
        raise TargetProcessNotFoundError(
            exc.errno, f"cannot share the socket with process {target_pid}: {exc}"
        ) from exc
    return _LEN32.pack(len(data)) + data


def _dup(sock: socket.socket) -> int:
    # _socket.dup is os.dup on POSIX and WSADuplicateSocket on Windows; non-inheritable.
    import _socket

    return int(_socket.dup(sock.fileno()))


def _claim(blob: _Blob) -> int:
    """Take the descriptor a decoded blob names, checking it is meant for us."""
    if blob.target_pid != os.getpid():
        raise WrongProcessError(
            errno.EPERM,
            f"this SocketInformation was made for process {blob.target_pid}, "
            f"not for this process ({os.getpid()})",
        )
    if blob.kind == _KIND_LOCAL:
        return _handoff.claim_local(blob.queue_id, blob.nonce)
    if blob.kind == _KIND_UNIX:
        if sys.platform == "win32":
            raise SocketHandoffError("a Unix-socket handoff cannot be claimed on Windows")
        return _handoff.claim_remote(blob.address, blob.nonce)
    if sys.platform != "win32":
        raise SocketHandoffError(f"a Windows socket share cannot be claimed on {sys.platform!r}")
    return _fromshare(blob.share)  # pragma: no cover - Windows only


def _fromshare(data: bytes) -> int:  # pragma: no cover - Windows only
    if sys.platform != "win32":
        raise SocketHandoffError("socket.fromshare is only available on Windows")
    try:
        return int(socket.fromshare(data).detach())
    except OSError as exc:
        raise UnknownHandoffError(exc.errno, f"Windows refused the socket share: {exc}") from exc


# ---------------------------------------------------------------- state and checks


def _options_of(sock: socket.socket) -> SocketInformationOptions:
    options = SocketInformationOptions(0)
    if sock.gettimeout() == 0.0:
        options |= SocketInformationOptions.NON_BLOCKING
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            options |= SocketInformationOptions.LISTENING
    except (OSError, AttributeError):
        pass  # no SO_ACCEPTCONN here: listening state is still carried by the descriptor
    if not options & SocketInformationOptions.LISTENING:
        try:
            sock.getpeername()
        except OSError:
            pass
        else:
            options |= SocketInformationOptions.CONNECTED
    return options


def _pid_of(target: object) -> int:
    """Return the process id target names: an int, or a domain's (on this machine)."""
    if isinstance(target, int) or not hasattr(target, "process_id"):
        if not isinstance(target, int) or isinstance(target, bool):
            raise TypeError(
                f"'target_pid' must be int or a domain "
                f"(got {target!r} that is a {type(target).__name__})"
            )
        _check_pid(target)
        return target
    pid, node = getattr(target, "process_id"), getattr(target, "node")  # noqa: B009
    here = socket.gethostname()
    if node != here:
        raise SocketHandoffError(
            errno.EXDEV,
            f"sockets cannot cross machines: {target!r} runs on {node!r} "
            f"(process {pid}), this process on {here!r}",
        )
    _check_pid(pid)
    assert isinstance(pid, int)
    return pid


def _check_pid(target_pid: object) -> None:
    if not isinstance(target_pid, int) or isinstance(target_pid, bool):
        raise TypeError(
            f"'target_pid' must be int (got {target_pid!r} that is a {type(target_pid).__name__})"
        )
    if not 0 < target_pid <= 0xFFFFFFFF:
        raise ValueError(f"'target_pid' must be a process id > 0 (got {target_pid!r})")


def _check_ttl(ttl: object) -> float:
    if ttl is None:
        return _handoff.DEFAULT_TTL
    if not isinstance(ttl, int | float) or isinstance(ttl, bool):
        raise TypeError(f"'ttl' must be float (got {ttl!r} that is a {type(ttl).__name__})")
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"'ttl' must be a positive number of seconds (got {ttl!r})")
    return float(ttl)


# ---------------------------------------------------------------- the blob

_VERSION = 1
_KIND_LOCAL = 1
_KIND_UNIX = 2
_KIND_WINDOWS = 3
_KIND_NAMES = {_KIND_LOCAL: "same-process", _KIND_UNIX: "unix-handoff", _KIND_WINDOWS: "windows"}

_HEADER = struct.Struct("!BBBxIiiid")
_QUEUE_ROUTE = struct.Struct(f"!Q{_handoff.NONCE_SIZE}s")
_LEN16 = struct.Struct("!H")
_LEN32 = struct.Struct("!I")
_CRC = struct.Struct("!I")
_NONCE = _handoff.NONCE_SIZE
# The blob carries the queue id in 8 unsigned bytes; the interpreter queues' ids are int64,
# and an id past that range must be refused here: the queue layer overflows (or crashes).
_MAX_QUEUE_ID = 2**63 - 1


class _Blob(NamedTuple):
    kind: int
    options: int
    target_pid: int
    family: int
    type: int
    proto: int
    timeout: float | None
    queue_id: int = 0
    address: bytes = b""
    nonce: bytes = b""
    share: bytes = b""


def _encode(
    kind: int,
    options: int,
    target_pid: int,
    sock: socket.socket,
    timeout: float | None,
    route: bytes,
) -> bytes:
    body = (
        _HEADER.pack(
            _VERSION,
            kind,
            options,
            target_pid,
            int(sock.family),
            int(sock.type),
            sock.proto,
            -1.0 if timeout is None else timeout,
        )
        + route
    )
    return body + _CRC.pack(zlib.crc32(body))


def _corrupt(message: str) -> SocketInformationFormatError:
    return SocketInformationFormatError(f"malformed SocketInformation: {message}")


def _decode(data: bytes) -> _Blob:
    """Parse and validate a blob; raise SocketInformationFormatError on any defect."""
    if not data:
        raise _corrupt("empty")
    if data[0] != _VERSION:
        raise _corrupt(f"unsupported version {data[0]} (expected {_VERSION})")
    minimum = _HEADER.size + _CRC.size
    if len(data) < minimum:
        raise _corrupt(f"truncated to {len(data)} bytes (expected at least {minimum})")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(body) != crc:
        raise _corrupt("checksum mismatch (truncated or corrupt)")
    _v, kind, options, pid, family, type_, proto, timeout = _HEADER.unpack_from(body)
    if kind not in _KIND_NAMES:
        raise _corrupt(f"unknown kind {kind} (expected one of {sorted(_KIND_NAMES)})")
    if options & ~_ALL_OPTIONS:
        raise _corrupt(f"unknown option bits {options:#x}")
    if pid == 0:
        raise _corrupt("target pid 0")
    if not (timeout == -1.0 or (timeout >= 0.0 and math.isfinite(timeout))):
        raise _corrupt(f"timeout {timeout!r} (expected -1 or a finite number >= 0)")
    head = _Blob(kind, options, pid, family, type_, proto, None if timeout == -1.0 else timeout)
    route = body[_HEADER.size :]
    if kind == _KIND_LOCAL:
        if len(route) != _QUEUE_ROUTE.size:
            raise _corrupt(
                f"same-process route of {len(route)} bytes (expected {_QUEUE_ROUTE.size})"
            )
        queue_id, nonce = _QUEUE_ROUTE.unpack(route)
        if queue_id > _MAX_QUEUE_ID:
            raise _corrupt(f"queue id {queue_id} (expected at most {_MAX_QUEUE_ID})")
        return head._replace(queue_id=queue_id, nonce=nonce)
    if kind == _KIND_UNIX:
        if len(route) < _LEN16.size:
            raise _corrupt("unix-handoff route truncated")
        (size,) = _LEN16.unpack_from(route)
        address = route[_LEN16.size : _LEN16.size + size]
        nonce = route[_LEN16.size + size :]
        if not address or len(address) != size or len(nonce) != _NONCE:
            raise _corrupt(
                f"unix-handoff route of {len(route)} bytes does not hold an address of "
                f"{size} bytes and a {_NONCE}-byte nonce"
            )
        return head._replace(address=address, nonce=nonce)
    if len(route) < _LEN32.size:
        raise _corrupt("windows route truncated")
    (size,) = _LEN32.unpack_from(route)
    share = route[_LEN32.size :]
    if not share or len(share) != size:
        raise _corrupt(f"windows share of {len(share)} bytes (expected {size})")
    return head._replace(share=share)
