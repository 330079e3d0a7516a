"""Domains in a child process (ProcessHost): where they run, how they end, what they survive."""

from __future__ import annotations

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
    AppDomainError,
    AppDomainSetup,
    AppDomainUnloadedException,
    HostExitedEventArgs,
    ProcessHost,
    Socket,
    SubinterpreterHost,
)

ROOT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def hosted() -> Iterator[AppDomain]:
    domain = AppDomain.create_domain("Hosted", AppDomainSetup(host=ProcessHost()))
    yield domain
    unload_quietly(domain)


@pytest.fixture
def plugin(hosted: AppDomain) -> host_helpers.Plugin:
    proxy: host_helpers.Plugin = hosted.create_instance_and_unwrap("host_helpers", "Plugin")
    return proxy


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- where it runs ----------------------------------------------------------------------------


def test_domain_runs_in_another_process(hosted: AppDomain, plugin: host_helpers.Plugin) -> None:
    assert plugin.pid() == hosted.process_id != os.getpid()


def test_domain_says_its_host_and_node(hosted: AppDomain) -> None:
    assert isinstance(hosted.host, ProcessHost)
    assert hosted.node == socket.gethostname()


def test_subinterpreter_domain_is_hosted_here() -> None:
    with AppDomain.create_domain("Local") as local:
        assert local.host == SubinterpreterHost()
        assert local.process_id == os.getpid()


def test_host_process_is_a_default_domain_of_its_own(hosted: AppDomain) -> None:
    assert hosted.do_callback(remoting_helpers.domain_id) == 1


def test_domain_created_inside_a_host_is_usable_from_here(plugin: host_helpers.Plugin) -> None:
    calc = plugin.make_inner_calculator()
    assert calc.add(2, 3) == 5  # type: ignore[attr-defined]
    assert calc.call_back(remoting_helpers.Client(), 4) == (8, 1)  # type: ignore[attr-defined]


# -- unload -----------------------------------------------------------------------------------


def test_unload_runs_domain_unload_there_and_ends_the_process(tmp_path: Path) -> None:
    domain = AppDomain.create_domain("Ending", AppDomainSetup(host=ProcessHost()))
    pid = domain.process_id
    marker = tmp_path / "unloaded.txt"
    domain.do_callback(host_helpers.note_unload, str(marker))
    AppDomain.unload(domain)
    assert marker.read_text() == f"unloaded {pid}"
    assert not _alive(pid)


def test_calls_after_unload_raise_unloaded(hosted: AppDomain, plugin: host_helpers.Plugin) -> None:
    AppDomain.unload(hosted)
    with pytest.raises(AppDomainUnloadedException, match=r"'Hosted' .*was unloaded"):
        plugin.pid()


def test_unload_twice_raises_unloaded(hosted: AppDomain) -> None:
    AppDomain.unload(hosted)
    with pytest.raises(AppDomainUnloadedException, match="already been unloaded"):
        AppDomain.unload(hosted)


def test_objects_sent_to_a_host_are_released_when_it_unloads(hosted: AppDomain) -> None:
    keeper = hosted.create_instance_and_unwrap("remoting_helpers", "Keeper")
    keeper.keep(remoting_helpers.Client())
    assert remoting_helpers.live_objects() == 1
    AppDomain.unload(hosted)
    assert remoting_helpers.live_objects() == 0


# -- a host that dies -------------------------------------------------------------------------


def test_segfault_ends_only_its_domain(hosted: AppDomain, plugin: host_helpers.Plugin) -> None:
    with pytest.raises(AppDomainUnloadedException, match=r"killed by signal 11 \(SIGSEGV\)"):
        plugin.segfault()
    with AppDomain.create_domain("StillHere") as other:
        calc = other.create_instance_and_unwrap("remoting_helpers", "Calculator")
        assert calc.add(1, 2) == 3


def test_calls_after_a_crash_name_the_cause(plugin: host_helpers.Plugin) -> None:
    with pytest.raises(AppDomainUnloadedException):
        plugin.segfault()
    with pytest.raises(AppDomainUnloadedException, match="SIGSEGV"):
        plugin.pid()


def test_crash_error_quotes_the_host_stderr(plugin: host_helpers.Plugin) -> None:
    with pytest.raises(AppDomainUnloadedException, match="Fatal Python error: Segmentation"):
        plugin.segfault()


def test_host_exited_reports_the_exit_code(hosted: AppDomain, plugin: host_helpers.Plugin) -> None:
    heard: list[tuple[AppDomain, HostExitedEventArgs]] = []
    done = threading.Event()

    def handler(sender: AppDomain, args: HostExitedEventArgs) -> None:
        heard.append((sender, args))
        done.set()

    hosted.host_exited += handler
    with pytest.raises(AppDomainUnloadedException, match="exited with code 3"):
        plugin.exit(3)
    assert done.wait(10)
    sender, args = heard[0]
    assert sender is hosted
    assert (args.exit_code, args.signal) == (3, None)
    assert "exited with code 3" in args.cause


def test_dead_host_counts_as_unloaded(hosted: AppDomain, plugin: host_helpers.Plugin) -> None:
    with pytest.raises(AppDomainUnloadedException):
        plugin.exit(0)
    with pytest.raises(AppDomainUnloadedException):
        AppDomain.unload(hosted)


def test_objects_held_by_a_crashed_host_are_released(
    hosted: AppDomain, plugin: host_helpers.Plugin
) -> None:
    keeper = hosted.create_instance_and_unwrap("remoting_helpers", "Keeper")
    keeper.keep(remoting_helpers.Client())
    assert remoting_helpers.live_objects() == 1
    with pytest.raises(AppDomainUnloadedException):
        plugin.segfault()
    assert remoting_helpers.live_objects() == 0


# -- sockets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["pid", "domain"])
def test_socket_moves_into_a_process_host(
    hosted: AppDomain, plugin: host_helpers.Plugin, by: str
) -> None:
    listener = Socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    address = listener.getsockname()
    info = listener.duplicate_and_close(hosted.process_id if by == "pid" else hosted)
    served = plugin.serve_one.begin_invoke(info.protocol_information)
    with socket.create_connection(address, timeout=10) as client:
        assert client.recv(64) == b"served by %d" % hosted.process_id
    assert served.result(timeout=10) == "done"


# -- bad input --------------------------------------------------------------------------------


def test_class_missing_in_the_host_is_a_clear_error(hosted: AppDomain) -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        hosted.create_instance_and_unwrap("no_such_module", "Thing")


def test_value_that_cannot_cross_is_refused_before_the_call(hosted: AppDomain) -> None:
    calc = hosted.create_instance_and_unwrap("remoting_helpers", "Calculator")
    with pytest.raises(Exception, match="argument 'obj'"):
        calc.identity(threading.Lock())


def test_host_that_does_not_start_in_time_is_a_clear_error() -> None:
    with pytest.raises(AppDomainError, match="did not start within"):
        AppDomain.create_domain("Slow", AppDomainSetup(host=ProcessHost(start_timeout=0.001)))


@pytest.mark.parametrize("value", ["soon", -1, True])
def test_bad_start_timeout_is_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError), match="'start_timeout' must"):
        ProcessHost(start_timeout=value)  # type: ignore[arg-type]


def test_bad_host_is_refused() -> None:
    with pytest.raises(TypeError, match="'host' must be SubinterpreterHost, ProcessHost"):
        AppDomainSetup(host="elsewhere")  # type: ignore[arg-type]


# -- the creator's death ----------------------------------------------------------------------

CREATOR = """
import os, sys
sys.path[:0] = [{tests!r}]
from appdomain import AppDomain, AppDomainSetup, ProcessHost
if __name__ == "__main__":
    d = AppDomain.create_domain("Orphan", AppDomainSetup(host=ProcessHost()))
    print(d.process_id, flush=True)
    sys.stdin.readline()
    os._exit(0)
"""


def test_host_ends_when_its_creator_dies(tmp_path: Path) -> None:
    script = tmp_path / "creator.py"
    script.write_text(CREATOR.format(tests=str(Path(__file__).parent)))
    creator = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert creator.stdout is not None and creator.stdin is not None
    pid = int(creator.stdout.readline())
    creator.stdin.write("\n")
    creator.stdin.close()
    assert creator.wait(30) == 0
    # The host notices (its link ends, or the kernel's death signal) and exits.
    assert host_helpers.exits_within(pid, 30), f"host {pid} outlived its creator"


def test_data_set_here_is_read_there(hosted: AppDomain) -> None:
    hosted.set_data("answer", {"value": 42})
    assert hosted.get_data("answer") == {"value": 42}
    assert hosted.get_data("missing", "default") == "default"


def test_execute_assembly_runs_a_script_in_the_host(hosted: AppDomain, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    out = tmp_path / "out.txt"
    script.write_text(f"import os, sys\nopen({str(out)!r}, 'w').write(str(os.getpid()))\n")
    assert hosted.execute_assembly(script) == 0
    assert out.read_text() == str(hosted.process_id)


def test_initializer_runs_first_in_the_host() -> None:
    setup = AppDomainSetup(
        host=ProcessHost(),
        initializer=host_helpers.remember_pid,
        initializer_arguments=["pid"],
    )
    with AppDomain.create_domain("Initialized", setup) as domain:
        assert domain.get_data("pid") == domain.process_id


def test_initializer_that_raises_leaves_no_host() -> None:
    setup = AppDomainSetup(host=ProcessHost(), initializer=host_helpers.refuse_to_start)
    with pytest.raises(AppDomainError, match="no plugins today") as info:
        AppDomain.create_domain("Refused", setup)
    assert "host_helpers.py" in str(info.value)
    from appdomain._domains import _registry

    assert not [r for r in _registry.records.values() if r.name == "Refused"]


def test_shadow_copy_on_a_process_host_is_refused(tmp_path: Path) -> None:
    setup = AppDomainSetup(
        host=ProcessHost(), shadow_copy_files=True, shadow_copy_directories=[str(tmp_path)]
    )
    with pytest.raises(AppDomainError, match="shadow copy works for domains of this process"):
        AppDomain.create_domain("Shadowed", setup)


def test_channel_cannot_cross_to_another_process(hosted: AppDomain) -> None:
    import appdomain

    calc = hosted.create_instance_and_unwrap("remoting_helpers", "Calculator")
    with pytest.raises(appdomain.SerializationException, match="cannot cross to another process"):
        calc.identity(appdomain.Channel())
