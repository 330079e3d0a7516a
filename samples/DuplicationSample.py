"""Duplicate a listening socket and hand it to a new AppDomain (port of the seed's sample).

Port of "Socket Duplication - Part 1" (seed 000): ``DuplicationSample.Main`` creates a TCP
socket, listens, calls ``DuplicateAndClose`` with its own process id, creates the domain
"DuplicateSocketsTest" and passes the ``SocketInformation`` to
``DuplicationNewAppDomain.TransferSocket`` running there.  The seed's ``TransferSocket`` is
empty; here it rebuilds the socket and serves it on a thread of the new domain, and the
sample connects as a client to show that the other domain answers.

Run: ``python samples/DuplicationSample.py`` or ``appdomain sample DuplicationSample``.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

from appdomain import AppDomain, MarshalByRefObject, Socket, SocketInformation


class DuplicationNewAppDomain(MarshalByRefObject):
    """Live in the new domain and serve the socket handed over to it (seed: same name)."""

    def __init__(self) -> None:
        self._server: Socket | None = None
        self._thread: threading.Thread | None = None

    def TransferSocket(self, sockInfo: SocketInformation) -> None:  # the seed's names
        """Rebuild the duplicated socket in this domain and serve it on a thread of its own."""
        self._server = Socket(sockInfo)
        # Stop serving when the domain unloads, before unload aborts whatever still runs.
        AppDomain.current_domain.domain_unload += self._on_unload
        # Not a daemon: subinterpreters refuse daemon threads; _on_unload ends this one.
        self._thread = threading.Thread(
            target=self._serve, args=(self._server,), name="DuplicationServer"
        )
        self._thread.start()

    def _on_unload(self, sender: object, args: object) -> None:
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _serve(self, server: Socket) -> None:
        # The answer names this domain, proving which interpreter owns the socket now.
        domain = AppDomain.current_domain
        answer = f"hello from AppDomain {domain.id} ({domain.friendly_name!r})\n".encode()
        try:
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(1024)
                    conn.sendall(answer)
        except OSError:
            pass  # the listener was shut down: the domain is being unloaded
        finally:
            server.close()


def main() -> int:
    """Run the seed's Main, then prove the new domain serves the socket."""
    # create a socket, listen on an ip address and port (port 0: any free one)
    sock = Socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    address = sock.getsockname()
    # Duplicate the socket: this process's id sends it to another domain of this process.
    socketInfo = sock.DuplicateAndClose(os.getpid())  # the seed's name
    print(f"duplicated listener {address[0]}:{address[1]}: {socketInfo!r}")
    # create a new appdomain
    TestDomain = AppDomain.CreateDomain("DuplicateSocketsTest")  # the seed's name
    try:
        newAppDomain = TestDomain.CreateInstanceAndUnwrap(  # the seed's name
            "__main__", "DuplicationNewAppDomain"
        )
        # transfer socketinfo to the new appdomain
        newAppDomain.TransferSocket(socketInfo)

        here = AppDomain.current_domain
        print(f"client in AppDomain {here.id} ({here.friendly_name!r}) connects")
        with socket.create_connection(address, timeout=10) as client:
            client.sendall(b"who are you?\n")
            answer = client.recv(1024).decode().strip()
        print(f"answer: {answer}")
        if f"AppDomain {TestDomain.id} " not in answer:
            print("error: the answer did not come from the new domain", file=sys.stderr)
            return 1
    finally:
        AppDomain.Unload(TestDomain)
    print("unloaded DuplicateSocketsTest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
