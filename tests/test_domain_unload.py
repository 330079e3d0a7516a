"""Unloading real AppDomains: stuck threads, timeouts, and what unloaded domains answer."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import domain_helpers as helpers
import pytest

from appdomain import (
    AppDomain,
    AppDomainError,
    AppDomainUnloadedException,
    CannotUnloadAppDomainException,
    Channel,
)

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")

Factory = Callable[..., AppDomain]
# Upper bound for any join in these tests: a hang fails the test instead of the run.
JOIN = 30.0


def _in_thread(func: Callable[..., Any], *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run func(*args) on a daemon thread; the dict gets 'result' or 'error'."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = func(*args)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- stuck threads ---------------------------------------------------------------------------


def test_unload_with_spinning_thread(domain_factory: Factory) -> None:
    d = domain_factory("Spinner")
    d.do_callback(helpers.start_spinner)
    AppDomain.unload(d, timeout=JOIN)
    with pytest.raises(AppDomainUnloadedException):
        d.get_data("x")


def test_unload_with_thread_blocked_in_accept(domain_factory: Factory) -> None:
    d = domain_factory("Acceptor")
    started = Channel()
    d.do_callback(helpers.start_acceptor, started)
    assert started.recv(timeout=JOIN) == "accepting"
    AppDomain.unload(d, timeout=JOIN)
    with pytest.raises(AppDomainUnloadedException):
        d.get_data("x")


def test_unload_with_thread_blocked_in_channel_recv(domain_factory: Factory) -> None:
    d = domain_factory("ChannelWaiter")
    started = Channel()
    never = Channel()
    d.set_data("channel", never)
    d.do_callback(helpers.start_consumer_after_signal, started)
    assert started.recv(timeout=JOIN) == "consuming"
    AppDomain.unload(d, timeout=5.0)
    with pytest.raises(AppDomainUnloadedException):
        d.get_data("x")


class BlockedReader:
    """A pipe whose read end a thread of a domain blocks on: os.read, a C call no abort ends."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.released = False

    def block(self, domain: AppDomain) -> None:
        started = Channel()
        domain.do_callback(helpers.start_blocked_reader, self.read_end, started)
        assert started.recv(timeout=JOIN) == "blocked"

    def release(self) -> None:
        if not self.released:
            self.released = True
            os.write(self.write_end, b"x")


@pytest.fixture
def reader() -> Iterator[BlockedReader]:
    """A blocked reader, released (so its domain can unload) at the latest when the test ends."""
    pipe = BlockedReader()
    yield pipe
    pipe.release()
    os.close(pipe.read_end)
    os.close(pipe.write_end)


@pytest.fixture
def domain_with_reader(
    reader: BlockedReader, domain_factory: Factory
) -> Iterator[tuple[AppDomain, BlockedReader]]:
    """A domain with a thread stuck in os.read(); released, then unloaded, after the test."""
    d = domain_factory("Blocked")
    reader.block(d)
    yield d, reader
    reader.release()


def test_unload_times_out_on_long_c_call(
    domain_with_reader: tuple[AppDomain, BlockedReader],
) -> None:
    d, _ = domain_with_reader
    begun = time.monotonic()
    with pytest.raises(CannotUnloadAppDomainException):
        AppDomain.unload(d, timeout=0.5)
    # Bounded: it gave up although the thread is still stuck.
    assert time.monotonic() - begun < 2.5


def test_domain_usable_after_cancelled_unload(
    domain_with_reader: tuple[AppDomain, BlockedReader],
) -> None:
    d, reader = domain_with_reader
    d.set_data("kept", [1, 2, 3])
    with pytest.raises(CannotUnloadAppDomainException):
        AppDomain.unload(d, timeout=0.3)
    assert d.get_data("kept") == [1, 2, 3]
    assert d.do_callback(helpers.add, 20, 22) == 42
    reader.release()
    # Once the reader is released the domain unloads for real.
    AppDomain.unload(d, timeout=JOIN)
    with pytest.raises(AppDomainUnloadedException):
        d.get_data("kept")


# -- refusals ---------------------------------------------------------------------------------


def test_unload_default_domain_is_refused() -> None:
    with pytest.raises(AppDomainError, match="default domain"):
        AppDomain.unload(AppDomain.current_domain)


def test_unload_twice_raises_unloaded() -> None:
    d = AppDomain.create_domain("Twice")
    AppDomain.unload(d)
    with pytest.raises(AppDomainUnloadedException):
        AppDomain.unload(d)


def test_unload_non_domain_is_type_error() -> None:
    with pytest.raises(TypeError, match="'domain'"):
        AppDomain.unload("Worker")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda d: d.get_data("k"), id="get_data"),
        pytest.param(lambda d: d.set_data("k", 1), id="set_data"),
        pytest.param(lambda d: d.do_callback(helpers.noop), id="do_callback"),
        pytest.param(
            lambda d: d.create_instance_and_unwrap("domain_helpers", "Calculator"),
            id="create_instance_and_unwrap",
        ),
    ],
)
def test_calls_into_unloaded_domain_raise(use: Callable[[AppDomain], Any]) -> None:
    d = AppDomain.create_domain("Gone")
    AppDomain.unload(d)
    with pytest.raises(AppDomainUnloadedException):
        use(d)


def test_execute_assembly_into_unloaded_domain_raises(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    d = AppDomain.create_domain("GoneScript")
    AppDomain.unload(d)
    with pytest.raises(AppDomainUnloadedException):
        d.execute_assembly(str(script))


def test_proxy_into_unloaded_domain_raises() -> None:
    d = AppDomain.create_domain("GoneProxy")
    calc = d.create_instance_and_unwrap("domain_helpers", "Calculator")
    assert calc.add(1, 2) == 3
    AppDomain.unload(d)
    with pytest.raises(AppDomainUnloadedException):
        calc.add(1, 2)


# -- torn down mid-call ------------------------------------------------------------------------


def test_fast_call_torn_down_mid_call_raises(domain_factory: Factory) -> None:
    d = domain_factory("MidCallFast")
    started = Channel()
    # The calling thread switches into d and spins there until the unload aborts it.
    thread, out = _in_thread(d.do_callback, helpers.signal_then_spin, started)
    assert started.recv(timeout=JOIN) == "inside"
    AppDomain.unload(d, timeout=JOIN)
    thread.join(JOIN)
    assert not thread.is_alive()
    assert isinstance(out.get("error"), AppDomainUnloadedException)


def test_dispatched_call_torn_down_mid_call_raises(domain_factory: Factory) -> None:
    d = domain_factory("MidCallDispatched")
    busy_started = Channel()
    stop = Channel()
    # Keep d busy on one thread so the next call goes through d's dispatcher threads.
    busy, busy_out = _in_thread(d.do_callback, helpers.busy_until_closed, busy_started, stop)
    assert busy_started.recv(timeout=JOIN) == "busy"
    started = Channel()
    caller, out = _in_thread(d.do_callback, helpers.signal_then_spin, started)
    assert started.recv(timeout=JOIN) == "inside"
    AppDomain.unload(d, timeout=JOIN)
    caller.join(JOIN)
    busy.join(JOIN)
    assert not caller.is_alive() and not busy.is_alive()
    assert isinstance(out.get("error"), AppDomainUnloadedException)
    assert isinstance(busy_out.get("error"), AppDomainUnloadedException)


def test_call_blocked_in_channel_torn_down_mid_call_raises(domain_factory: Factory) -> None:
    d = domain_factory("MidCallChannel")
    started = Channel()
    never = Channel()
    thread, out = _in_thread(d.do_callback, helpers.signal_then_block, started, never)
    assert started.recv(timeout=JOIN) == "inside"
    AppDomain.unload(d, timeout=5.0)
    thread.join(JOIN)
    assert not thread.is_alive()
    assert isinstance(out.get("error"), AppDomainUnloadedException)


def test_unload_from_inside_itself_is_refused(domain: AppDomain) -> None:
    message = domain.do_callback(helpers.try_unload_self)
    assert "cannot unload itself" in message
