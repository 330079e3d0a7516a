"""Channels: bounded, timed, closable, and shared between real domains."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import domain_helpers as helpers
import pytest

from appdomain import AppDomain, Channel, ChannelClosedError, SerializationException

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")

Factory = Callable[..., AppDomain]
JOIN = 60.0


# -- one domain -----------------------------------------------------------------------------


def test_send_then_recv() -> None:
    channel = Channel()
    channel.send({"a": [1, 2]})
    assert channel.recv(timeout=1) == {"a": [1, 2]}


def test_values_come_out_in_order() -> None:
    channel = Channel(maxsize=0)
    for i in range(1000):
        channel.send(i)
    assert [channel.recv() for _ in range(1000)] == list(range(1000))


def test_recv_times_out_on_empty_channel() -> None:
    channel = Channel()
    with pytest.raises(TimeoutError):
        channel.recv(timeout=0.05)


def test_recv_zero_timeout_on_empty_channel() -> None:
    channel = Channel()
    with pytest.raises(TimeoutError):
        channel.recv(timeout=0)


def test_send_times_out_on_full_channel() -> None:
    channel = Channel(maxsize=2)
    channel.send(1)
    channel.send(2)
    with pytest.raises(TimeoutError):
        channel.send(3, timeout=0.05)


def test_full_channel_keeps_its_values_after_send_timeout() -> None:
    channel = Channel(maxsize=1)
    channel.send("kept")
    with pytest.raises(TimeoutError):
        channel.send("dropped", timeout=0.05)
    assert channel.recv(timeout=1) == "kept"
    with pytest.raises(TimeoutError):
        channel.recv(timeout=0.05)


def test_blocked_sender_resumes_when_room_is_made() -> None:
    channel = Channel(maxsize=1)
    channel.send(0)
    sender = threading.Thread(target=channel.send, args=(1,))
    sender.start()
    assert channel.recv(timeout=JOIN) == 0
    assert channel.recv(timeout=JOIN) == 1
    sender.join(JOIN)
    assert not sender.is_alive()


def test_blocked_receiver_woken_by_send() -> None:
    channel = Channel()
    out: list[Any] = []
    receiver = threading.Thread(target=lambda: out.append(channel.recv(timeout=JOIN)))
    receiver.start()
    channel.send("wake")
    receiver.join(JOIN)
    assert out == ["wake"]


def test_len_and_maxsize() -> None:
    channel = Channel(maxsize=3)
    channel.send(1)
    channel.send(2)
    assert len(channel) == 2
    assert channel.maxsize == 3


@pytest.mark.parametrize("bad", [-1, 1.5, "4", True])
def test_bad_maxsize_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Channel(maxsize=bad)


@pytest.mark.parametrize("bad", [-0.1, "1", True])
def test_bad_timeout_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        Channel().recv(timeout=bad)


def test_unmarshallable_value_is_refused() -> None:
    channel = Channel()
    with pytest.raises(SerializationException):
        channel.send(threading.Lock())
    assert len(channel) == 0


# -- closing -----------------------------------------------------------------------------------


def test_recv_on_closed_empty_channel_raises() -> None:
    channel = Channel()
    channel.close()
    with pytest.raises(ChannelClosedError):
        channel.recv(timeout=1)


def test_send_after_close_raises() -> None:
    channel = Channel()
    channel.close()
    with pytest.raises(ChannelClosedError):
        channel.send(1)


def test_values_sent_before_close_are_received() -> None:
    channel = Channel()
    channel.send(1)
    channel.send(2)
    channel.close()
    assert channel.closed
    assert channel.recv() == 1
    assert channel.recv() == 2
    with pytest.raises(ChannelClosedError):
        channel.recv()


def test_close_wakes_blocked_receiver() -> None:
    channel = Channel()
    out: list[BaseException] = []

    def receive() -> None:
        try:
            channel.recv()
        except BaseException as exc:
            out.append(exc)

    receiver = threading.Thread(target=receive)
    receiver.start()
    channel.close()
    receiver.join(JOIN)
    assert not receiver.is_alive()
    assert len(out) == 1 and isinstance(out[0], ChannelClosedError)


def test_close_wakes_blocked_sender() -> None:
    channel = Channel(maxsize=1)
    channel.send(0)
    out: list[BaseException] = []

    def send() -> None:
        try:
            channel.send(1)
        except BaseException as exc:
            out.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    channel.close()
    sender.join(JOIN)
    assert not sender.is_alive()
    assert len(out) == 1 and isinstance(out[0], ChannelClosedError)


def test_iteration_stops_at_close() -> None:
    channel = Channel()
    for i in range(3):
        channel.send(i)
    channel.close()
    assert list(channel) == [0, 1, 2]


def test_context_manager_closes() -> None:
    with Channel() as channel:
        channel.send("x")
    assert channel.closed
    assert channel.recv() == "x"


def test_close_twice_is_harmless() -> None:
    channel = Channel()
    channel.close()
    channel.close()
    assert channel.closed


# -- across domains ------------------------------------------------------------------------------


def test_channel_passed_as_callback_argument(domain: AppDomain) -> None:
    channel = Channel()
    domain.do_callback(helpers.send_values, channel, ["a", "b"])
    assert channel.recv(timeout=JOIN) == "a"
    assert channel.recv(timeout=JOIN) == "b"


def test_channel_passed_with_set_data(domain: AppDomain) -> None:
    channel = Channel()
    domain.set_data("channel", channel)
    domain.do_callback(helpers.start_producer, 10)
    assert list(channel) == list(range(10))


def test_recv_in_domain_times_out(domain: AppDomain) -> None:
    channel = Channel()
    with pytest.raises(TimeoutError):
        domain.do_callback(helpers.recv_one, channel, 0.05)


def test_closed_seen_from_other_domain(domain: AppDomain) -> None:
    channel = Channel()
    channel.send("last")
    channel.close()
    assert domain.do_callback(helpers.consume, channel) == ["last"]


def test_producer_and_consumer_in_two_domains(domain_factory: Factory) -> None:
    producer = domain_factory("Producer")
    consumer = domain_factory("Consumer")
    channel = Channel(maxsize=8)
    count = 2000
    out: dict[str, Any] = {}

    def consume() -> None:
        out["values"] = consumer.do_callback(helpers.consume, channel)

    reader = threading.Thread(target=consume)
    reader.start()
    producer.do_callback(helpers.produce, channel, count)
    reader.join(JOIN)
    assert not reader.is_alive()
    assert out["values"] == list(range(count))


def test_producer_thread_in_domain_consumer_in_another(domain_factory: Factory) -> None:
    producer = domain_factory("ProducerThread")
    consumer = domain_factory("ConsumerStored")
    channel = Channel(maxsize=4)
    producer.set_data("channel", channel)
    consumer.set_data("channel", channel)
    producer.do_callback(helpers.start_producer, 500)
    assert consumer.do_callback(helpers.consume_stored) == list(range(500))


def test_round_trips_between_two_domains(domain_factory: Factory) -> None:
    server = domain_factory("EchoServer")
    client = domain_factory("EchoClient")
    requests = Channel()
    replies = Channel()
    server.do_callback(helpers.start_echo_server, requests, replies)
    assert client.do_callback(helpers.ping_many, requests, replies, 200) == list(range(1, 201))
    requests.close()


def test_proxy_crosses_a_channel(domain: AppDomain) -> None:
    channel = Channel()
    calc = domain.create_instance_and_unwrap("domain_helpers", "Calculator")
    channel.send(calc)
    got = channel.recv(timeout=1)
    assert got.add(2, 3) == 5


def test_channel_outlives_the_domain_it_was_passed_to(domain_factory: Factory) -> None:
    channel = Channel()
    d = domain_factory("Holder")
    d.set_data("channel", channel)
    AppDomain.unload(d)
    channel.send("still here")
    assert channel.recv(timeout=1) == "still here"


def test_values_sent_by_a_domain_survive_its_unload(domain_factory: Factory) -> None:
    # A producer domain that finished and was unloaded before its values were read.
    d = domain_factory("GoneProducer")
    channel = Channel()
    d.do_callback(helpers.send_values, channel, [1, 2, 3])
    AppDomain.unload(d)
    assert [channel.recv(timeout=1) for _ in range(3)] == [1, 2, 3]
