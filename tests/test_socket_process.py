"""Cross-process socket duplication through the Unix-socket handoff endpoint."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from appdomain._sockets import _handoff
from appdomain._sockets._socket import (
    HandoffSourceGoneError,
    Socket,
    SocketInformation,
    SocketInformationOptions,
    TargetProcessNotFoundError,
    UnknownHandoffError,
    WrongProcessError,
    duplicate_and_close,
)

# The checkout, for child processes that import appdomain from it.
ROOT = str(Path(__file__).resolve().parents[1])

pytestmark = pytest.mark.skipif(
    sys.platform not in ("linux", "darwin"), reason="the Unix handoff needs peer credentials"
)

# The child reads one blob (hex) from stdin, claims it `claims` times and reports each
# outcome on stdout; a listening socket serves one client, a connected one echoes once.
CHILD = """
import os, sys
from appdomain._sockets._socket import Socket, SocketInformation, SocketInformationOptions as Opt
blob = bytes.fromhex(sys.stdin.readline())
for _ in range(int(sys.argv[1])):
    try:
        info = SocketInformation.from_bytes(blob)
        sock = Socket(info)
    except Exception as exc:
        print(type(exc).__name__, flush=True)
        continue
    print("ok", sock.gettimeout(), flush=True)
    with sock:
        if info.options & Opt.LISTENING:
            conn, _ = sock.accept()
            with conn:
                conn.sendall(b"served by %d" % os.getpid())
        elif info.options & Opt.CONNECTED:
            sock.sendall(b"echo:" + sock.recv(4))
"""


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def spawn(claims: int = 1) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(claims)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(child: subprocess.Popen[str], info: SocketInformation | None) -> list[str]:
    """Send the child its blob (or nothing) and return its report lines."""
    blob = "" if info is None else info.protocol_information.hex()
    out, _ = child.communicate(blob + "\n", timeout=60)
    return out.split("\n")[:-1]


def listener(timeout: float | None = None) -> Socket:
    sock = Socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    sock.settimeout(timeout)
    return sock


def retarget(blob: bytes, pid: int) -> bytes:
    """Rewrite a blob's target pid and fix its checksum, as a forger would."""
    body = blob[:4] + struct.pack("!I", pid) + blob[8:-4]
    return body + struct.pack("!I", zlib.crc32(body))


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    proc = spawn()
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(autouse=True)
def fresh_service() -> Iterator[None]:
    yield
    _handoff._shutdown()


def test_child_claims_a_listening_socket_and_serves_a_client(
    child: subprocess.Popen[str],
) -> None:
    src = listener(timeout=7.5)
    address = src.getsockname()
    info = src.duplicate_and_close(child.pid)
    with socket.create_connection(address, timeout=60) as client:
        # The connection waits in the backlog until the child accepts it.
        child.stdin.write(info.protocol_information.hex() + "\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        assert client.recv(64) == b"served by %d" % child.pid
    assert finish(child, None) == ["ok 7.5"]
    assert info.options == SocketInformationOptions.LISTENING


def test_child_claims_a_connected_socket(child: subprocess.Popen[str]) -> None:
    left, right = socket.socketpair()
    info = duplicate_and_close(left, child.pid)
    with right:
        right.sendall(b"ping")
        assert finish(child, info) == ["ok None"]
        assert right.recv(9) == b"echo:ping"
    assert info.options == SocketInformationOptions.CONNECTED


def test_second_claim_by_the_child_fails() -> None:
    proc = spawn(claims=2)
    src = Socket(socket.AF_INET, socket.SOCK_STREAM)
    info = src.duplicate_and_close(proc.pid)
    assert finish(proc, info) == ["ok None", "UnknownHandoffError"]


def test_claim_by_another_process_is_refused_before_connecting(
    child: subprocess.Popen[str],
) -> None:
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(child.pid)
    with pytest.raises(WrongProcessError, match=f"made for process {child.pid}"):
        Socket(info)
    assert finish(child, info) == ["ok None"]


def test_forged_pid_is_refused_by_the_endpoint(child: subprocess.Popen[str]) -> None:
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(child.pid)
    forged = retarget(info.protocol_information, os.getpid())
    before = open_fds()
    with pytest.raises(WrongProcessError, match="refused process"):
        Socket(SocketInformation.from_bytes(forged))
    assert open_fds() == before
    # The refusal does not consume the handoff: the rightful target still gets it.
    assert finish(child, info) == ["ok None"]


def test_forged_nonce_is_refused(child: subprocess.Popen[str]) -> None:
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(child.pid)
    blob = info.protocol_information
    body = blob[:-20] + bytes(16)
    forged = retarget(body + struct.pack("!I", zlib.crc32(body)), os.getpid())
    with pytest.raises(UnknownHandoffError):
        Socket(SocketInformation.from_bytes(forged))
    assert finish(child, info) == ["ok None"]


def test_expired_handoff_closes_its_descriptor(child: subprocess.Popen[str]) -> None:
    Socket(duplicate_and_close(socket.socket(), os.getpid())).close()  # start the service
    expired = _handoff.expired_count()
    src = listener()
    info = src.duplicate_and_close(child.pid, ttl=0.05)  # opens the endpoint
    before_expiry = open_fds()
    assert _handoff.wait_expired(expired + 1, timeout=10)
    assert len(before_expiry - open_fds()) == 1  # exactly the held descriptor went
    assert finish(child, info) == ["UnknownHandoffError"]


def test_handoff_to_a_dead_target_fails_and_keeps_the_socket() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with listener() as src:
        before = open_fds()
        with pytest.raises(TargetProcessNotFoundError, match=f"process {dead.pid}"):
            src.duplicate_and_close(dead.pid)
        assert src.fileno() != -1
        assert open_fds() == before


def test_target_that_dies_unclaimed_has_its_handoff_expire(
    child: subprocess.Popen[str],
) -> None:
    Socket(duplicate_and_close(socket.socket(), os.getpid())).close()  # start the service
    Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(child.pid, ttl=60)
    before = open_fds()
    expired = _handoff.expired_count()
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(child.pid, ttl=0.05)
    pipes = {str(child.stdin.fileno()), str(child.stdout.fileno())}  # type: ignore[union-attr]
    child.kill()
    child.communicate()
    assert _handoff.wait_expired(expired + 1, timeout=10)
    assert open_fds() == before - pipes
    assert info.options == SocketInformationOptions(0)


def test_claim_after_the_source_shut_down_fails(child: subprocess.Popen[str]) -> None:
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(child.pid)
    _handoff._shutdown()
    assert finish(child, info) == [HandoffSourceGoneError.__name__]


def test_successful_handoffs_do_not_leak_descriptors() -> None:
    before: set[str] = set()
    for attempt in range(4):  # the first one opens the endpoint, which stays open
        if attempt == 1:
            before = open_fds()
        proc = spawn()
        info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(proc.pid)
        assert finish(proc, info) == ["ok None"]
    assert open_fds() == before


# A source process: it hands a connected socket to its parent (the test), prints the
# blob, then waits for one line on stdin before exiting (or exits at once).
SOURCE = """
import os, socket, sys
from appdomain._sockets._socket import duplicate_and_close
left, right = socket.socketpair()
info = duplicate_and_close(left, os.getppid())
print(info.protocol_information.hex(), flush=True)
right.sendall(b"from the source")
if sys.argv[1] == "wait":
    sys.stdin.readline()
"""


def spawn_source(mode: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(
        [sys.executable, "-c", SOURCE, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_this_process_claims_from_a_live_source() -> None:
    source = spawn_source("wait")
    try:
        blob = bytes.fromhex(source.stdout.readline())  # type: ignore[union-attr]
        with Socket(SocketInformation.from_bytes(blob)) as sock:
            assert sock.recv(15) == b"from the source"
    finally:
        source.communicate("\n", timeout=60)


def test_claim_from_a_source_that_exited_fails() -> None:
    source = spawn_source("exit")
    out, _ = source.communicate(timeout=60)
    before = open_fds()
    with pytest.raises(HandoffSourceGoneError, match="is gone"):
        Socket(SocketInformation.from_bytes(bytes.fromhex(out)))
    assert open_fds() == before
