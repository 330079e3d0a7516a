"""Same-process socket duplication: the descriptor moves between domains of one process."""

from __future__ import annotations

import errno
import os
import socket
import struct
import zlib
from collections.abc import Iterator

import pytest

from appdomain._sockets import _handoff, _handoff_service
from appdomain._sockets._socket import (
    HandoffSourceGoneError,
    Socket,
    SocketHandoffError,
    SocketInformation,
    SocketInformationFormatError,
    SocketInformationOptions,
    UnknownHandoffError,
    WrongProcessError,
    duplicate_and_close,
)

Opt = SocketInformationOptions


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def listener(timeout: float | None = None) -> Socket:
    sock = Socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    sock.settimeout(timeout)
    return sock


def reforge(blob: bytes, **fields: int) -> bytes:
    """Rewrite header fields of a blob and fix its checksum, as a forger would."""
    names = ["version", "kind", "options", "pid", "family", "type", "proto", "timeout"]
    header = struct.Struct("!BBBxIiiid")
    values = dict(zip(names, header.unpack_from(blob), strict=True))
    values.update(fields)
    body = header.pack(*(values[n] for n in names)) + blob[header.size : -4]
    return body + struct.pack("!I", zlib.crc32(body))


@pytest.fixture(autouse=True)
def warm_service() -> Iterator[None]:
    # The handoff service opens its own fds (wake pipe, selector) on first use; start it
    # up front so fd counts taken in a test only see the sockets under test.
    sock = socket.socket()
    Socket(duplicate_and_close(sock, os.getpid())).close()
    yield


def test_listening_socket_is_rebuilt_and_serves_a_client() -> None:
    src = listener()
    address = src.getsockname()
    info = src.duplicate_and_close(os.getpid())
    with Socket(info) as dst, socket.create_connection(address, timeout=10) as client:
        conn, _ = dst.accept()
        with conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
        assert dst.getsockname() == address
        assert dst.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert info.options == Opt.LISTENING


def test_family_type_proto_are_restored() -> None:
    with Socket(duplicate_and_close(listener(), os.getpid())) as dst:
        assert (dst.family, dst.type, dst.proto) == (
            socket.AF_INET,
            socket.SOCK_STREAM,
            socket.IPPROTO_IP,
        )


@pytest.mark.parametrize(
    ("timeout", "options"),
    [(None, Opt.LISTENING), (0.0, Opt.LISTENING | Opt.NON_BLOCKING), (2.5, Opt.LISTENING)],
)
def test_blocking_mode_and_timeout_are_restored(
    timeout: float | None, options: SocketInformationOptions
) -> None:
    info = listener(timeout).duplicate_and_close(os.getpid())
    with Socket(info) as dst:
        assert info.options == options
        assert dst.gettimeout() == timeout


def test_options_decide_blocking_mode() -> None:
    info = listener(None).duplicate_and_close(os.getpid())
    forced = SocketInformation(info.protocol_information, info.options | Opt.NON_BLOCKING)
    with Socket(forced) as dst:
        assert dst.gettimeout() == 0.0


def test_connected_pair_keeps_connected_state() -> None:
    left, right = socket.socketpair()
    info = duplicate_and_close(left, os.getpid())
    with Socket(info) as moved, right:
        moved.sendall(b"across")
        assert right.recv(6) == b"across"
        assert info.options == Opt.CONNECTED


def test_connected_tcp_socket_keeps_connected_state() -> None:
    with listener() as server:
        client = Socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(server.getsockname())
        conn, _ = server.accept()
        info = client.duplicate_and_close(os.getpid())
        with Socket(info) as moved, conn:
            assert info.options == Opt.CONNECTED
            assert moved.getpeername() == conn.getsockname()


def test_source_socket_is_closed() -> None:
    src = listener()
    src.duplicate_and_close(os.getpid())
    assert src.fileno() == -1


def test_plain_socket_via_module_function() -> None:
    src = socket.socket()
    info = duplicate_and_close(src, os.getpid())
    with Socket(info) as dst:
        assert src.fileno() == -1
        assert isinstance(dst, Socket)


def test_dotnet_alias_duplicates() -> None:
    info = listener().DuplicateAndClose(os.getpid())
    with Socket(info) as dst:
        assert dst.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_accepted_connection_is_a_socket() -> None:
    with listener() as server, socket.create_connection(server.getsockname(), timeout=10):
        conn, _ = server.accept()
        with conn:
            assert isinstance(conn, Socket)


def test_second_claim_fails() -> None:
    info = listener().duplicate_and_close(os.getpid())
    Socket(info).close()
    with pytest.raises(UnknownHandoffError, match="already claimed"):
        Socket(info)


def test_forged_nonce_fails_and_leaves_the_real_handoff_claimable() -> None:
    info = listener().duplicate_and_close(os.getpid())
    blob = info.protocol_information
    forged = blob[:-20] + bytes(16)
    forged += struct.pack("!I", zlib.crc32(forged))
    with pytest.raises(UnknownHandoffError, match="forged"):
        Socket(SocketInformation.from_bytes(forged))
    Socket(info).close()


def forge_queue_id(info: SocketInformation, queue_id: int) -> bytes:
    body = bytearray(info.protocol_information[:-4])
    body[28:36] = struct.pack("!Q", queue_id)
    return bytes(body) + struct.pack("!I", zlib.crc32(body))


def test_forged_queue_id_fails() -> None:
    info = listener().duplicate_and_close(os.getpid())
    forged = forge_queue_id(info, 2**40)
    with pytest.raises(UnknownHandoffError):
        Socket(SocketInformation.from_bytes(forged))
    Socket(info).close()


@pytest.mark.parametrize("queue_id", [2**63, 2**64 - 1])
def test_forged_queue_id_out_of_range_is_a_format_error(queue_id: int) -> None:
    info = listener().duplicate_and_close(os.getpid())
    forged = forge_queue_id(info, queue_id)
    with pytest.raises(SocketInformationFormatError, match=f"queue id {queue_id}"):
        SocketInformation.from_bytes(forged)
    Socket(info).close()


@pytest.mark.parametrize("keep", [0, 1, 10, 31, 40, 55])
def test_truncated_blob_fails(keep: int) -> None:
    info = listener().duplicate_and_close(os.getpid())
    with pytest.raises(SocketInformationFormatError, match="malformed SocketInformation"):
        SocketInformation.from_bytes(info.protocol_information[:keep])
    Socket(info).close()


@pytest.mark.parametrize("index", [1, 2, 5, 9, 21, 30, 50])
def test_corrupt_blob_fails(index: int) -> None:
    info = listener().duplicate_and_close(os.getpid())
    blob = bytearray(info.protocol_information)
    blob[index] ^= 0x5A
    with pytest.raises(SocketInformationFormatError, match="checksum"):
        SocketInformation.from_bytes(bytes(blob))
    Socket(info).close()


def test_unknown_version_fails() -> None:
    info = listener().duplicate_and_close(os.getpid())
    with pytest.raises(SocketInformationFormatError, match="unsupported version 9"):
        SocketInformation.from_bytes(b"\x09" + info.protocol_information[1:])
    Socket(info).close()


def test_corrupt_blob_fails_in_socket_constructor_too() -> None:
    info = listener().duplicate_and_close(os.getpid())
    bad = SocketInformation(info.protocol_information[:-1], info.options)
    with pytest.raises(SocketInformationFormatError):
        Socket(bad)
    Socket(info).close()


def test_unknown_kind_with_valid_checksum_fails() -> None:
    info = listener().duplicate_and_close(os.getpid())
    with pytest.raises(SocketInformationFormatError, match="unknown kind 7"):
        SocketInformation.from_bytes(reforge(info.protocol_information, kind=7))
    Socket(info).close()


def test_blob_for_another_process_is_refused() -> None:
    info = listener().duplicate_and_close(os.getpid())
    other = reforge(info.protocol_information, pid=os.getpid() + 1)
    with pytest.raises(WrongProcessError, match=f"made for process {os.getpid() + 1}"):
        Socket(SocketInformation.from_bytes(other))
    Socket(info).close()


@pytest.mark.parametrize("bad", ["12", 12.0, None, True])
def test_bad_pid_type_fails_and_keeps_the_socket(bad: object) -> None:
    with listener() as src:
        with pytest.raises(TypeError, match=r"'target_pid' must be int or a domain \(got .* that"):
            src.duplicate_and_close(bad)  # type: ignore[arg-type]
        assert src.fileno() != -1


def test_bad_pid_type_message_names_the_value() -> None:
    with listener() as src, pytest.raises(TypeError) as caught:
        src.duplicate_and_close("12")  # type: ignore[arg-type]
    assert str(caught.value) == "'target_pid' must be int or a domain (got '12' that is a str)"


class _DomainElsewhere:
    """What an AppDomain on another machine says of where it runs."""

    process_id = os.getpid()
    node = "another-machine.example"

    def __repr__(self) -> str:
        return "<AppDomain 'Far'>"


def test_a_domain_on_another_machine_is_refused_and_keeps_the_socket() -> None:
    with listener() as src:
        with pytest.raises(SocketHandoffError, match="sockets cannot cross machines") as caught:
            src.duplicate_and_close(_DomainElsewhere())
        assert src.fileno() != -1
    assert str(caught.value).endswith(
        f"<AppDomain 'Far'> runs on 'another-machine.example' (process {os.getpid()}), "
        f"this process on {socket.gethostname()!r}"
    )


def test_a_domain_of_this_machine_names_its_process() -> None:
    class Here(_DomainElsewhere):
        node = socket.gethostname()

    info = listener().duplicate_and_close(Here())
    Socket(info).close()


@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_bad_pid_value_fails(bad: int) -> None:
    with listener() as src, pytest.raises(ValueError, match="'target_pid' must be a process id"):
        src.duplicate_and_close(bad)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_bad_ttl_fails(bad: float) -> None:
    with listener() as src, pytest.raises(ValueError, match="'ttl'"):
        src.duplicate_and_close(os.getpid(), ttl=bad)


def test_closed_socket_fails() -> None:
    src = listener()
    src.close()
    with pytest.raises(SocketHandoffError, match="closed socket") as caught:
        src.duplicate_and_close(os.getpid())
    assert caught.value.errno == errno.EBADF


def test_not_a_socket_fails() -> None:
    with pytest.raises(TypeError, match=r"'sock' must be socket\.socket"):
        duplicate_and_close(3, os.getpid())  # type: ignore[arg-type]


def test_socket_info_with_other_arguments_fails() -> None:
    info = listener().duplicate_and_close(os.getpid())
    with pytest.raises(TypeError, match="no other arguments"):
        Socket(info, socket.SOCK_STREAM)  # type: ignore[call-overload]
    Socket(info).close()


def test_socket_information_is_a_value() -> None:
    info = listener().duplicate_and_close(os.getpid())
    again = SocketInformation.from_bytes(bytearray(info.protocol_information))
    assert again == info
    assert again.ProtocolInformation == info.protocol_information
    assert again.Options is info.options
    Socket(info).close()


def test_socket_information_accepts_int_options() -> None:
    info = SocketInformation(b"x", 5)  # type: ignore[arg-type]
    assert info.options == Opt.NON_BLOCKING | Opt.LISTENING
    assert isinstance(info.options, SocketInformationOptions)


def test_socket_information_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="'protocol_information' must be bytes"):
        SocketInformation("blob", Opt(0))  # type: ignore[arg-type]


def test_from_bytes_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="'data' must be bytes"):
        SocketInformation.from_bytes("blob")  # type: ignore[arg-type]


def test_dotnet_option_names() -> None:
    assert Opt.__members__["NonBlocking"] is Opt.NON_BLOCKING
    assert int(Opt.UseOnlyOverlappedIO) == 8


def test_handoffs_do_not_leak_descriptors() -> None:
    before = open_fds()
    for _ in range(50):
        Socket(listener().duplicate_and_close(os.getpid())).close()
    assert open_fds() == before


def test_failed_claims_do_not_leak_descriptors() -> None:
    info = listener().duplicate_and_close(os.getpid())
    Socket(info).close()
    before = open_fds()
    for _ in range(20):
        with pytest.raises(UnknownHandoffError):
            Socket(info)
    assert open_fds() == before


def test_unclaimed_handoff_expires_and_closes_its_descriptor() -> None:
    before = open_fds()
    expired = _handoff.expired_count()
    info = listener().duplicate_and_close(os.getpid(), ttl=0.05)
    assert _handoff.wait_expired(expired + 1, timeout=10)
    assert open_fds() == before
    with pytest.raises(UnknownHandoffError):
        Socket(info)


def test_shutdown_closes_unclaimed_handoffs() -> None:
    _handoff._shutdown()
    before = open_fds()
    info = listener().duplicate_and_close(os.getpid())
    _handoff._shutdown()
    assert open_fds() == before
    with pytest.raises((UnknownHandoffError, HandoffSourceGoneError)):
        Socket(info)


def test_shutdown_stops_the_serving_thread() -> None:
    listener().duplicate_and_close(os.getpid())
    service = _handoff_service._service
    assert service is not None
    _handoff._shutdown()
    assert not service._thread.is_alive()
