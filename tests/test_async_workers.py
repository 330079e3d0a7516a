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
def workers_restored() -> Iterator[None]:
    yield
    appdomain.set_async_workers(appdomain._remoting._async.DEFAULT_ASYNC_WORKERS)


def gather_meetings(rendezvous: helpers.Rendezvous, calls: int) -> list[int]:
    async def main() -> list[int]:
        waits = [rendezvous.meet.invoke_async(30.0) for _ in range(calls)]
        return list(await asyncio.gather(*waits))

    return asyncio.run(main())


@pytest.mark.usefixtures("workers_restored")
@pytest.mark.parametrize("workers", [None, 48], ids=["default-32", "set-48"])
def test_pool_overlaps_as_many_awaited_calls_as_it_has_workers(
    domain: AppDomain, workers: int | None
) -> None:
    if workers is not None:
        appdomain.set_async_workers(workers)
    calls = workers or appdomain._remoting._async.DEFAULT_ASYNC_WORKERS
    # Each call returns only when all of them wait in the callee at once.
    rendezvous: helpers.Rendezvous = domain.create_instance_and_unwrap(
        "remoting_helpers", "Rendezvous", calls
    )
    assert sorted(gather_meetings(rendezvous, calls)) == list(range(calls))


@pytest.mark.usefixtures("workers_restored")
def test_set_async_workers_bounds_the_overlap(domain: AppDomain) -> None:
    appdomain.set_async_workers(2)
    gauge: helpers.Gauge = domain.create_instance_and_unwrap("remoting_helpers", "Gauge")
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
