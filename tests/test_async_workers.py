"""How many begin_invoke/invoke_async calls overlap, and set_async_workers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import remoting_helpers as helpers

import appdomain
from appdomain import AppDomain

pytestmark = pytest.mark.usefixtures("route")


@pytest.fixture
def worker() -> Iterator[AppDomain]:
    domain = AppDomain.create_domain("AsyncWorker")
    yield domain
    AppDomain.unload(domain)


@pytest.fixture
def workers_restored() -> Iterator[None]:
    yield
    appdomain.set_async_workers(appdomain._remoting._async.DEFAULT_ASYNC_WORKERS)


def gather_meetings(rendezvous: helpers.Rendezvous, calls: int) -> list[int]:
    async def main() -> list[int]:
        waits = [rendezvous.meet.invoke_async(30.0) for _ in range(calls)]
        return list(await asyncio.gather(*waits))

    return asyncio.run(main())


def test_default_pool_overlaps_32_awaited_calls(worker: AppDomain) -> None:
    # Each call returns only when all 32 wait in the callee at once.
    rendezvous: helpers.Rendezvous = worker.create_instance_and_unwrap(
        "remoting_helpers", "Rendezvous", 32
    )
    assert sorted(gather_meetings(rendezvous, 32)) == list(range(32))


@pytest.mark.usefixtures("workers_restored")
def test_set_async_workers_raises_the_overlap(worker: AppDomain) -> None:
    appdomain.set_async_workers(48)
    rendezvous: helpers.Rendezvous = worker.create_instance_and_unwrap(
        "remoting_helpers", "Rendezvous", 48
    )
    assert sorted(gather_meetings(rendezvous, 48)) == list(range(48))


@pytest.mark.usefixtures("workers_restored")
def test_set_async_workers_bounds_the_overlap(worker: AppDomain) -> None:
    appdomain.set_async_workers(2)
    gauge: helpers.Gauge = worker.create_instance_and_unwrap("remoting_helpers", "Gauge")
    futures = [gauge.hold.begin_invoke(30.0) for _ in range(5)]
    assert gauge.wait_active(2, 30.0)
    assert sum(future.running() for future in futures) == 2  # the other three wait
    gauge.release()
    for future in futures:
        future.result(timeout=30)
    assert gauge.peak == 2


def test_async_workers_reports_the_setting(workers_restored: None) -> None:
    appdomain.set_async_workers(5)
    assert appdomain._remoting._async.async_workers() == 5


@pytest.mark.parametrize("bad", [0, -3])
def test_set_async_workers_refuses_fewer_than_one(bad: int) -> None:
    with pytest.raises(ValueError, match=f"'workers' must be at least 1 \\(got {bad}\\)"):
        appdomain.set_async_workers(bad)


@pytest.mark.parametrize("bad", ["4", 2.0, True, None])
def test_set_async_workers_refuses_a_non_int(bad: object) -> None:
    with pytest.raises(TypeError, match="'workers' must be int"):
        appdomain.set_async_workers(bad)  # type: ignore[arg-type]
