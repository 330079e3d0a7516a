"""Unloading a domain whose GIL a thread holds in C code: unload gives up in time (issue 20).

The stuck thread blocks in read() through ctypes.PyDLL, which keeps the GIL, on a pipe
the test writes to once unload has given up; then the domain must be usable and unload.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import domain_helpers as helpers
import pytest

from appdomain import (
    AppDomain,
    AppDomainUnloadedException,
    CannotUnloadAppDomainException,
    _core,
    marshal,
)
from appdomain._core import _client, _compat
from appdomain._native import _ext

pytestmark = pytest.mark.usefixtures("route")

Factory = Callable[..., AppDomain]
JOIN = 30.0
# Unload's bound here, and how much longer than it an unload that gives up may take.
TIMEOUT = 1.0
SLACK = 2.0


class GilPipe:
    """Pipes for a thread stuck in read() with its domain's GIL held: go, then release."""

    def __init__(self) -> None:
        self.go_r, self.go_w = os.pipe()
        self.r, self.w = os.pipe()
        self.ready_r, self.ready_w = os.pipe()
        self.released = False

    def wait_held(self, interp_id: int, ident: int | None = None) -> tuple[int, int]:
        """Wait until the reader is about to read and holds the domain's GIL (ident, if given)."""
        assert os.read(self.ready_r, 1) == b"r"
        until = time.monotonic() + JOIN
        while True:
            holder = _ext.gil_holder(interp_id)
            if holder is not None and (ident is None or holder[0] == ident):
                return holder
            assert time.monotonic() < until, f"no thread took the GIL of {interp_id} in {JOIN} s"
            time.sleep(0.001)  # polls a condition; no ordering rests on it

    def release(self) -> None:
        if not self.released:
            self.released = True
            os.write(self.w, b"x")

    def close(self) -> None:
        self.release()
        os.write(self.go_w, b"x")  # a reader still waiting to start ends too
        for fd in (self.go_r, self.go_w, self.r, self.w, self.ready_r, self.ready_w):
            os.close(fd)


@pytest.fixture
def pipe() -> Iterator[GilPipe]:
    pipe = GilPipe()
    yield pipe
    pipe.close()


def _stuck_thread(d: AppDomain, pipe: GilPipe) -> int:
    """Start a thread of d stuck in read() holding d's GIL; return its ident."""
    ident: int = d.do_callback(helpers.start_gil_holding_reader, pipe.go_r, pipe.r, pipe.ready_w)
    os.write(pipe.go_w, b"x")
    pipe.wait_held(d.route.interp_id, ident)
    return ident


def _stuck_call(d: AppDomain, pipe: GilPipe) -> threading.Thread:
    """Make a call into d, from a thread of this domain, stuck in read() holding d's GIL."""
    thread = threading.Thread(
        target=d.do_callback,
        args=(helpers.read_holding_gil, pipe.r, pipe.ready_w),
        name="stuck-caller",
    )
    thread.start()
    pipe.wait_held(d.route.interp_id, thread.ident)
    return thread


def _unload_fails(d: AppDomain) -> tuple[str, float]:
    begun = time.monotonic()
    with pytest.raises(CannotUnloadAppDomainException) as info:
        AppDomain.unload(d, timeout=TIMEOUT)
    return str(info.value), time.monotonic() - begun


def test_unload_gives_up_on_a_thread_holding_the_gil(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("GilThread")
    _stuck_thread(d, pipe)
    _, took = _unload_fails(d)
    assert took < TIMEOUT + SLACK, f"unload took {took:.2f} s, expected < {TIMEOUT + SLACK} s"


def test_unload_error_says_a_thread_holds_the_gil(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("GilThreadMessage")
    _stuck_thread(d, pipe)
    message, _ = _unload_fails(d)
    assert "a thread holds the domain's GIL in native code" in message, message


def test_unload_error_names_the_domain_thread_holding_the_gil(
    domain_factory: Factory, pipe: GilPipe
):
    d = domain_factory("GilThreadName")
    ident = _stuck_thread(d, pipe)
    message, _ = _unload_fails(d)
    # 3.14 names OS threads after Python threads; 3.13 leaves only the ident.
    expected = "'gil-reader'" if sys.version_info >= (3, 14) else f"thread ident {ident}"
    assert expected in message, f"expected {expected!r} in {message!r}"


def test_unload_error_names_a_caller_holding_the_gil(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("GilCall")
    thread = _stuck_call(d, pipe)
    message, _ = _unload_fails(d)
    pipe.release()
    thread.join(JOIN)
    assert "thread 'stuck-caller'" in message, message


def test_unload_gives_up_on_a_call_holding_the_gil(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("GilCallBound")
    thread = _stuck_call(d, pipe)
    _, took = _unload_fails(d)
    pipe.release()
    thread.join(JOIN)
    assert took < TIMEOUT + SLACK, f"unload took {took:.2f} s, expected < {TIMEOUT + SLACK} s"


def test_domain_usable_once_the_gil_is_free(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("GilUsable")
    d.set_data("kept", [1, 2])
    _stuck_thread(d, pipe)
    _unload_fails(d)
    pipe.release()
    assert d.get_data("kept") == [1, 2]
    assert d.do_callback(helpers.add, 20, 22) == 42


def test_domain_unloads_once_the_gil_is_free(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("GilUnloads")
    _stuck_thread(d, pipe)
    _unload_fails(d)
    pipe.release()
    AppDomain.unload(d, timeout=JOIN)
    with pytest.raises(AppDomainUnloadedException):
        d.get_data("kept")


def test_second_unload_while_stuck_also_gives_up(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("GilTwice")
    _stuck_thread(d, pipe)
    _unload_fails(d)
    _, took = _unload_fails(d)
    assert took < TIMEOUT + SLACK, f"unload took {took:.2f} s, expected < {TIMEOUT + SLACK} s"


def test_call_with_timeout_into_a_gil_held_domain_times_out(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("GilCallTimeout")
    _stuck_thread(d, pipe)
    begun = time.monotonic()
    with pytest.raises(TimeoutError):
        _core.call(d.route, "domain.get_data", "x", timeout=TIMEOUT)
    took = time.monotonic() - begun
    assert took < TIMEOUT + SLACK, f"the call took {took:.2f} s, expected < {TIMEOUT + SLACK} s"


# -- a reply arriving after its caller gave up ------------------------------------------------


def _late_reply_then_call(d: AppDomain, pipe: GilPipe) -> Any:
    """Time out a dispatched call, let its reply land late, then make a plain call."""
    wire_args = marshal.encode_call((pipe.r, pipe.ready_w), {})
    payload = ("domain_helpers", "read_holding_gil", wire_args)
    with pytest.raises(TimeoutError):
        _core.call(d.route, "domain.callback", payload, timeout=0.2)
    pipe.release()
    box = _client._mailbox()
    until = time.monotonic() + JOIN
    while not _compat.queue_count(box.queue):  # the late reply lands on this thread's mailbox
        assert time.monotonic() < until, f"the late reply did not arrive in {JOIN} s"
        time.sleep(0.001)  # polls a condition; no ordering rests on it
    return d.do_callback(helpers.add, 2, 3)


def test_late_reply_is_not_taken_by_the_next_call(domain_factory: Factory, pipe: GilPipe):
    d = domain_factory("LateReply")
    out: dict[str, Any] = {}

    def run() -> None:  # not the main thread: 3.14's main thread never takes the fast route
        try:
            out["result"] = _late_reply_then_call(d, pipe)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(JOIN)
    assert out == {"result": 5}, f"expected the call's own result 5, got {out!r}"
