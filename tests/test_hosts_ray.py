"""Domains on Ray actors (RayHost): where they run, how they end, what the driver sees.

One local Ray instance serves the whole session: RayHost starts it on first use.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import host_helpers
import pytest
import remoting_helpers
from conftest import unload_quietly

from appdomain import (
    AppDomain,
    AppDomainSetup,
    AppDomainUnloadedException,
    HostExitedEventArgs,
    RayHost,
    Socket,
)


@pytest.fixture
def far() -> Iterator[AppDomain]:
    domain = AppDomain.create_domain("Far", AppDomainSetup(host=RayHost()))
    yield domain
    unload_quietly(domain)


@pytest.fixture
def plugin(far: AppDomain) -> host_helpers.Plugin:
    proxy: host_helpers.Plugin = far.create_instance_and_unwrap("host_helpers", "Plugin")
    return proxy


def test_domain_runs_in_an_actor_process(far: AppDomain, plugin: host_helpers.Plugin) -> None:
    assert plugin.pid() == far.process_id != os.getpid()
    assert isinstance(far.host, RayHost)


def test_domain_names_its_node(far: AppDomain, plugin: host_helpers.Plugin) -> None:
    assert far.node == plugin.hostname() == socket.gethostname()


def test_actor_can_host_subinterpreter_domains(plugin: host_helpers.Plugin) -> None:
    calc = plugin.make_inner_calculator()
    assert calc.call_back(remoting_helpers.Client(), 5) == (10, 1)  # type: ignore[attr-defined]


def test_two_actors_talk_through_the_driver() -> None:
    with (
        AppDomain.create_domain("A", AppDomainSetup(host=RayHost())) as a,
        AppDomain.create_domain("B", AppDomainSetup(host=RayHost())) as b,
    ):
        calc = a.create_instance_and_unwrap("remoting_helpers", "Calculator")
        relay = b.create_instance_and_unwrap("remoting_helpers", "Relay")
        assert relay.use(calc, 2, 3)[0] == 5


def test_process_host_and_ray_host_in_one_chain() -> None:
    from appdomain import ProcessHost

    with (
        AppDomain.create_domain("P", AppDomainSetup(host=ProcessHost())) as p,
        AppDomain.create_domain("R", AppDomainSetup(host=RayHost())) as r,
    ):
        calc = p.create_instance_and_unwrap("remoting_helpers", "Calculator")
        relay = r.create_instance_and_unwrap("remoting_helpers", "Relay")
        assert relay.use(calc, 4, 5)[0] == 9
        assert relay.ping_pong(remoting_helpers.PingPong(), 3) == 1


def test_callback_runs_on_the_thread_that_made_the_call(plugin: host_helpers.Plugin) -> None:
    assert plugin.thread_of(host_helpers.ThreadProbe()) == threading.get_ident()


def test_callbacks_of_concurrent_calls_run_on_their_own_callers_threads(
    plugin: host_helpers.Plugin,
) -> None:
    probe = host_helpers.ThreadProbe()

    def call() -> bool:
        return all(plugin.thread_of(probe) == threading.get_ident() for _ in range(5))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(lambda _: call(), range(8)))


def test_calls_holding_every_actor_thread_still_get_their_callbacks_answered() -> None:
    # Four calls fill RayHost(max_concurrency=4), each waiting on a callback (made from a
    # thread of its own) until all four are in: the callbacks must still reach the driver,
    # and their replies the actor.
    host = RayHost(max_concurrency=4)
    with AppDomain.create_domain("Busy", AppDomainSetup(host=host)) as busy:
        plugin: host_helpers.Plugin = busy.create_instance_and_unwrap("host_helpers", "Plugin")
        gate = host_helpers.Gate(4)
        futures = [plugin.pass_gate.begin_invoke(gate) for _ in range(4)]  # type: ignore[attr-defined]
        assert sorted(future.result(timeout=120) for future in futures) == [0, 1, 2, 3]


def test_unload_ends_the_actor(far: AppDomain, plugin: host_helpers.Plugin) -> None:
    pid = far.process_id
    AppDomain.unload(far)
    with pytest.raises(AppDomainUnloadedException, match=r"'Far' .*was unloaded"):
        plugin.pid()
    assert host_helpers.exits_within(pid, 30)


def test_actor_that_dies_is_an_unloaded_domain(far: AppDomain, plugin: host_helpers.Plugin) -> None:
    heard: list[HostExitedEventArgs] = []
    done = threading.Event()

    def handler(sender: AppDomain, args: HostExitedEventArgs) -> None:
        heard.append(args)
        done.set()

    far.host_exited += handler
    with pytest.raises(AppDomainUnloadedException, match="Ray actor died"):
        plugin.exit(7)
    assert done.wait(30)
    assert "Ray actor died" in heard[0].cause
    with pytest.raises(AppDomainUnloadedException, match="Ray actor died"):
        plugin.pid()


def test_objects_held_by_a_dead_actor_are_released(
    far: AppDomain, plugin: host_helpers.Plugin
) -> None:
    keeper = far.create_instance_and_unwrap("remoting_helpers", "Keeper")
    keeper.keep(remoting_helpers.Client())
    assert remoting_helpers.live_objects() == 1
    with pytest.raises(AppDomainUnloadedException):
        plugin.exit(0)
    assert remoting_helpers.live_objects() == 0


def test_socket_moves_into_an_actor_on_this_machine(
    far: AppDomain, plugin: host_helpers.Plugin
) -> None:
    listener = Socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    address = listener.getsockname()
    info = listener.duplicate_and_close(far.process_id)
    served = plugin.serve_one.begin_invoke(info.protocol_information)
    with socket.create_connection(address, timeout=10) as client:
        assert client.recv(64) == b"served by %d" % far.process_id
    assert served.result(timeout=10) == "done"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": 5}, "'address' must be str or None"),
        ({"num_cpus": "two"}, "'num_cpus' must be a number"),
        ({"resources": {"gpu": "x"}}, "'resources' must be a dict"),
        ({"max_concurrency": 2}, "'max_concurrency' must be >= 4"),
    ],
)
def test_bad_ray_host_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        RayHost(**kwargs)  # type: ignore[arg-type]


def test_ray_host_without_ray_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from appdomain import RayHost\n"
        "try:\n    RayHost()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert "pip install appdomain[ray]" in out.stdout


def test_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    code = (
        "from appdomain import AppDomain, AppDomainSetup, RayHost\n"
        "try:\n"
        "    host = RayHost(address='127.0.0.1:9', connect_timeout=3)\n"
        "    AppDomain.create_domain('X', AppDomainSetup(host=host))\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert "AppDomainError could not start or reach the Ray cluster at '127.0.0.1:9'" in out.stdout
    assert "within 3 s" in out.stdout
