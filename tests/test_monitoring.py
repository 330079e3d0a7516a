"""Monitoring: the processor time, memory and call counts of each domain, and statistics()."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import plugin_helpers
import pytest

from appdomain import AppDomain, AppDomainError

pytestmark = pytest.mark.usefixtures("route")

SPIN = 300_000  # ~20 ms of pure Python


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


@pytest.fixture
def monitoring() -> Iterator[None]:
    """Monitoring on for the test, off after it."""
    AppDomain.monitoring_is_enabled = True
    yield
    AppDomain.monitoring_is_enabled = False


def test_monitoring_is_off_by_default_and_its_figures_say_so(domain: AppDomain) -> None:
    assert AppDomain.monitoring_is_enabled is False
    assert AppDomain.MonitoringIsEnabled is False
    with pytest.raises(AppDomainError, match="monitoring is off: set AppDomain"):
        domain.monitoring_total_processor_time  # noqa: B018


def test_statistics_of_a_domain_never_monitored_leave_the_counts_out(domain: AppDomain) -> None:
    stats = domain.statistics()
    assert stats.monitoring is False
    assert stats.calls_in is None and stats.processor_time is None
    assert stats.survived_memory_size > 0  # read each time, monitoring or not


@pytest.mark.usefixtures("monitoring")
def test_processor_time_counts_the_calls_served(domain: AppDomain) -> None:
    # The first reading and the first callback import modules in the domain, which its
    # processor time counts too: done here, before the measured call.
    domain.statistics()
    domain.do_callback(plugin_helpers.timed_spin, 1)
    before = domain.monitoring_total_processor_time
    spent = domain.do_callback(plugin_helpers.timed_spin, SPIN) / 1e9  # measured inside
    counted = (domain.monitoring_total_processor_time - before).total_seconds()
    assert spent <= counted <= spent * 1.5 + 0.005  # the call's own overhead on top


@pytest.mark.usefixtures("monitoring")
def test_proxy_calls_are_counted_in_their_target(domain: AppDomain) -> None:
    worker = domain.create_instance_and_unwrap(plugin_helpers.Worker)
    before = domain.statistics()
    for _ in range(5):
        worker.spin(SPIN // 5)
    after = domain.statistics()
    assert after.calls_in is not None and before.calls_in is not None
    assert after.calls_in - before.calls_in >= 5
    assert after.processor_time is not None and before.processor_time is not None
    assert (after.processor_time - before.processor_time).total_seconds() > 0.005


@pytest.mark.usefixtures("monitoring")
def test_concurrent_calls_are_all_counted(domain: AppDomain) -> None:
    def caller() -> None:
        for _ in range(250):
            domain.do_callback(plugin_helpers.spin, 10)

    before = domain.statistics().calls_in
    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = domain.statistics().calls_in
    assert after is not None and before is not None
    assert after - before == 1000 + 1  # the first reading counts too, once it returned


@pytest.mark.usefixtures("monitoring")
def test_threads_the_domain_starts_are_counted(domain: AppDomain) -> None:
    before = domain.monitoring_total_processor_time
    thread_ns = domain.do_callback(plugin_helpers.spin_in_thread, SPIN)
    counted = (domain.monitoring_total_processor_time - before).total_seconds()
    assert counted >= thread_ns / 1e9 * 0.99


@pytest.mark.usefixtures("monitoring")
def test_calls_out_are_counted_by_their_caller(domain: AppDomain) -> None:
    here = AppDomain.current_domain
    before = here.statistics().calls_out
    for _ in range(3):
        domain.do_callback(plugin_helpers.spin, 1)
    after = here.statistics().calls_out
    assert after is not None and before is not None
    assert after - before >= 3


@pytest.mark.usefixtures("monitoring")
def test_proxy_calls_with_plain_arguments_are_counted_by_their_caller(domain: AppDomain) -> None:
    # Plain arguments take the C switch's one-step route, which bypasses Python: C counts
    # those calls while monitoring is on.
    calc = domain.create_instance_and_unwrap("remoting_helpers", "Calculator")
    here = AppDomain.current_domain
    before = here.statistics().calls_out
    for i in range(50):
        calc.add(i, 1)
    after = here.statistics().calls_out
    assert after is not None and before is not None
    assert after - before >= 50


@pytest.mark.usefixtures("monitoring")
def test_survived_memory_follows_the_domains_live_objects(domain: AppDomain) -> None:
    before = domain.monitoring_survived_memory_size
    domain.do_callback(plugin_helpers.allocate, 200_000)
    grown = domain.monitoring_survived_memory_size
    assert grown - before > 200_000 * 40  # each str of ~10 chars takes ~50 bytes
    domain.do_callback(plugin_helpers.drop)
    assert domain.monitoring_survived_memory_size < grown - 200_000 * 40


@pytest.mark.usefixtures("monitoring")
def test_allocated_memory_never_goes_down(domain: AppDomain) -> None:
    before = domain.monitoring_total_allocated_memory_size
    domain.do_callback(plugin_helpers.allocate, 200_000)
    grown = domain.monitoring_total_allocated_memory_size
    domain.do_callback(plugin_helpers.drop)
    assert before < grown <= domain.monitoring_total_allocated_memory_size
    assert before % (1 << 20) == 0  # whole arenas


@pytest.mark.usefixtures("monitoring")
def test_process_survived_memory_sums_the_domains(domain: AppDomain) -> None:
    domain.do_callback(plugin_helpers.allocate, 100_000)
    process = AppDomain.monitoring_survived_process_memory_size
    assert process > domain.monitoring_survived_memory_size
    assert AppDomain.MonitoringSurvivedProcessMemorySize > 0
    domain.do_callback(plugin_helpers.drop)


def test_statistics_counts_proxies_and_exported_objects(domain: AppDomain) -> None:
    worker = domain.create_instance_and_unwrap(plugin_helpers.Worker)
    there, here = domain.statistics(), AppDomain.current_domain.statistics()
    assert there.objects_exported == 1
    assert here.proxies_held >= 1
    assert there.threads >= 0
    del worker


@pytest.mark.usefixtures("monitoring")
def test_statistics_prints_a_readable_snapshot(domain: AppDomain) -> None:
    domain.do_callback(plugin_helpers.spin, 1)
    text = str(domain.statistics())
    assert text.startswith(f"domain {domain.id} ({domain.friendly_name!r}), monitoring on")
    for label in ("calls in / out", "processor time", "threads", "proxies held",
                  "objects exported", "allocated memory", "survived memory"):  # fmt: skip
        assert label in text


def test_a_domain_turns_monitoring_on_for_the_process(
    domain_factory: Callable[..., AppDomain],
) -> None:
    first = domain_factory()
    try:
        assert first.do_callback(plugin_helpers.set_monitoring, True) is True
        assert AppDomain.monitoring_is_enabled is True
        second = domain_factory()
        assert second.statistics().monitoring is True  # a new domain starts monitored
    finally:
        AppDomain.monitoring_is_enabled = False
    assert first.statistics().monitoring is False


def test_monitoring_switch_takes_only_a_bool() -> None:
    with pytest.raises(TypeError, match="'monitoring_is_enabled' must be bool"):
        AppDomain.monitoring_is_enabled = "yes"  # type: ignore[assignment]


def test_net_names_are_aliases(domain: AppDomain) -> None:
    AppDomain.MonitoringIsEnabled = True
    try:
        assert domain.MonitoringTotalProcessorTime >= type(domain.MonitoringTotalProcessorTime)(0)
        assert domain.MonitoringSurvivedMemorySize > 0
        assert domain.MonitoringTotalAllocatedMemorySize > 0
    finally:
        AppDomain.MonitoringIsEnabled = False


def test_statistics_count_the_threads_running_in_the_domain(
    domain: AppDomain, pipe: tuple[int, int]
) -> None:
    read, write = pipe
    assert domain.statistics().threads == 0  # the reading itself is left out
    domain.do_callback(plugin_helpers.start_blocked_reader, read)
    try:
        assert domain.statistics().threads == 1
    finally:
        os.write(write, b"x")
