"""Serve HTTP from N worker domains, each with its own GIL, fed by one accepting domain.

The default domain listens and accepts TCP connections; each connection is handed to one
worker domain (round robin) with ``DuplicateAndClose(os.getpid())``, the pattern of the
seed's DuplicationSample applied to every connection.  A worker domain rebuilds the socket
with ``Socket(info)`` and serves HTTP/1.1 (keep-alive) on a thread of its own.  Every
request runs a CPU-bound handler in pure Python (about 1 ms), so with N workers on N cores
the throughput scales with N: the domains do not share a GIL.

Run: ``python samples/MultiDomainServer.py --workers 2 --port 8080 --duration 30`` or
``appdomain sample MultiDomainServer --workers 2``.  Stops on SIGINT/SIGTERM or after
``--duration`` seconds, unloading its worker domains.

Endpoints: ``GET /`` (or any path) runs the handler; ``?n=ITERATIONS`` changes its cost.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

from appdomain import AppDomain, MarshalByRefObject, Socket, SocketInformation

# Iterations of the handler's loop: about 1 ms of pure Python on the 2-core development VM.
DEFAULT_ITERATIONS = 4_000
MAX_HEADER_BYTES = 64 * 1024


def compute(iterations: int) -> int:
    """Burn CPU in pure Python (a 32-bit FNV-1a style checksum over the loop counter)."""
    h = 2166136261
    for i in range(iterations):
        h = ((h ^ (i & 0xFF)) * 16777619) & 0xFFFFFFFF
    return h


class HttpWorker(MarshalByRefObject):
    """Live in one worker domain and serve the HTTP connections handed to it."""

    def __init__(self) -> None:
        domain = AppDomain.current_domain
        self._tag = f"{domain.id} {domain.friendly_name}"
        self._lock = threading.Lock()
        self._connections: dict[int, tuple[Socket, threading.Thread]] = {}
        self._requests = 0
        self._next = 0
        # Close the connections ourselves when the domain unloads, so that its threads
        # end on their own before unload has to abort anything.
        domain.domain_unload += self._on_unload

    def serve(self, info: SocketInformation) -> None:
        """Rebuild a handed-off connection in this domain and serve it on a new thread."""
        conn = Socket(info)
        with self._lock:
            key = self._next
            self._next += 1
            # Not a daemon: subinterpreters refuse daemon threads; _on_unload ends it.
            thread = threading.Thread(target=self._serve_connection, args=(key, conn))
            self._connections[key] = (conn, thread)
        thread.start()

    def requests_served(self) -> int:
        """Tell how many requests this domain has answered."""
        with self._lock:
            return self._requests

    def _on_unload(self, sender: object, args: object) -> None:
        with self._lock:
            connections = list(self._connections.values())
        for conn, _ in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
            except OSError:
                pass
        for _, thread in connections:
            thread.join(timeout=5)

    def _serve_connection(self, key: int, conn: Socket) -> None:
        try:
            with conn:
                self._http_loop(conn)
        except OSError:
            pass  # the client went away, or the domain is unloading
        finally:
            with self._lock:
                self._connections.pop(key, None)

    def _http_loop(self, conn: Socket) -> None:
        buffer = b""
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    conn.sendall(_response(431, b"request header too large\n", keep_alive=False))
                    return
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                end = buffer.find(b"\r\n\r\n")
            head, buffer = buffer[:end].decode("latin-1"), buffer[end + 4 :]
            request_line, *header_lines = head.split("\r\n")
            try:
                method, target, version = request_line.split(" ")
            except ValueError:
                conn.sendall(_response(400, b"bad request line\n", keep_alive=False))
                return
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            # A body (not expected: this server only computes) is read and ignored.
            length = int(headers.get("content-length", "0") or "0")
            while len(buffer) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" and (
                version == "HTTP/1.1" or connection == "keep-alive"
            )
            status, body = self._handle(method, target)
            conn.sendall(_response(status, body, keep_alive=keep_alive))
            with self._lock:
                self._requests += 1
            if not keep_alive:
                return

    def _handle(self, method: str, target: str) -> tuple[int, bytes]:
        if method not in ("GET", "HEAD", "POST"):
            return 405, b"method not allowed\n"
        query = parse_qs(urlsplit(target).query)
        try:
            iterations = int(query.get("n", [str(DEFAULT_ITERATIONS)])[0])
        except ValueError:
            return 400, b"n must be an integer\n"
        iterations = max(0, min(iterations, 10_000_000))
        result = compute(iterations)
        return 200, f"AppDomain {self._tag}: compute({iterations}) = {result:08x}\n".encode()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


def _response(status: int, body: bytes, *, keep_alive: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="MultiDomainServer", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--workers", type=int, default=2, help="worker domains (default 2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until SIGINT/SIGTERM)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the worker domains, accept and hand off connections until told to stop."""
    args = parse_args(argv)
    # A signal may be delivered to any thread (the worker domains have many), and only the
    # main thread runs Python signal handlers: the wake-up fd makes the C-level handler
    # write to this pipe, which wakes the accept loop's select() whichever thread got it.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    stop_reason: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        stop_reason.append(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    domains = [AppDomain.create_domain(f"worker-{i + 1}") for i in range(args.workers)]
    try:
        workers = [d.create_instance_and_unwrap("__main__", "HttpWorker") for d in domains]
        listener = Socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((args.host, args.port))
        listener.listen(512)
        host, port = listener.getsockname()[:2]
        print(
            f"listening on http://{host}:{port}/ with {len(workers)} worker domain(s): "
            + ", ".join(f"{d.id} {d.friendly_name!r}" for d in domains),
            flush=True,
        )
        deadline = None if args.duration is None else time.monotonic() + args.duration
        handed = 0
        with listener:
            while not stop_reason:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    stop_reason.append(f"duration {args.duration:g}s elapsed")
                    break
                ready, _, _ = select.select([listener.fileno(), wake_r], [], [], timeout)
                if wake_r in ready:
                    os.read(wake_r, 512)  # the handler has run (or runs next): loop re-checks
                if listener.fileno() not in ready:
                    continue
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # Hand the connection to a worker domain of this process: DuplicateAndClose.
                info = conn.duplicate_and_close(os.getpid())
                workers[handed % len(workers)].serve(info)
                handed += 1
        print(f"stopping ({stop_reason[0]}); {handed} connection(s) handed off", flush=True)
        for domain, worker in zip(domains, workers, strict=True):
            print(f"  {domain.friendly_name}: {worker.requests_served()} request(s)", flush=True)
    finally:
        for domain in domains:
            AppDomain.unload(domain)
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
    print("worker domains unloaded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
