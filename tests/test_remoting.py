"""Transparent proxies across real domains: calls, fields, protocols, references, errors."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator

import pytest
import remoting_helpers as helpers
from conftest import host_setup, unload_quietly

import appdomain
from appdomain import (
    AppDomain,
    AppDomainUnloadedException,
    CallContext,
    Ref,
    RemoteException,
    RemotingException,
    SerializationException,
)

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")


@pytest.fixture(params=["subinterpreter", "process"])
def worker(request: pytest.FixtureRequest) -> Iterator[AppDomain]:
    """A domain on each host of this machine: a subinterpreter, a child process.

    tests/test_remoting_ray.py runs these tests again on a Ray actor.
    """
    domain = AppDomain.create_domain("RemotingWorker", host_setup(request.param))
    yield domain
    unload_quietly(domain)


@pytest.fixture
def calc(worker: AppDomain) -> helpers.Calculator:
    proxy: helpers.Calculator = worker.create_instance_and_unwrap(
        "remoting_helpers", "Calculator", 5
    )
    return proxy


# -- creating ------------------------------------------------------------------------------


def test_create_returns_transparent_proxy_of_the_type(calc: helpers.Calculator) -> None:
    assert isinstance(calc, helpers.Calculator)
    assert appdomain.is_transparent_proxy(calc)


def test_local_object_is_not_a_transparent_proxy() -> None:
    assert not appdomain.is_transparent_proxy(helpers.Calculator())


def test_object_lives_in_the_target_domain(worker: AppDomain, calc: helpers.Calculator) -> None:
    assert calc.where() == worker.do_callback(helpers.domain_id)


def test_repr_names_type_and_domain(worker: AppDomain, calc: helpers.Calculator) -> None:
    text = repr(calc)
    assert "remoting_helpers.Calculator" in text
    assert f"domain #{worker.id}" in text


def test_dotnet_alias_creates_instance(worker: AppDomain) -> None:
    proxy = worker.CreateInstanceAndUnwrap("remoting_helpers", "Calculator")
    assert proxy.add(2, 3) == 5


def test_constructor_keyword_arguments_cross(worker: AppDomain) -> None:
    proxy = worker.create_instance_and_unwrap("remoting_helpers", "Calculator", start=7)
    assert proxy.total == 7


def test_create_from_path(worker: AppDomain, tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "plugin_calc.py"
    path.write_text(
        "from appdomain import MarshalByRefObject\n"
        "class Plugin(MarshalByRefObject):\n"
        "    def name(self):\n"
        "        return __name__\n"
    )
    proxy = worker.create_instance_from_and_unwrap(str(path), "Plugin")
    assert proxy.name() == "plugin_calc"


def test_create_from_path_names_the_type_by_a_class(worker: AppDomain) -> None:
    calc = worker.create_instance_from_and_unwrap(helpers.__file__, helpers.Calculator, 10)
    assert appdomain.is_transparent_proxy(calc)
    assert calc.where() == worker.do_callback(helpers.domain_id)
    assert calc.total == 10  # the constructor got 10


def test_create_from_path_refuses_a_local_class(worker: AppDomain) -> None:
    class Local(appdomain.MarshalByRefObject):
        pass

    with pytest.raises(TypeError, match="defined inside a function cannot be found"):
        worker.create_instance_from_and_unwrap(helpers.__file__, Local)


def test_serializable_type_comes_back_as_a_copy(worker: AppDomain) -> None:
    point = worker.create_instance_and_unwrap("remoting_helpers", "Point", 1, 2)
    assert point == helpers.Point(1, 2)
    assert not appdomain.is_transparent_proxy(point)


def test_type_that_cannot_cross_is_refused_with_reason(worker: AppDomain) -> None:
    with pytest.raises(SerializationException, match="MarshalByRefObject"):
        worker.create_instance_and_unwrap("remoting_helpers", "NotCrossable")


def test_missing_type_is_a_clear_error(worker: AppDomain) -> None:
    with pytest.raises(TypeError, match="no type 'Nope'"):
        worker.create_instance_and_unwrap("remoting_helpers", "Nope")


def test_non_string_type_name_is_refused(worker: AppDomain) -> None:
    with pytest.raises(TypeError, match="'type_name' must be a non-empty str"):
        worker.create_instance_and_unwrap("remoting_helpers", 3)  # type: ignore[arg-type]


def test_create_from_the_class_itself(worker: AppDomain) -> None:
    calc = worker.create_instance_and_unwrap(helpers.Calculator, 10)
    assert appdomain.is_transparent_proxy(calc)
    assert isinstance(calc, helpers.Calculator)
    assert calc.where() == worker.do_callback(helpers.domain_id)
    assert calc.total == 10  # the constructor got 10


def test_create_from_the_class_passes_keyword_arguments(worker: AppDomain) -> None:
    calc = worker.create_instance_and_unwrap(helpers.Calculator, start=7)
    assert calc.total == 7


def test_create_from_a_local_class_is_refused_by_name(worker: AppDomain) -> None:
    class Local(appdomain.MarshalByRefObject):
        pass

    with pytest.raises(TypeError, match="defined inside a function cannot be found"):
        worker.create_instance_and_unwrap(Local)


def test_create_from_a_module_name_alone_is_refused(worker: AppDomain) -> None:
    with pytest.raises(TypeError, match="takes a class, or a module name and a type name"):
        worker.create_instance_and_unwrap("remoting_helpers")  # type: ignore[call-overload]


# -- members ------------------------------------------------------------------------------


def test_method_call(calc: helpers.Calculator) -> None:
    assert calc.add(1, 2) == 3


def test_field_get_and_set(calc: helpers.Calculator) -> None:
    calc.total = 11
    assert calc.total == 11


def test_class_attribute_reads_remotely(calc: helpers.Calculator) -> None:
    assert calc.kind == "calculator"


def test_property_runs_remotely(calc: helpers.Calculator) -> None:
    calc.total = 4
    assert calc.doubled == 8


def test_attribute_delete(calc: helpers.Calculator) -> None:
    calc.extra = 1
    del calc.extra
    with pytest.raises(AttributeError):
        _ = calc.extra


def test_out_buffer_is_copied_back(calc: helpers.Calculator) -> None:
    buffer = bytearray(6)
    assert calc.read(buffer, 1, 3) == 3
    assert buffer == bytearray(b"\x00abc\x00\x00")


def test_ref_box_is_copied_back(calc: helpers.Calculator) -> None:
    box = Ref(41)
    calc.bump(box)
    assert box.value == 42


def test_len_getitem_setitem_contains_delitem(calc: helpers.Calculator) -> None:
    calc["a"] = 1
    assert len(calc) == 1
    assert calc["a"] == 1
    assert "a" in calc
    del calc["a"]
    assert "a" not in calc


def test_iteration_brings_every_item_in_order(calc: helpers.Calculator) -> None:
    assert list(calc) == list(range(1000))


def test_call_protocol(calc: helpers.Calculator) -> None:
    assert calc(4) == 40


def test_with_statement_enters_and_exits_remotely(calc: helpers.Calculator) -> None:
    with calc as entered:
        assert entered is calc
    assert calc.log == ["enter", "exit"]


# -- references -----------------------------------------------------------------------------


def test_returned_self_is_the_same_proxy(calc: helpers.Calculator) -> None:
    assert calc.myself() is calc


def test_local_object_crosses_as_proxy(calc: helpers.Calculator) -> None:
    assert calc.is_proxy(helpers.Client()) is True


def test_local_object_coming_home_is_the_original(calc: helpers.Calculator) -> None:
    client = helpers.Client()
    assert calc.identity(client) is client


def test_callback_into_default_domain(calc: helpers.Calculator) -> None:
    assert calc.call_back(helpers.Client(), 21) == (42, 1)


def test_reentrant_chain_a_b_a(worker: AppDomain) -> None:
    relay = worker.create_instance_and_unwrap("remoting_helpers", "Relay")
    assert relay.ping_pong(helpers.PingPong(), 5) == 1


def test_proxy_passed_through_a_third_domain(worker: AppDomain) -> None:
    with AppDomain.create_domain("Third") as third:
        calc = worker.create_instance_and_unwrap("remoting_helpers", "Calculator")
        relay = third.create_instance_and_unwrap("remoting_helpers", "Relay")
        assert relay.use(calc, 2, 3) == (5, worker.do_callback(helpers.domain_id))


def test_many_threads_calling_one_domain(calc: helpers.Calculator) -> None:
    errors: list[str] = []

    def hammer(base: int) -> None:
        for i in range(500):
            result = calc.add(base, i)
            if result != base + i:
                errors.append(f"{base}+{i} gave {result}")

    threads = [threading.Thread(target=hammer, args=(n * 1000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_remote_object_is_released_when_proxies_are_gone(worker: AppDomain) -> None:
    proxy = worker.create_instance_and_unwrap("remoting_helpers", "Calculator")
    assert worker.do_callback(helpers.live_objects) == 1
    del proxy
    gc.collect()
    assert worker.do_callback(helpers.live_objects) == 0


def test_object_passed_by_reference_is_released_after_the_call(
    calc: helpers.Calculator, worker: AppDomain
) -> None:
    client = helpers.Client()
    calc.call_back(client, 1)
    gc.collect()
    worker.do_callback(gc.collect)
    assert helpers.live_objects() == 0


def test_expired_lease_disconnects_the_object(worker: AppDomain) -> None:
    proxy = worker.create_instance_and_unwrap("remoting_helpers", "ShortLived")
    with pytest.raises(RemotingException, match="disconnected"):
        proxy.hello()


def test_objects_without_lease_never_expire(calc: helpers.Calculator) -> None:
    assert calc.add(1, 1) == 2


# -- errors ---------------------------------------------------------------------------------


def test_exception_keeps_its_type(calc: helpers.Calculator) -> None:
    with pytest.raises(KeyError, match="missing"):
        calc.fail("missing")


def test_exception_carries_the_server_stack_trace(calc: helpers.Calculator) -> None:
    with pytest.raises(KeyError) as info:
        calc.fail("missing")
    assert "remoting_helpers.py" in info.value.remote_traceback  # type: ignore[attr-defined]
    assert any("Server stack trace" in note for note in info.value.__notes__)


def test_exception_cause_is_kept(calc: helpers.Calculator) -> None:
    with pytest.raises(RuntimeError) as info:
        calc.fail_chained()
    assert isinstance(info.value.__cause__, ValueError)


def test_unimportable_exception_becomes_remote_exception(calc: helpers.Calculator) -> None:
    with pytest.raises(RemoteException, match="LocalError"):
        calc.fail_unimportable()


def test_unmarshallable_argument_is_refused_before_the_call(calc: helpers.Calculator) -> None:
    with pytest.raises(SerializationException, match="argument 'obj'"):
        calc.identity(threading.Lock())


def test_proxy_into_unloaded_domain_raises(worker: AppDomain) -> None:
    proxy = worker.create_instance_and_unwrap("remoting_helpers", "Calculator")
    AppDomain.unload(worker)
    with pytest.raises(AppDomainUnloadedException):
        proxy.add(1, 2)


# -- call context and asynchronous forms -----------------------------------------------------------


def test_logical_call_context_flows_in_and_back(calc: helpers.Calculator) -> None:
    CallContext.logical_set_data("user", "ada")
    try:
        assert calc.context_value("user") == "ada"
        assert CallContext.logical_get_data("user") == "ada-seen"
    finally:
        CallContext.free_named_data_slot("user")


def test_begin_invoke_returns_a_future(calc: helpers.Calculator) -> None:
    future = calc.add.begin_invoke(20, 22)
    assert future.result(timeout=10) == 42


def test_invoke_async_is_awaitable(calc: helpers.Calculator) -> None:
    async def main() -> int:
        return int(await calc.add.invoke_async(1, 2))

    assert asyncio.run(main()) == 3


def test_one_way_call_returns_nothing_and_runs(calc: helpers.Calculator) -> None:
    client = helpers.Client()
    assert calc.tell(client, "note") is None
    assert client.notes.get(timeout=10) == "note"


def test_one_way_call_carries_a_channel() -> None:
    with AppDomain.create_domain("ChannelWorker") as worker:  # channels stay in one process
        calc = worker.create_instance_and_unwrap("remoting_helpers", "Calculator")
        channel = appdomain.Channel()
        assert calc.signal(channel, "note") is None
        assert channel.recv(timeout=10) == "note"


def test_large_buffers_cross_intact_among_other_arguments(calc: helpers.Calculator) -> None:
    import zlib

    first, second = bytes(range(256)) * 4096, b"\x07" * (3 << 20)
    assert calc.digest(first, "both", second) == (
        "both",
        len(first) + len(second),
        f"{zlib.crc32(first):08x}",
        zlib.crc32(second),
    )


def test_large_bytes_result_crosses_intact(calc: helpers.Calculator) -> None:
    assert calc.repeat(b"0123456789abcdef", 1 << 16) == b"0123456789abcdef" * (1 << 16)
