"""The byte stream under a link: frames as multiprocessing.connection writes them, read whole."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from appdomain._core import Route
from appdomain._hosts._link import Link
from appdomain._hosts._stream import FrameStream


@pytest.fixture
def pair() -> Iterator[tuple[FrameStream, socket.socket]]:
    """A frame stream, and the raw socket at its other end."""
    mine, theirs = socket.socketpair()
    stream = FrameStream(mine.detach())
    yield stream, theirs
    stream.close()
    theirs.close()


@pytest.mark.parametrize("size", [0, 1, 65536, (1 << 20) + 17, 5 << 20])
def test_a_frame_a_connection_wrote_reads_back_whole(
    pair: tuple[FrameStream, socket.socket], size: int
) -> None:
    stream, theirs = pair
    frame = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    with Connection(os.dup(theirs.fileno())) as conn:
        writer = threading.Thread(target=conn.send_bytes, args=(frame,))
        writer.start()
        assert stream.recv_bytes() == frame
        writer.join()


@pytest.mark.parametrize("size", [3, 70000, 3 << 20])
def test_a_frame_the_stream_wrote_is_read_by_a_connection(
    pair: tuple[FrameStream, socket.socket], size: int
) -> None:
    stream, theirs = pair
    frame = b"ab" * (size // 2)
    writer = threading.Thread(target=stream.send_bytes, args=(frame,))
    writer.start()
    with Connection(os.dup(theirs.fileno())) as conn:
        assert conn.recv_bytes() == frame
    writer.join()


def test_frames_that_arrive_together_are_read_one_by_one(
    pair: tuple[FrameStream, socket.socket],
) -> None:
    stream, theirs = pair
    theirs.sendall(b"".join(len(f).to_bytes(4, "big") + f for f in (b"one", b"", b"three")))
    assert [stream.recv_bytes() for _ in range(3)] == [b"one", b"", b"three"]


def test_a_frame_that_arrives_in_pieces_is_read_whole(
    pair: tuple[FrameStream, socket.socket],
) -> None:
    stream, theirs = pair
    data = (5).to_bytes(4, "big") + b"hello" + (2).to_bytes(4, "big") + b"ok"
    theirs.sendall(data[:6])  # what the first read finds: part of the length and the frame
    writer = threading.Thread(target=lambda: [theirs.sendall(bytes([b])) for b in data[6:]])
    writer.start()
    assert (stream.recv_bytes(), stream.recv_bytes()) == (b"hello", b"ok")
    writer.join()


def test_poll_tells_when_a_frame_waits(pair: tuple[FrameStream, socket.socket]) -> None:
    stream, theirs = pair
    assert stream.poll(0) is False
    theirs.sendall((1).to_bytes(4, "big") + b"z")
    assert stream.poll(5) is True


def test_an_end_inside_a_frame_is_end_of_file(pair: tuple[FrameStream, socket.socket]) -> None:
    stream, theirs = pair
    theirs.sendall((10).to_bytes(4, "big") + b"abc")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError):
        stream.recv_bytes()


def test_an_end_inside_a_large_frame_is_end_of_file(
    pair: tuple[FrameStream, socket.socket],
) -> None:
    stream, theirs = pair
    theirs.sendall((3 << 20).to_bytes(4, "big") + b"abc" * 1000)
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError):
        stream.recv_bytes()


def test_a_negative_length_is_refused(pair: tuple[FrameStream, socket.socket]) -> None:
    stream, theirs = pair
    theirs.sendall((-5).to_bytes(4, "big", signed=True))
    with pytest.raises(OSError, match=r"must not be negative \(got -5\)"):
        stream.recv_bytes()


def test_a_huge_declared_length_allocates_only_what_arrives(
    pair: tuple[FrameStream, socket.socket],
) -> None:
    stream, theirs = pair
    # -1, then an 8-byte length of 2**60: the stream must wait for bytes, not allocate.
    theirs.sendall((-1).to_bytes(4, "big", signed=True) + (1 << 60).to_bytes(8, "big") + b"x")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError):
        stream.recv_bytes()


def test_a_closed_stream_says_so(pair: tuple[FrameStream, socket.socket]) -> None:
    stream, _ = pair
    stream.close()
    assert stream.fileno() == -1
    with pytest.raises(OSError, match="the frame stream is closed"):
        stream.send_bytes(b"x")


def test_a_link_whose_peer_sends_a_negative_length_closes_and_says_why(
    pair: tuple[FrameStream, socket.socket],
) -> None:
    stream, theirs = pair
    closed = threading.Event()
    link = Link(stream, "peer:1:x", "'peer'", check_local=_no_local)
    link.on_close(lambda cause: closed.set())
    link.start()
    theirs.sendall((-7).to_bytes(4, "big", signed=True))
    assert closed.wait(10)
    assert link.cause == "ended: a frame's length must not be negative (got -7)"
    link.join(10)


def _no_local(origin: tuple[int, int, str, int]) -> Route:
    raise AssertionError(f"no request was expected (got one for {origin})")
