"""The SocketInformation blob decoder: any bytes either parse or fail with a clear error."""

from __future__ import annotations

import os
import socket
import struct
import threading
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appdomain._sockets._socket import (
    Socket,
    SocketInformation,
    SocketInformationFormatError,
    UnknownHandoffError,
)


def sealed(body: bytes) -> bytes:
    return body + struct.pack("!I", zlib.crc32(body))


@pytest.fixture(scope="module")
def blob() -> Iterator[bytes]:
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(os.getpid())
    yield info.protocol_information
    Socket(info).close()


@given(st.binary(max_size=200))
def test_random_bytes_fail_cleanly(data: bytes) -> None:
    with pytest.raises(SocketInformationFormatError):
        SocketInformation.from_bytes(data)


@given(data=st.data())
def test_any_truncation_fails_cleanly(blob: bytes, data: st.DataObject) -> None:
    keep = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SocketInformationFormatError):
        SocketInformation.from_bytes(blob[:keep])


@given(data=st.data())
def test_any_byte_flip_fails_cleanly(blob: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(blob) - 1))
    mask = data.draw(st.integers(1, 255))
    mutated = bytearray(blob)
    mutated[index] ^= mask
    with pytest.raises(SocketInformationFormatError):
        SocketInformation.from_bytes(bytes(mutated))


@given(st.binary(min_size=28, max_size=120))
def test_random_sealed_bodies_parse_or_fail_cleanly(body: bytes) -> None:
    # A forger can compute the checksum: structure checks must still hold.
    try:
        info = SocketInformation.from_bytes(sealed(b"\x01" + body[1:]))
    except SocketInformationFormatError:
        return
    assert info.protocol_information[0] == 1


def test_trailing_bytes_fail(blob: bytes) -> None:
    with pytest.raises(SocketInformationFormatError, match="route"):
        SocketInformation.from_bytes(sealed(blob[:-4] + b"extra"))


def test_concurrent_claims_succeed_exactly_once() -> None:
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(os.getpid())
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def claim() -> None:
        start.wait()
        try:
            Socket(info).close()
        except UnknownHandoffError:
            outcomes.append("refused")
        else:
            outcomes.append("claimed")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed"] + ["refused"] * 7
