"""Run a domain in a child process: ProcessHost, for code that may crash the process.

The child is started with multiprocessing's *spawn* context (threads and subinterpreters
do not survive fork), runs appdomain's runtime as a host (``_child``) and talks to this
process over a ``multiprocessing`` pipe with the link format (``_frames``).  It dies with
its creator: its link ends when this process goes (every descriptor closes), and on Linux
the kernel kills it too (PR_SET_PDEATHSIG) if it is stuck where it cannot notice.
Its stderr goes to a file whose tail this process reads when the child dies.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time

from .._core._foreign import PROCESS_KEY
from .._domains import _domain
from .._domains._hosting import HostExitedEventArgs
from .._errors import AppDomainError
from . import _frames, _links
from ._frames import FrameError
from ._link import Link
from ._linked import LinkedDomain
from ._stream import FrameStream

TYPE_CHECKING = False
if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess
    from typing import ClassVar

    from .._domains._setup import AppDomainSetup

__all__ = ["ProcessHost"]

# How much of a dead child's stderr its error quotes.
STDERR_TAIL = 2000


class ProcessHost:
    """Run the domain in a child process of its own: a crash there ends only that domain."""

    __slots__ = ("start_timeout",)
    start_timeout: float

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float)):
            raise TypeError(
                f"'start_timeout' must be a number of seconds "
                f"(got {start_timeout!r} that is a {type(start_timeout).__name__})"
            )
        if not start_timeout > 0:
            raise ValueError(f"'start_timeout' must be > 0 (got {start_timeout!r})")
        self.start_timeout = float(start_timeout)

    def __repr__(self) -> str:
        return f"ProcessHost(start_timeout={self.start_timeout!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProcessHost):
            return NotImplemented
        return self.start_timeout == other.start_timeout

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # compared by value

    def start_domain(self, name: str, setup: AppDomainSetup, sys_path: list[str]) -> ProcessDomain:
        """Start a child process running a domain named name; return it once it serves."""
        import multiprocessing

        _unload_at_exit_first()
        context = multiprocessing.get_context("spawn")
        here, there = context.Pipe(duplex=True)
        stderr = tempfile.NamedTemporaryFile(
            prefix="appdomain-host-", suffix=".stderr", delete=False
        )
        stderr.close()
        lane_key = os.urandom(32)  # the creator's threads prove themselves with it
        process = context.Process(
            target=_child_main,
            args=(
                there,
                PROCESS_KEY,
                os.getpid(),
                name,
                setup.sys_path(sys_path),
                stderr.name,
                threading.current_thread() is threading.main_thread(),
                lane_key,
            ),
            name=f"appdomain-host-{name}",
        )
        try:
            process.start()
        except BaseException:
            here.close()
            _remove(stderr.name)
            raise
        finally:
            there.close()
        stream = FrameStream.adopt(here)
        try:
            hello = _await_hello(stream, process, name, stderr.name, self.start_timeout)
        except BaseException:
            stream.close()
            _end(process)
            _remove(stderr.name)
            raise
        lanes = (hello[4], lane_key) if hello[4] else None
        return ProcessDomain(self, name, stream, process, hello[:4], stderr.name, lanes)


_exit_hook = False


def _unload_at_exit_first() -> None:
    """Unload the process hosts at exit before multiprocessing waits for its children.

    multiprocessing's exit function joins every child it started, and a host ends only
    when unloaded (or its creator is gone): registered after it, this runs before it.
    """
    global _exit_hook
    if not _exit_hook:
        import atexit
        import multiprocessing.util  # noqa: F401 - registers its exit function first

        _exit_hook = True
        atexit.register(_domain.unload_hosted_at_exit)


def _await_hello(
    conn: FrameStream, process: BaseProcess, name: str, stderr_path: str, timeout: float
) -> tuple[str, int, str, tuple[int, int, str, int], str]:
    """Wait for the child's HELLO frame; raise naming why it did not come."""
    deadline = time.monotonic() + timeout
    while not conn.poll(0.05):
        if not process.is_alive():
            raise AppDomainError(
                f"the process host of domain {name!r} failed to start: "
                f"{_exit_words(process.exitcode)}{_tail(stderr_path)}"
            )
        if time.monotonic() > deadline:
            raise AppDomainError(
                f"the process host of domain {name!r} did not start within {timeout:g} s"
                f"{_tail(stderr_path)}"
            )
    try:
        kind, body = _frames.decode(conn.recv_bytes())
    except (EOFError, OSError):
        process.join(5)
        raise AppDomainError(
            f"the process host of domain {name!r} failed to start: "
            f"{_exit_words(process.exitcode)}{_tail(stderr_path)}"
        ) from None
    if kind != _frames.HELLO:
        raise FrameError(f"a process host's first frame must be HELLO (got kind {kind})")
    key, pid, node, route, lanes = body
    assert isinstance(key, str) and isinstance(pid, int) and isinstance(node, str)
    assert isinstance(lanes, str)
    return key, pid, node, _frames.route_field("HELLO", route), lanes


class ProcessDomain(LinkedDomain):
    """A domain running in a child process: its route here, the process, its end."""

    host: ProcessHost

    def __init__(
        self,
        host: ProcessHost,
        name: str,
        conn: FrameStream,
        process: BaseProcess,
        hello: tuple[str, int, str, tuple[int, int, str, int]],
        stderr_path: str,
        lanes: tuple[str, bytes] | None,
    ) -> None:
        self._process = process
        self._stderr_path = stderr_path
        self._unloading = False
        link = Link(
            conn,
            hello[0],
            f"{name!r} (process {hello[1]})",
            check_local=_links.check_local,
            death_cause=self._death_cause,
        )
        link.lanes = lanes
        super().__init__(host, name, link, hello)

    def _death_cause(self) -> str:
        if self._unloading:
            return "was unloaded"
        self._process.join(2.0)
        if self._process.exitcode is None:  # the link broke, the process runs on: end it
            _end(self._process)
            return f"ended: its link broke{_tail(self._stderr_path)}"
        return f"ended: {_exit_words(self._process.exitcode)}{_tail(self._stderr_path)}"

    def exit_args(self, cause: str) -> HostExitedEventArgs:
        """Say why the process ended: the cause, its exit code or the signal that killed it."""
        _remove(self._stderr_path)
        code = self._process.exitcode
        return HostExitedEventArgs(
            f"domain {self.link.label} {cause}",
            code if code is not None and code >= 0 else None,
            -code if code is not None and code < 0 else None,
        )

    def end(self, deadline: float) -> None:
        """Wait for the process to exit until deadline, then kill it if it has not."""
        self._process.join(max(0.0, deadline - time.monotonic()))
        _end(self._process)
        _remove(self._stderr_path)


def _end(process: BaseProcess) -> None:
    """Make sure the process is gone (killed if it still runs) and reaped."""
    if process.is_alive():
        process.kill()
    process.join(5)


def _exit_words(code: int | None) -> str:
    if code is None:
        return "its process did not end"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"its process was killed by signal {-code} ({name})"
    return f"its process exited with code {code}"


def _tail(path: str) -> str:
    """Quote what a dead child wrote last: its crash report if it has one, else the tail."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 4 * STDERR_TAIL))
            text = file.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    crash = text.rfind("Fatal Python error")
    if crash >= 0:
        return f"; its stderr has:\n{text[crash : crash + STDERR_TAIL]}"
    return f"; its stderr ended with:\n{text[-STDERR_TAIL:]}" if text else ""


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _child_main(
    conn: Connection,
    creator_key: str,
    creator_pid: int,
    name: str,
    sys_path: list[str],
    stderr_path: str,
    death_signal: bool,
    lane_key: bytes,
) -> None:
    """Run in the child: become a host for the creator until unloaded or orphaned."""
    fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)
    import faulthandler

    # A crash writes the crashing thread's traceback where the creator reads it.
    faulthandler.enable(all_threads=False)
    if death_signal and sys.platform.startswith("linux"):
        import ctypes

        # PR_SET_PDEATHSIG: killed when the creating thread (the creator's main) goes.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != creator_pid:
        os._exit(1)  # the creator went before the signal was armed
    sys.path[:] = sys_path
    from . import _child

    link = _child.serve_creator(FrameStream.adopt(conn), creator_key, name, lane_key)
    _child.wait_until_done(link)
