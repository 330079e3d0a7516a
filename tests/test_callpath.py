"""The call path across real domains: concurrency, re-entrancy, callbacks, errors, timeouts."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import domain_helpers as helpers
import pytest

from appdomain import AppDomain, Channel, _core, is_transparent_proxy

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")

Factory = Callable[..., AppDomain]
JOIN = 60.0
THREADS = 8
CALLS = 500


def _run_threads(count: int, work: Callable[[int], list[Any]]) -> list[list[Any]]:
    """Run work(k) on count threads at once; return each thread's list (or raise its error)."""
    results: list[list[Any]] = [[] for _ in range(count)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(k: int) -> None:
        try:
            barrier.wait()
            results[k] = work(k)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads), "a calling thread hung"
    if errors:
        raise errors[0]
    return results


# -- many threads, one domain --------------------------------------------------------------


def test_many_threads_do_callback_results_right(domain: AppDomain) -> None:
    def work(k: int) -> list[Any]:
        return [domain.do_callback(helpers.add, k * 1000, i) for i in range(CALLS)]

    results = _run_threads(THREADS, work)
    for k, got in enumerate(results):
        assert got == [k * 1000 + i for i in range(CALLS)]


def test_many_threads_proxy_calls_results_right(domain: AppDomain) -> None:
    calc = domain.create_instance_and_unwrap("domain_helpers", "Calculator")

    def work(k: int) -> list[Any]:
        return [calc.add(k * 1000, i) for i in range(CALLS)]

    results = _run_threads(THREADS, work)
    for k, got in enumerate(results):
        assert got == [k * 1000 + i for i in range(CALLS)]


def test_many_threads_callbacks_into_default_domain(domain: AppDomain) -> None:
    recorder = helpers.Recorder()

    def work(k: int) -> list[Any]:
        return [domain.do_callback(helpers.call_back_default, recorder, (k, i)) for i in range(50)]

    results = _run_threads(THREADS, work)
    assert all(got == [1] * 50 for got in results)
    assert sorted(value for _, value in recorder.calls) == sorted(
        (k, i) for k in range(THREADS) for i in range(50)
    )


def test_many_threads_proxy_callbacks_reach_their_own_objects(domain: AppDomain) -> None:
    # Each thread's callbacks run in the default domain, on its own object, in its order.
    bouncer = domain.create_instance_and_unwrap("domain_helpers", "Bouncer")
    recorders = [helpers.Recorder() for _ in range(THREADS)]

    def work(k: int) -> list[Any]:
        return [bouncer.call_back(recorders[k], (k, i)) for i in range(50)]

    results = _run_threads(THREADS, work)
    assert all(got == [1] * 50 for got in results)
    for k, recorder in enumerate(recorders):
        assert recorder.calls == [(1, (k, i)) for i in range(50)]


def test_threads_calling_two_domains_at_once(domain_factory: Factory) -> None:
    a = domain_factory("ConcA")
    b = domain_factory("ConcB")

    def work(k: int) -> list[Any]:
        target = a if k % 2 else b
        return [target.do_callback(helpers.add, k, i) for i in range(200)]

    results = _run_threads(THREADS, work)
    for k, got in enumerate(results):
        assert got == [k + i for i in range(200)]


# -- callbacks and re-entrant chains ---------------------------------------------------------


def test_callback_into_default_domain(domain: AppDomain) -> None:
    recorder = helpers.Recorder()
    assert domain.do_callback(helpers.call_back_default, recorder, "hello") == 1
    assert recorder.calls == [(1, "hello")]


def test_proxy_method_calls_back_into_default_domain(domain: AppDomain) -> None:
    bouncer = domain.create_instance_and_unwrap("domain_helpers", "Bouncer")
    recorder = helpers.Recorder()
    assert bouncer.call_back(recorder, 7) == 1
    assert recorder.calls == [(1, 7)]


def _open_descriptors() -> int:
    return len(os.listdir("/dev/fd"))


def test_callbacks_from_threads_that_end_leave_no_sockets_behind(domain: AppDomain) -> None:
    bouncer = domain.create_instance_and_unwrap("domain_helpers", "Bouncer")
    recorder = helpers.Recorder()
    one_at_a_time = threading.Lock()
    count = THREADS * 3

    def call_back(k: int) -> list[Any]:
        with one_at_a_time:  # each call finds the domain free
            return [bouncer.call_back(recorder, k)]  # a mailbox in the domain, for the reply

    _run_threads(1, call_back)
    before = _open_descriptors()
    _run_threads(count, call_back)  # all alive at once (its barrier): each its own thread
    _run_threads(1, call_back)
    assert _open_descriptors() - before < THREADS
    assert len(recorder.calls) == count + 2


def test_reentrant_chain_default_b_default(domain: AppDomain) -> None:
    bouncer = domain.create_instance_and_unwrap("domain_helpers", "Bouncer")
    recorder = helpers.Recorder()
    d = domain.id
    assert bouncer.bounce(recorder, 4) == [d, 1, d, 1, d]


def test_reentrant_chain_starting_in_default_domain(domain: AppDomain) -> None:
    bouncer = domain.create_instance_and_unwrap("domain_helpers", "Bouncer")
    recorder = helpers.Recorder()
    d = domain.id
    assert recorder.bounce(bouncer, 5) == [1, d, 1, d, 1, d]


def test_reentrant_chain_between_two_domains(domain_factory: Factory) -> None:
    a = domain_factory("ChainA")
    b = domain_factory("ChainB")
    in_a = a.create_instance_and_unwrap("domain_helpers", "Bouncer")
    in_b = b.create_instance_and_unwrap("domain_helpers", "Bouncer")
    assert in_a.bounce(in_b, 4) == [a.id, b.id, a.id, b.id, a.id]


def test_reentrant_chains_from_many_threads(domain: AppDomain) -> None:
    bouncer = domain.create_instance_and_unwrap("domain_helpers", "Bouncer")
    recorder = helpers.Recorder()
    d = domain.id

    def work(k: int) -> list[Any]:
        return [bouncer.bounce(recorder, 3) for _ in range(20)]

    for got in _run_threads(THREADS, work):
        assert got == [[d, 1, d, 1]] * 20


def test_proxy_is_transparent_and_runs_remotely(domain: AppDomain) -> None:
    calc = domain.create_instance_and_unwrap("domain_helpers", "Calculator")
    assert is_transparent_proxy(calc)
    assert isinstance(calc, helpers.Calculator)
    assert calc.where() == domain.id


# -- errors ------------------------------------------------------------------------------------


def test_callee_exception_same_type_with_remote_traceback(domain: AppDomain) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        domain.do_callback(helpers.divide, 1, 0)
    assert "divide" in _remote_text(info.value)


def _remote_text(exc: BaseException) -> str:
    parts = [str(exc), *getattr(exc, "__notes__", [])]
    parts.append(str(getattr(exc, "remote_traceback", "")))
    cause = exc.__cause__
    if cause is not None:
        parts.append(str(cause))
    return "\n".join(parts)


def test_domain_still_serves_after_callee_exception(domain: AppDomain) -> None:
    with pytest.raises(ZeroDivisionError):
        domain.do_callback(helpers.divide, 1, 0)
    assert domain.do_callback(helpers.add, 1, 1) == 2


# -- the call path itself: timeouts and the dispatcher route --------------------------------------


def test_call_with_timeout_raises_timeout_error(domain: AppDomain) -> None:
    domain.do_callback(helpers.register_test_ops)
    with pytest.raises(TimeoutError):
        _core.call(domain.route, "test.wait", 5.0, timeout=0.05)
    # Stop the abandoned call so teardown does not wait for it.
    domain.do_callback(helpers.release_test_ops)


def test_late_reply_to_timed_out_call_is_dropped(domain: AppDomain) -> None:
    domain.do_callback(helpers.register_test_ops)
    with pytest.raises(TimeoutError):
        _core.call(domain.route, "test.wait", 5.0, timeout=0.05)
    domain.do_callback(helpers.release_test_ops)
    # The next calls on this thread get their own replies, not the stale one.
    assert _core.call(domain.route, "test.echo", "fresh", timeout=30.0) == "fresh"
    assert domain.do_callback(helpers.echo, "again") == "again"


def test_call_into_busy_domain_takes_dispatcher_route(domain: AppDomain) -> None:
    started = Channel()
    stop = Channel()
    out: dict[str, Any] = {}

    def keep_busy() -> None:
        out["loops"] = domain.do_callback(helpers.busy_until_closed, started, stop)

    busy = threading.Thread(target=keep_busy)
    busy.start()
    try:
        assert started.recv(timeout=JOIN) == "busy"
        # d is running another thread's fast call: these go through its dispatcher.
        assert [domain.do_callback(helpers.add, i, 1) for i in range(100)] == [
            i + 1 for i in range(100)
        ]
    finally:
        stop.close()
        busy.join(JOIN)
    assert not busy.is_alive()
    assert out["loops"] > 0


def test_domain_created_and_unloaded_from_a_domain(domain: AppDomain) -> None:
    nested_id, seen, after = domain.do_callback(helpers.create_use_unload, "Nested")
    assert nested_id > domain.id
    assert seen == (nested_id, "Nested", False)
    assert after == "AppDomainUnloadedException"


def test_calls_here_and_in_new_domains_take_the_route_under_test(
    route: str, domain: AppDomain
) -> None:
    assert helpers.on_native_route() is (route == "native")
    assert domain.do_callback(helpers.on_native_route) is (route == "native")
