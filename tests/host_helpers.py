"""Classes the host tests create in domains on other hosts (importable there by name)."""

from __future__ import annotations

import os
import socket
import threading

from appdomain import AppDomain, MarshalByRefObject, Socket, SocketInformation


class Plugin(MarshalByRefObject):
    """Misbehaves on request: crashes its process, exits it, or makes domains inside it."""

    def pid(self) -> int:
        return os.getpid()

    def segfault(self) -> None:
        import ctypes

        ctypes.string_at(0)

    def exit(self, code: int) -> None:
        os._exit(code)

    def make_inner_calculator(self) -> object:
        """Create a subinterpreter domain inside this process and return an object there."""
        inner = AppDomain.create_domain("Inner")
        self.inner = inner
        return inner.create_instance_and_unwrap("remoting_helpers", "Calculator", 1)

    def inner_count(self) -> int:
        return len([d for d in (getattr(self, "inner", None),) if d is not None])

    def serve_one(self, blob: bytes) -> str:
        """Claim a listening socket handed to this process and serve one client."""
        with Socket(SocketInformation.from_bytes(blob)) as listener:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"served by %d" % os.getpid())
        return "done"

    def hostname(self) -> str:
        return socket.gethostname()

    def thread_of(self, probe: ThreadProbe) -> int:
        """Call back into probe's domain: the thread that serves the callback there."""
        return probe.ident()

    def pass_gate(self, gate: Gate) -> int:
        """From a thread started here, call into gate's domain, waiting till all are in."""
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(gate.enter()))
        thread.start()
        thread.join()
        return result[0]


class ThreadProbe(MarshalByRefObject):
    """Lives in the caller's domain: says which thread runs a call into it."""

    def ident(self) -> int:
        return threading.get_ident()


class Gate(MarshalByRefObject):
    """Lives in the caller's domain: enter() returns once parties callers are in it at once."""

    def __init__(self, parties: int) -> None:
        # Bounded: a gate that never fills breaks (BrokenBarrierError) instead of hanging.
        self.barrier = threading.Barrier(parties, timeout=60)

    def enter(self) -> int:
        return self.barrier.wait()


def note_unload(path: str) -> None:
    """Subscribe, inside the current domain, a domain_unload handler that writes path."""

    def handler(sender: object, args: object) -> None:
        with open(path, "w") as file:
            file.write(f"unloaded {os.getpid()}")

    AppDomain.current_domain.domain_unload += handler


def remember_pid(name: str) -> None:
    """An initializer: note this process's id in the domain's data."""
    AppDomain.current_domain.set_data(name, os.getpid())


def refuse_to_start() -> None:
    """An initializer that fails."""
    raise RuntimeError("no plugins today")


def exits_within(pid: int, seconds: float) -> bool:
    """Wait for a process that is not our child to end (a pidfd is readable once it has)."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], seconds)
        return bool(readable)
    finally:
        os.close(fd)
