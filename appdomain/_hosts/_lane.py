"""Give a thread its own connection to a process host: its calls, and their callbacks, inline.

A link's shared connection needs a reader thread at each end, and every reply then costs a
hand-over from that thread to the caller.  A *lane* is one thread's own connection, as
``multiprocessing.managers`` gives each thread: the caller writes its request and reads
the reply itself, and one thread at the other end serves the lane, reading and running
each request in turn.  A request that calls back (a callback into the caller, A -> B -> A)
travels back on the same lane to the thread waiting on it, which serves it while it waits:
calls nest on a lane as they do on a stack.  Releases queued before a frame go on the lane
before it, so the counts a request reads are right.

The host process listens on a Unix socket for lanes; a creator proves itself with the
authentication key it gave the host (``multiprocessing.connection``'s challenge).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

from .._errors import AppDomainUnloadedException
from . import _frames
from ._frames import FrameError
from ._stream import FrameStream

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .._core._wire import Shareable
    from ._link import Link

    type Reply = tuple[int, bool, Shareable, Shareable]

__all__ = ["Lane", "LaneListener"]


class Lane:
    """One thread's connection to the other end of a link."""

    link: Link
    broken: bool

    def __init__(self, link: Link, conn: FrameStream) -> None:
        self.link = link
        self.broken = False
        self._conn = conn
        self._calls = 0
        self._send = self.send  # handed to the link on every call: bound once

    @classmethod
    def connect(cls, link: Link, address: str, authkey: bytes) -> Lane:
        """Open a lane to the host listening at address."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            raise AppDomainUnloadedException(
                f"domain {link.label} cannot be reached: {exc}"
            ) from None
        conn = Connection(sock.detach())
        answer_challenge(conn, authkey)
        return cls(link, FrameStream.adopt(conn))

    def send(self, kind: int, body: tuple[Shareable, ...]) -> None:
        """Send one frame of kind on this lane (its thread's, so no lock)."""
        self.send_frame(_frames.encode(kind, body))

    def send_frame(self, frame: bytes) -> None:
        """Send the bytes of one frame on this lane."""
        try:
            self._conn.send_bytes(frame)
        except (OSError, ValueError):
            self.broken = True
            raise self._gone() from None

    def call(
        self,
        key: str,
        origin: tuple[int, int, str, int],
        op: str,
        payload: Shareable,
        ctx: Shareable,
        timeout: float | None,
    ) -> Reply:
        """Send a request and wait for its reply, serving what the other end asks meanwhile."""
        link = self.link
        link._flush_releases(self._send)
        self._calls += 1
        call_id = self._calls
        self.send_frame(
            link.outgoing(_frames.CALL, (call_id, key, origin, op, payload, ctx), payload)
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            kind, body = self._read(deadline)
            if kind == _frames.REPLY:
                if body[0] == call_id:
                    return (0, body[1], body[2], body[3])
                continue  # cannot happen on a lane (calls nest); dropped if it does
            self._take(kind, body)

    def serve(self) -> None:
        """Serve the requests that come on this lane until it closes (the host's side)."""
        while not self.broken:
            try:
                kind, body = self._read(None)
            except AppDomainUnloadedException:
                return
            self._take(kind, body)

    def _take(self, kind: int, body: tuple[Any, ...]) -> None:
        link = self.link
        if kind == _frames.CALL:
            call_id, key, origin, op, payload, ctx = body
            ok, value, ctx_back = link._run(key, origin, op, payload, ctx)
            link._flush_releases(self._send)
            self.send_frame(link.outgoing(_frames.REPLY, (call_id, ok, value, ctx_back), value))
        elif kind == _frames.POST:
            key, origin, op, payload, ctx = body
            link._run(key, origin, op, payload, ctx)
        elif kind == _frames.RELEASE:
            link.released(body)
        else:
            self._break(f"sent a frame of kind {kind} on a lane")

    def _read(self, deadline: float | None) -> tuple[int, tuple[Any, ...]]:
        conn = self._conn
        try:
            if deadline is not None and not conn.poll(max(0.0, deadline - time.monotonic())):
                # A late reply would come on this lane: it cannot be used again.
                self.close()
                conn.close()  # this thread's own
                raise TimeoutError(f"domain {self.link.label} did not reply in time")
            data = conn.recv_bytes()
        except (EOFError, OSError):
            self.broken = True
            conn.close()  # this thread's own: nobody else reads or writes it now
            raise self._gone() from None
        try:
            return _frames.decode(data)
        except FrameError as exc:
            self._break(f"sent a broken frame ({exc}); the link was closed")
            raise self._gone() from None

    def _break(self, cause: str) -> None:
        self.close()
        self.link.close(cause)

    def _gone(self) -> AppDomainUnloadedException:
        # The link says why once it has noticed (its reader sees the same end): wait a little.
        link = self.link
        link.closed.wait(5.0)
        return AppDomainUnloadedException(f"domain {link.label} {link.cause or 'ended'}")

    def close(self) -> None:
        """End the lane; a thread blocked on it sees it end (and closes it).

        Any thread may call this: the socket is shut down, not closed, since closing a
        Connection that another thread reads from breaks that read in the middle.
        """
        self.broken = True
        try:
            sock = socket.socket(fileno=self._conn.fileno())
        except (OSError, ValueError):  # closed already
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.detach()


class LaneListener:
    """Where a host process takes its creator's lanes: a Unix socket, one thread per lane."""

    link: Link
    authkey: bytes
    address: str

    def __init__(self, link: Link, authkey: bytes) -> None:
        self.link = link
        self.authkey = authkey
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Linux's abstract namespace: nothing on disk to clean up.
        self.address = f"\0appdomain-lanes-{os.getpid()}-{os.urandom(8).hex()}"
        self._sock.bind(self.address)
        self._sock.listen(64)
        self._thread = threading.Thread(target=self._accept, name="appdomain-lanes", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:  # closed: the link ended
                return
            threading.Thread(
                target=self._serve, args=(sock,), name="appdomain-lane", daemon=True
            ).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = Connection(sock.detach())
        try:
            deliver_challenge(conn, self.authkey)
        except Exception:  # not our creator: drop it
            conn.close()
            return
        self.link.serve_lane(Lane(self.link, FrameStream.adopt(conn)))

    def close(self) -> None:
        """Stop taking lanes (shutdown wakes the accepting thread)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
