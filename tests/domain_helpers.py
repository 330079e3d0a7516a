"""Functions and classes the domain tests run *inside* domains.

Domains import this module by name (``domain_helpers``): tests/ is on sys.path of the
default domain (pytest's rootdir insertion, made sure of by conftest.py), and every new
domain inherits its creator's sys.path.  Everything here must therefore be importable
at module level: no lambdas, no closures.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

from appdomain import AppDomain, Channel, MarshalByRefObject

# -- module state, one copy per domain ----------------------------------------------------

counter = 0


def set_global(value: int) -> None:
    global counter
    counter = value


def get_global() -> int:
    return counter


# -- trivial calls ----------------------------------------------------------------------


def noop() -> None:
    return None


def add(a: int, b: int) -> int:
    return a + b


def echo(value: Any) -> Any:
    return value


def whoami() -> tuple[int, str, bool]:
    """The current domain as seen from inside: (id, friendly_name, is_default)."""
    here = AppDomain.current_domain
    return (here.id, here.friendly_name, here.is_default_app_domain())


def whoami_net() -> tuple[int, str, bool]:
    """Same as whoami, through the .NET names."""
    here = AppDomain.CurrentDomain
    return (here.Id, here.FriendlyName, here.IsDefaultAppDomain())


def sys_path() -> list[str]:
    return list(sys.path)


def import_and_call(module: str, func: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), func)()


def module_loaded(name: str) -> bool:
    return name in sys.modules


def thread_count() -> int:
    return threading.active_count()


def interp_id() -> int:
    import _interpreters

    return int(_interpreters.get_current()[0])


def create_nested(name: str) -> int:
    """Create a domain from inside a domain; return its id (it stays loaded)."""
    return AppDomain.create_domain(name).id


# -- events ------------------------------------------------------------------------------


def _on_unload(sender: Any, args: Any) -> None:
    channel = AppDomain.current_domain.get_data("unload_channel")
    channel.send(("domain_unload", sender.id, sender.friendly_name))


def subscribe_unload_to_channel() -> None:
    """Subscribe domain_unload; the handler reports on the Channel stored as 'unload_channel'."""
    AppDomain.current_domain.domain_unload += _on_unload


def _on_unload_file(sender: Any, args: Any) -> None:
    path = AppDomain.current_domain.get_data("unload_file")
    with open(path, "w") as f:
        f.write(f"unloaded {sender.id}")


def subscribe_unload_to_file(path: str) -> None:
    AppDomain.current_domain.set_data("unload_file", path)
    AppDomain.current_domain.DomainUnload += _on_unload_file


def _on_unhandled(sender: Any, args: Any) -> None:
    channel = AppDomain.current_domain.get_data("exc_channel")
    exc = args.exception_object
    channel.send((type(exc).__name__, str(exc), args.is_terminating, sender.id))


def raise_in_thread(message: str) -> None:
    """Subscribe unhandled_exception, then let a ValueError escape a thread of this domain."""
    AppDomain.current_domain.unhandled_exception += _on_unhandled

    def boom() -> None:
        raise ValueError(message)

    thread = threading.Thread(target=boom, name="boom")
    thread.start()
    thread.join()


# -- threads that make unloading hard ------------------------------------------------------


def _spin() -> None:
    while True:
        pass


def start_spinner() -> None:
    """Start a thread spinning in pure Python forever (only an abort stops it)."""
    threading.Thread(target=_spin, name="spinner").start()


def _accept(sock: socket.socket, started: Channel) -> None:
    started.send("accepting")
    try:
        sock.accept()
    except OSError:
        pass


def start_acceptor(started: Channel) -> int:
    """Start a thread blocked in accept() on a listening socket created here; return its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    _keep.append(sock)
    threading.Thread(target=_accept, args=(sock, started), name="acceptor").start()
    port: int = sock.getsockname()[1]
    return port


_keep: list[Any] = []


def _read_one(fd: int, started: Channel) -> None:
    started.send("blocked")
    os.read(fd, 1)


def start_blocked_reader(fd: int, started: Channel) -> None:
    """Start a thread stuck in one C call, os.read(fd, 1), until the caller writes to fd's pipe.

    An abort cannot land in a C call: the thread holds the domain until it is released.
    """
    threading.Thread(target=_read_one, args=(fd, started), name="blocked-reader").start()


def block_on_channel(channel: Channel) -> Any:
    """Block the calling thread (inside this domain) on channel.recv() with no timeout."""
    return channel.recv()


def signal_then_spin(started: Channel) -> None:
    """Tell the caller we are inside, then spin until aborted."""
    started.send("inside")
    while True:
        pass


def busy_loop(seconds: float) -> int:
    """Keep this domain busy in fast Python code for about `seconds`; return loop count."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


def busy_until_closed(started: Channel, stop: Channel) -> int:
    """Keep the domain busy (in Python) until `stop` is closed; return how many loops ran."""
    from appdomain import ChannelClosedError

    started.send("busy")
    n = 0
    while True:
        n += 1
        try:
            stop.recv(timeout=0)
        except TimeoutError:
            continue
        except ChannelClosedError:
            return n


# -- channels ----------------------------------------------------------------------------


def produce(channel: Channel, count: int) -> None:
    """Send 0..count-1 then close the channel."""
    for i in range(count):
        channel.send(i)
    channel.close()


def start_producer(count: int) -> None:
    """Start a thread here that produces into the channel stored as 'channel'."""
    channel = AppDomain.current_domain.get_data("channel")
    threading.Thread(target=produce, args=(channel, count), name="producer").start()


def consume(channel: Channel) -> list[Any]:
    """Receive until the channel is closed; return everything received, in order."""
    return list(channel)


def consume_stored() -> list[Any]:
    return consume(AppDomain.current_domain.get_data("channel"))


def echo_server(requests: Channel, replies: Channel) -> int:
    """Answer every request with request + 1 until requests is closed; return the count."""
    from appdomain import ChannelClosedError

    n = 0
    while True:
        try:
            value = requests.recv()
        except ChannelClosedError:
            return n
        replies.send(value + 1)
        n += 1


def start_echo_server(requests: Channel, replies: Channel) -> None:
    threading.Thread(target=echo_server, args=(requests, replies), name="echo").start()


def send_values(channel: Channel, values: list[Any]) -> None:
    for v in values:
        channel.send(v)


def recv_one(channel: Channel, timeout: float | None) -> Any:
    return channel.recv(timeout=timeout)


# -- remote objects ------------------------------------------------------------------------


class Calculator(MarshalByRefObject):
    """A by-reference object: its methods run in the domain that created it."""

    def add(self, a: int, b: int) -> int:
        return a + b

    def where(self) -> int:
        return AppDomain.current_domain.id

    def noop(self) -> None:
        return None


class Recorder(MarshalByRefObject):
    """Lives in the default domain; domains call back into it."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Any]] = []

    def record(self, value: Any) -> int:
        self.calls.append((AppDomain.current_domain.id, value))
        return AppDomain.current_domain.id

    def bounce(self, other: Any, depth: int) -> list[int]:
        """A -> B -> A chain: call other.bounce(self, depth - 1) until depth is 0."""
        here = AppDomain.current_domain.id
        if depth == 0:
            return [here]
        return [here, *other.bounce(self, depth - 1)]


class Bouncer(MarshalByRefObject):
    """Lives in a non-default domain; calls back the object it was handed."""

    def bounce(self, other: Any, depth: int) -> list[int]:
        here = AppDomain.current_domain.id
        if depth == 0:
            return [here]
        return [here, *other.bounce(self, depth - 1)]

    def call_back(self, recorder: Any, value: Any) -> int:
        """Call a method of an object living in another (e.g. the default) domain."""
        result: int = recorder.record(value)
        return result


def call_back_default(recorder: Any, value: Any) -> int:
    """do_callback target: call back into the default domain through a proxy argument."""
    result: int = recorder.record(value)
    return result


def pid() -> int:
    return os.getpid()


def own_data(key: str) -> Any:
    """Read this domain's data from inside it."""
    return AppDomain.current_domain.get_data(key)


def signal_then_block(started: Channel, never: Channel) -> Any:
    """Tell the caller we are inside, then block in recv() on a channel nobody sends to."""
    started.send("inside")
    return never.recv()


def _consume_forever(started: Channel, channel: Channel) -> None:
    started.send("consuming")
    for _ in channel:
        pass


def start_consumer_after_signal(started: Channel) -> None:
    """Start a thread blocked in recv() on the Channel stored as 'channel'."""
    channel = AppDomain.current_domain.get_data("channel")
    threading.Thread(target=_consume_forever, args=(started, channel), name="consumer").start()


def try_unload_self() -> str:
    try:
        AppDomain.unload(AppDomain.current_domain)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def divide(a: float, b: float) -> float:
    return a / b


def create_use_unload(name: str) -> tuple[int, Any, str]:
    """From inside a domain: create another, call it, unload it, call it again."""
    from appdomain import AppDomainUnloadedException

    nested = AppDomain.create_domain(name)
    seen = nested.do_callback(whoami)
    AppDomain.unload(nested)
    try:
        nested.do_callback(noop)
    except AppDomainUnloadedException as exc:
        return (nested.id, seen, type(exc).__name__)
    return (nested.id, seen, "no error")


_release = threading.Event()


def _op_wait(seconds: float) -> bool:
    return _release.wait(seconds)


def _op_echo(value: Any) -> Any:
    return value


def register_test_ops() -> None:
    """Register call-path ops used by test_callpath: test.wait (blocks), test.echo."""
    from appdomain import _core

    _release.clear()
    _core.register_op("test.wait", _op_wait)
    _core.register_op("test.echo", _op_echo)


def release_test_ops() -> None:
    _release.set()


def make_lock() -> Any:
    """Return something that cannot cross a domain boundary."""
    return threading.Lock()


def ping_many(requests: Channel, replies: Channel, count: int) -> list[Any]:
    """Send 0..count-1 to an echo server one at a time; return its answers."""
    answers = []
    for i in range(count):
        requests.send(i)
        answers.append(replies.recv())
    return answers


def on_native_route() -> bool:
    """Tell whether this domain's calls take the native route (the C switch)."""
    from appdomain import _core

    return _core.native_module() is not None


# -- C code that keeps the domain's GIL (PyDLL calls do, unlike CDLL's) ------------------


def read_holding_gil(fd: int, ready: int) -> int:
    """Write to ready, then block in read(fd, 1) holding this domain's GIL until fd's pipe
    is written to.  (Between the two, only a few bytecodes run, far below a GIL switch.)"""
    import ctypes

    libc = ctypes.PyDLL(None)
    buffer = ctypes.create_string_buffer(1)
    os.write(ready, b"r")
    return int(libc.read(fd, buffer, 1))


def _go_then_read_holding_gil(go: int, fd: int, ready: int) -> None:
    os.read(go, 1)  # the GIL is free meanwhile, so the call that started us can return
    read_holding_gil(fd, ready)


def start_gil_holding_reader(go: int, fd: int, ready: int) -> int:
    """Start a thread that, once go's pipe is written to, blocks in read(fd) holding the GIL
    (see read_holding_gil).  Returns the thread's ident."""
    thread = threading.Thread(
        target=_go_then_read_holding_gil, args=(go, fd, ready), name="gil-reader"
    )
    thread.start()
    assert thread.ident is not None
    return thread.ident
