"""Same-process socket duplication into, and out of, a real subinterpreter."""

from __future__ import annotations

import _interpreters
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appdomain._core._compat import queue_create, queue_destroy, queue_get
from appdomain._sockets._socket import (
    Socket,
    SocketHandoffError,
    SocketInformation,
    UnknownHandoffError,
    duplicate_and_close,
)

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")

# The checkout, for child processes that import appdomain from it.
ROOT = str(Path(__file__).resolve().parents[1])

PRELUDE = f"import sys\nif {ROOT!r} not in sys.path: sys.path.insert(0, {ROOT!r})\n"

SERVE_ONE = (
    PRELUDE
    + """
from appdomain._sockets._socket import Socket, SocketInformation
with Socket(SocketInformation.from_bytes(blob)) as server:
    conn, _ = server.accept()
    with conn:
        conn.sendall(b"pong:" + conn.recv(4))
"""
)

OFFER_TO_MAIN = (
    PRELUDE
    + """
import os, socket
from appdomain._core._compat import queue_put
from appdomain._sockets._socket import Socket
sock = Socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(5)
info = sock.duplicate_and_close(os.getpid())
queue_put(qid, info.protocol_information)
"""
)

CLAIM = (
    PRELUDE
    + """
from appdomain._sockets._socket import Socket, SocketInformation
Socket(SocketInformation.from_bytes(blob)).close()
"""
)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def run(interp: int, code: str, shared: dict[str, Any]) -> None:
    excinfo = _interpreters.exec(interp, code, shared)
    assert excinfo is None, excinfo.formatted


@pytest.fixture
def interp() -> Iterator[int]:
    interp_id = _interpreters.create()
    try:
        yield interp_id
    finally:
        _interpreters.destroy(interp_id)


@pytest.fixture
def queue() -> Iterator[int]:
    queue_id = queue_create()
    yield queue_id
    queue_destroy(queue_id)


@pytest.fixture(autouse=True)
def warm_service() -> Iterator[None]:
    Socket(duplicate_and_close(socket.socket(), os.getpid())).close()
    yield


def test_subinterpreter_claims_a_listening_socket_and_serves(interp: int) -> None:
    src = Socket(socket.AF_INET, socket.SOCK_STREAM)
    src.bind(("127.0.0.1", 0))
    src.listen(5)
    address = src.getsockname()
    info = src.duplicate_and_close(os.getpid())
    # The connection completes in the backlog, so the domain can accept it later.
    with socket.create_connection(address, timeout=10) as client:
        client.sendall(b"ping")
        run(interp, SERVE_ONE, {"blob": info.protocol_information})
        assert client.recv(9) == b"pong:ping"


def test_claim_in_main_after_subinterpreter_claimed_fails(interp: int) -> None:
    src = Socket(socket.AF_INET, socket.SOCK_STREAM)
    info = src.duplicate_and_close(os.getpid())
    run(interp, CLAIM, {"blob": info.protocol_information})
    with pytest.raises(UnknownHandoffError):
        Socket(info)


def test_second_claim_in_subinterpreter_fails(interp: int) -> None:
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(os.getpid())
    Socket(info).close()
    excinfo = _interpreters.exec(interp, CLAIM, {"blob": info.protocol_information})
    assert excinfo is not None
    assert excinfo.type.__name__ == "UnknownHandoffError"


def test_subinterpreter_offers_and_main_claims(interp: int, queue: int) -> None:
    run(interp, OFFER_TO_MAIN, {"qid": queue})
    with Socket(SocketInformation.from_bytes(queue_get(queue))) as server:
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_destroying_an_offering_subinterpreter_closes_its_unclaimed_handoff(
    queue: int,
) -> None:
    before = open_fds()
    interp_id = _interpreters.create()
    run(interp_id, OFFER_TO_MAIN, {"qid": queue})
    blob = queue_get(queue)
    # Its serving thread is stopped by the interpreter's exit hooks: destroy returns.
    _interpreters.destroy(interp_id)
    assert open_fds() == before
    with pytest.raises(SocketHandoffError):
        Socket(SocketInformation.from_bytes(blob))
