"""Distributed reference counts stay exact while releases are batched (_remoting._release)."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable

import pytest
import remoting_helpers as helpers

from appdomain import AppDomain
from appdomain._remoting import live_count

pytestmark = pytest.mark.usefixtures("route")


@pytest.fixture
def keeper(domain: AppDomain) -> helpers.Keeper:
    proxy: helpers.Keeper = domain.create_instance_and_unwrap("remoting_helpers", "Keeper")
    return proxy


def collect_everywhere(domain: AppDomain) -> None:
    domain.do_callback(gc.collect)
    gc.collect()


def on_8_threads(work: Callable[..., object], *args: object) -> list[BaseException]:
    """Run work(*args) on 8 threads that start together; return what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def run() -> None:
        start.wait()
        try:
            work(*args)
        except BaseException as exc:  # returned: the test asserts there is none
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_fresh_reference_per_call_leaves_nothing_exported(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    for _ in range(300):
        keeper.touch(helpers.Client())
    collect_everywhere(domain)
    assert live_count() == 0


def test_released_object_is_freed_without_being_asked(keeper: helpers.Keeper) -> None:
    # Nobody calls into this domain afterwards: the batched wake alone must drain it.
    freed = threading.Event()
    client = helpers.Client()
    watch = weakref.ref(client, lambda _: freed.set())
    keeper.touch(client)
    del client
    assert freed.wait(10), "the owner kept an object no domain references any more"
    assert watch() is None


def test_kept_reference_outlives_the_same_object_sent_by_8_threads(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    client = helpers.Client()
    keeper.keep(client)

    def send_and_drop(sent: helpers.Client) -> None:
        for _ in range(100):
            keeper.touch(sent)

    errors = on_8_threads(send_and_drop, client)
    del client
    collect_everywhere(domain)
    assert errors == []
    assert keeper.kept_twice(21) == (42, 1)  # still exported: the kept proxy works
    keeper.drop()
    collect_everywhere(domain)
    assert live_count() == 0


def test_reference_in_flight_while_the_last_proxy_dies(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    client = helpers.Client()
    for _ in range(200):
        keeper.keep(client)  # the domain's proxy gains a reference in flight
        keeper.drop()  # and loses its last holder
        domain.do_callback(gc.collect)
        assert keeper.echo(client) is client  # never released while one is in flight
    del client
    collect_everywhere(domain)
    assert live_count() == 0


def test_reference_passed_a_to_b_to_a_comes_home_and_is_released(domain: AppDomain) -> None:
    with AppDomain.create_domain("CountOther") as other:
        first: helpers.Keeper = domain.create_instance_and_unwrap("remoting_helpers", "Keeper")
        second: helpers.Keeper = other.create_instance_and_unwrap("remoting_helpers", "Keeper")
        client = helpers.Client()
        first.hand_on(second, client)  # A -> B -> C: C holds a proxy it got from B
        assert second.kept_twice(4) == (8, 1)
        assert first.echo(client) is client  # A -> B -> A: the original object
        second.drop()
        other.do_callback(gc.collect)
        del client
        collect_everywhere(domain)
        assert live_count() == 0


def test_proxy_dying_while_its_thread_makes_another_does_not_hang(domain: AppDomain) -> None:
    # The garbage collector runs finalizers wherever it runs: here, inside proxy_for's
    # locked section, as when building a proxy type imports a module.
    from appdomain._remoting import _proxy

    doomed = domain.create_instance_and_unwrap("remoting_helpers", "Keeper")
    done = threading.Event()

    def drop_while_locked() -> None:
        nonlocal doomed
        with _proxy._proxies_lock:
            del doomed  # its finalizer runs now, in this thread
        done.set()

    thread = threading.Thread(target=drop_while_locked, daemon=True)  # if it hangs
    thread.start()
    thread.join(10)
    assert done.is_set(), "a proxy's finalizer waited for a lock its own thread held"


def test_reference_passed_for_one_call_leaves_no_proxy_behind(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    for _ in range(50):
        keeper.touch(helpers.Client())
    assert keeper.proxies_here() == 0  # no collection needed: each died with its call
    assert live_count() == 0


def test_callback_through_a_reference_passed_for_one_call(keeper: helpers.Keeper) -> None:
    assert keeper.call_back(helpers.Client(), 5) == (10, 1)
    assert live_count() == 0


def test_one_object_passed_twice_in_one_call_is_one_proxy(keeper: helpers.Keeper) -> None:
    client = helpers.Client()
    assert keeper.same(client, client) is True
    assert keeper.same(client, helpers.Client()) is False


def test_reference_kept_by_a_call_that_fails_stays_counted(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    client = helpers.Client()
    with pytest.raises(ValueError, match="kept, then failed"):
        keeper.keep_and_fail(client)
    del client
    collect_everywhere(domain)
    assert keeper.kept_twice(3) == (6, 1)  # still exported: the kept proxy works
    keeper.drop()
    collect_everywhere(domain)
    assert live_count() == 0


def test_fresh_references_sent_by_8_threads_at_once_are_all_released(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    def send() -> None:
        for i in range(100):
            client = helpers.Client()
            if i % 10 == 0:
                keeper.keep(client)  # some kept (and replaced), most not
            else:
                assert keeper.call_back(client, i) == (2 * i, 1)

    assert on_8_threads(send) == []
    keeper.drop()
    collect_everywhere(domain)
    assert live_count() == 0


def test_returned_reference_is_released_when_its_proxy_dies(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    exported = domain.do_callback(live_count)  # the keeper itself
    made = keeper.make()
    assert made.twice(2) == (4, domain.id)
    assert domain.do_callback(live_count) == exported + 1
    del made
    gc.collect()
    assert domain.do_callback(live_count) == exported


def test_returned_references_dropped_at_once_are_all_released(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    exported = domain.do_callback(live_count)
    for _ in range(300):
        keeper.make()
    collect_everywhere(domain)
    assert domain.do_callback(live_count) == exported


def test_object_returned_again_while_its_proxies_die_is_never_released(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    exported = domain.do_callback(live_count)
    for _ in range(200):
        assert keeper.mine().twice(1) == (2, domain.id)  # its proxy dies at once
    held = keeper.mine()
    collect_everywhere(domain)
    domain.do_callback(live_count)  # the owner applies every queued release
    assert held.twice(3) == (6, domain.id)
    assert keeper.mine() is held  # one proxy per object
    del held
    collect_everywhere(domain)
    assert domain.do_callback(live_count) == exported


def test_returned_references_made_by_8_threads_are_all_released(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    exported = domain.do_callback(live_count)
    kept: list[helpers.Client] = []

    def make_and_drop() -> None:
        for i in range(100):
            made = keeper.make()
            assert made.twice(i) == (2 * i, domain.id)
            if i % 10 == 0:
                kept.append(made)
            shared = keeper.mine()
            assert shared.twice(1) == (2, domain.id)

    assert on_8_threads(make_and_drop) == []
    collect_everywhere(domain)
    assert [client.twice(5) for client in kept] == [(10, domain.id)] * len(kept)
    assert domain.do_callback(live_count) == exported + len(kept)
    kept.clear()
    collect_everywhere(domain)
    assert domain.do_callback(live_count) == exported


def test_reference_returned_by_a_call_back_a_to_b_to_a_is_released(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    maker = helpers.Maker()
    assert keeper.take_from(maker, 4) == (8, 1)  # B kept an object A returned to it
    assert live_count() == 1
    keeper.drop()
    domain.do_callback(gc.collect)
    assert live_count() == 0


def test_fresh_references_sent_to_two_domains_in_turn_arrive_whole(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    # After the first call a domain gets a type's references in a compact form: each
    # domain must expand its own.
    with AppDomain.create_domain("CountTwin") as twin:
        other: helpers.Keeper = twin.create_instance_and_unwrap("remoting_helpers", "Keeper")
        for i in range(50):
            assert keeper.call_back(helpers.Client(), i) == (2 * i, 1)
            assert other.call_back(helpers.Client(), i) == (2 * i, 1)
        collect_everywhere(domain)
        twin.do_callback(gc.collect)
        assert live_count() == 0


def test_objects_of_one_type_returned_to_two_callers_work_in_both(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    # A callee names a returned object's type in full once per caller, then by a token:
    # each caller must get the full form first.
    with AppDomain.create_domain("CountCaller") as caller:
        for i in range(20):
            assert keeper.make().twice(i) == (2 * i, domain.id)
        assert caller.do_callback(helpers.use_made, keeper, 20) == [
            (2 * i, domain.id) for i in range(20)
        ]
        assert keeper.make().twice(3) == (6, domain.id)
        caller.do_callback(gc.collect)
    collect_everywhere(domain)
    assert domain.do_callback(live_count) == 1  # the keeper


def test_first_objects_returned_to_8_threads_at_once_all_work(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    # The reply naming the type in full can reach this domain after another thread's
    # reply that names it by token only.
    results: list[tuple[int, int]] = []

    def first_calls() -> None:
        results.extend(keeper.make().twice(i) for i in range(5))

    assert on_8_threads(first_calls) == []
    assert sorted(results) == sorted([(2 * i, domain.id) for i in range(5)] * 8)


def test_objects_with_a_lease_returned_again_and_again_work_and_are_released(
    keeper: helpers.Keeper, domain: AppDomain
) -> None:
    # Their type is named in full the first time, by token afterwards, as for the others.
    exported = domain.do_callback(live_count)
    assert [keeper.make_leased().hello() for _ in range(20)] == ["hello"] * 20
    collect_everywhere(domain)
    assert domain.do_callback(live_count) == exported
