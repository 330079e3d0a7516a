"""Send and take length-prefixed frames on a socket with one system call each way, mostly.

``multiprocessing.connection.Connection`` reads a message in two ``read`` calls (its
length, then its bytes) through a BytesIO, which costs more than the rest of a small
call's trip: a round trip of two processes echoing a small message takes ~22 us through
it and ~9 us through one ``read`` each way (measured here).  A ``FrameStream`` keeps
what one ``read`` brought and takes the frames from it.  The bytes on the wire are
``Connection``'s own (a 4-byte big-endian signed length, or -1 and an 8-byte one for the
largest), so either end may still use a ``Connection`` (the handshake of a lane does).
"""

from __future__ import annotations

import os
import select
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class HasFileno(Protocol):
        """A connection whose descriptor can be taken over (a multiprocessing Connection)."""

        def fileno(self) -> int: ...
        def close(self) -> None: ...


__all__ = ["FrameStream"]

# One read takes up to this much: every small frame that has arrived, in one call.
_READ_SIZE = 1 << 16
# A frame larger than this is read in pieces of this size and joined once: memory grows
# as the bytes arrive, never by what a length claims.
_PIECE = 1 << 20
_HUGE = 0x7FFFFFFF  # from here on, Connection writes -1 and an 8-byte length
_LENGTH = struct.Struct("!i")


class FrameStream:
    """One end of a stream socket or pipe carrying length-prefixed frames.

    One thread reads at a time and one writes at a time (the link and the lanes see to
    that); reading and writing may happen at once from two threads.
    """

    __slots__ = ("_buf", "_fd")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    @classmethod
    def adopt(cls, conn: HasFileno) -> FrameStream:
        """Take over conn's descriptor (a duplicate; conn is closed)."""
        fd = os.dup(conn.fileno())
        conn.close()
        return cls(fd)

    def fileno(self) -> int:
        """Return the descriptor (-1 once closed)."""
        return self._fd

    def send_bytes(self, frame: bytes, /) -> None:
        """Write one frame."""
        size = len(frame)
        if size > _HUGE:
            header = (-1).to_bytes(4, "big", signed=True) + size.to_bytes(8, "big")
        else:
            header = size.to_bytes(4, "big")
        fd = self._fd
        if fd < 0:
            raise OSError("the frame stream is closed")
        if size <= _READ_SIZE:
            data = header + frame
            done = os.write(fd, data)
            if done == len(data):
                return
            self._write_all(fd, memoryview(data)[done:])
            return
        self._write_all(fd, memoryview(header))
        self._write_all(fd, memoryview(frame))

    @staticmethod
    def _write_all(fd: int, view: memoryview) -> None:
        while view:
            view = view[os.write(fd, view) :]

    def poll(self, timeout: float) -> bool:
        """Tell whether something can be read within timeout seconds."""
        if len(self._buf) >= 4:
            return True
        ready, _, _ = select.select([self._check_open()], [], [], timeout)
        return bool(ready)

    def recv_bytes(self) -> bytes:
        """Read one frame; raise EOFError when the other end has closed."""
        buf = self._buf
        if not buf and self._fd >= 0:
            # What a small call's reply takes: one read that brings exactly one frame.
            data = os.read(self._fd, _READ_SIZE)
            if not data:
                raise EOFError
            if len(data) >= 4 and _LENGTH.unpack_from(data)[0] == len(data) - 4:
                return data[4:]
            buf += data
        while len(buf) < 4:
            self._fill()
        size = int.from_bytes(buf[:4], "big", signed=True)
        head = 4
        if size == -1:
            while len(buf) < 12:
                self._fill()
            size = int.from_bytes(buf[4:12], "big")
            head = 12
        elif size < 0:
            raise OSError(f"a frame's length must not be negative (got {size})")
        end = head + size
        if len(buf) >= end:
            frame = bytes(buf[head:end])
            del buf[:end]
            return frame
        if size <= _PIECE:
            while len(buf) < end:
                self._fill()
            frame = bytes(buf[head:end])
            del buf[:end]
            return frame
        pieces = [bytes(buf[head:])]
        missing = end - len(buf)
        buf.clear()
        fd = self._check_open()
        while missing:
            piece = os.read(fd, min(missing, _PIECE))
            if not piece:
                raise EOFError
            pieces.append(piece)
            missing -= len(piece)
        return b"".join(pieces)

    def _fill(self) -> None:
        data = os.read(self._check_open(), _READ_SIZE)
        if not data:
            raise EOFError
        self._buf += data

    def _check_open(self) -> int:
        fd = self._fd
        if fd < 0:
            raise OSError("the frame stream is closed")
        return fd

    def close(self) -> None:
        """Close the descriptor (once)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
