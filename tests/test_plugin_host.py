"""PluginHost: a folder's plugins in a domain, reloaded into a new domain when they change."""

from __future__ import annotations

import _interpreters
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from appdomain import AppDomain, AppDomainError, PluginEventArgs, PluginHost

WAIT = 60.0  # a bound for a slow machine, never a synchronisation

GREETER = "def greet(name):\n    return f'hello {name}'\n"
GREETER_V2 = "def greet(name):\n    return f'HELLO {name}!'\n"
CALC = """\
import os


def add(a, b):
    return a + b


def block(ready, gate):
    os.write(ready, b"x")  # the call is running
    os.read(gate, 1)  # until the test lets it go
    return "finished in the old domain"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "greeter.py").write_text(GREETER)
    (plugins / "calc.py").write_text(CALC)
    (plugins / "_shared.py").write_text("")  # a helper, not a plugin
    return plugins


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def host(folder: Path, cache: Path) -> Iterator[PluginHost]:
    with PluginHost(folder, name="test", poll_interval=0.02, cache_path=cache) as started:
        yield started


class Recorder:
    """Collects one host event's arguments and signals each one."""

    def __init__(self) -> None:
        self.seen: list[PluginEventArgs] = []
        self.signal = threading.Event()

    def __call__(self, sender: object, args: PluginEventArgs) -> None:
        self.seen.append(args)
        self.signal.set()

    def wait(self) -> PluginEventArgs:
        assert self.signal.wait(WAIT), "the event never fired"
        self.signal.clear()
        return self.seen[-1]


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass


def edit(path: Path, text: str) -> None:
    """Rewrite a file so that its signature surely changes (size or time)."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def test_the_host_loads_every_plugin_of_its_folder(host: PluginHost) -> None:
    assert host.plugins == ("calc", "greeter")
    assert host.generation == 1
    assert host.invoke("greeter", "greet", "you") == "hello you"
    assert host["calc"].add(2, 3) == 5
    assert host.domain is not AppDomain.current_domain


def test_an_edit_is_served_by_a_new_domain_without_restarting(
    host: PluginHost, folder: Path
) -> None:
    reloaded, unloaded = Recorder(), Recorder()
    host.reloaded += reloaded
    host.unloaded += unloaded
    first = host.domain
    edit(folder / "greeter.py", GREETER_V2)
    args = reloaded.wait()
    assert args.generation == 2 and args.files == ("greeter.py",)
    assert host.invoke("greeter", "greet", "you") == "HELLO you!"
    assert host.domain is not first
    assert unloaded.wait().domain is first


def test_the_old_domain_unloads_only_once_its_calls_finish(
    host: PluginHost, pipe: tuple[int, int]
) -> None:
    unloaded = Recorder()
    host.unloaded += unloaded
    ready_read, ready_write = os.pipe()
    gate_read, gate_write = pipe
    results: list[str] = []
    caller = threading.Thread(
        target=lambda: results.append(host.invoke("calc", "block", ready_write, gate_read))
    )
    caller.start()
    try:
        assert os.read(ready_read, 1) == b"x"  # the call runs in generation 1
        old = host.domain
        assert host.reload() is True
        assert host.generation == 2 and host["calc"].add(1, 1) == 2
        assert unloaded.seen == []
        assert old.get_data("anything") is None  # still loaded, still serving its call
    finally:
        os.write(gate_write, b"x")
        caller.join(WAIT)
        os.close(ready_read)
        os.close(ready_write)
    assert results == ["finished in the old domain"]
    assert unloaded.wait().generation == 1


def test_a_plugin_that_fails_to_load_leaves_the_old_one_serving(
    host: PluginHost, folder: Path, cache: Path
) -> None:
    failed = Recorder()
    host.reload_failed += failed
    edit(folder / "greeter.py", "def greet(name:\n")
    args = failed.wait()
    assert isinstance(args.error, SyntaxError)
    assert args.files == ("greeter.py",) and args.generation == 1
    assert isinstance(host.last_error, SyntaxError)
    assert host.invoke("greeter", "greet", "you") == "hello you"
    assert len(list(cache.iterdir())) == 1  # the failed load's copies are gone


def test_reload_reports_a_failure_and_a_later_fix_serves(host: PluginHost, folder: Path) -> None:
    (folder / "greeter.py").write_text("raise RuntimeError('not today')\n")
    assert host.reload() is False
    assert "not today" in str(host.last_error)
    (folder / "greeter.py").write_text(GREETER_V2)
    assert host.reload() is True
    assert host.last_error is None
    assert host["greeter"].greet("x") == "HELLO x!"


def test_calls_never_see_a_half_loaded_plugin(
    host: PluginHost, folder: Path, pipe: tuple[int, int]
) -> None:
    ready_read, ready_write = os.pipe()
    gate_read, gate_write = pipe
    slow = f"import os\nos.write({ready_write}, b'x')\nos.read({gate_read}, 1)\n{GREETER_V2}"
    host.poll_interval = 60.0  # only the explicit reload below
    (folder / "greeter.py").write_text(slow)
    loading = threading.Thread(target=host.reload)
    loading.start()
    try:
        assert os.read(ready_read, 1) == b"x"  # the new domain is importing greeter
        assert host.invoke("greeter", "greet", "you") == "hello you"
        assert host.generation == 1
    finally:
        os.write(gate_write, b"x")
        loading.join(WAIT)
        os.close(ready_read)
        os.close(ready_write)
    assert host.invoke("greeter", "greet", "you") == "HELLO you!"


def test_close_unloads_every_domain_and_removes_the_copies(folder: Path, cache: Path) -> None:
    before = len(_interpreters.list_all())
    host = PluginHost(folder, cache_path=cache).start()
    host.reload()
    host.close()
    assert len(_interpreters.list_all()) == before
    assert list(cache.iterdir()) == []
    with pytest.raises(AppDomainError, match="plugin host 'plugins' is closed"):
        host.invoke("greeter", "greet", "x")


def test_a_first_load_that_fails_raises_and_leaves_nothing(folder: Path, cache: Path) -> None:
    before = len(_interpreters.list_all())
    (folder / "calc.py").write_text("def broken(:\n")
    host = PluginHost(folder, cache_path=cache)
    with pytest.raises(SyntaxError):
        host.start()
    assert len(_interpreters.list_all()) == before
    assert list(cache.iterdir()) == []


def test_an_unknown_plugin_names_the_loaded_ones(host: PluginHost) -> None:
    with pytest.raises(LookupError, match=r"no plugin '_shared' .*\(loaded: calc, greeter\)"):
        host.invoke("_shared", "anything")


def test_a_host_not_started_says_so(folder: Path) -> None:
    with pytest.raises(AppDomainError, match="not started: call start"):
        PluginHost(folder).invoke("greeter", "greet", "x")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"poll_interval": 0}, ValueError, "'poll_interval' must be more than 0"),
        ({"poll_interval": "fast"}, TypeError, "'poll_interval' must be a number of seconds"),
        ({"name": ""}, TypeError, "'name' must be a non-empty str"),
        ({"cache_path": 3}, TypeError, "'cache_path' must be str or os.PathLike or None"),
    ],
)
def test_bad_settings_are_refused(
    folder: Path, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PluginHost(folder, **kwargs)  # type: ignore[arg-type]


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"the plugin folder .* does not exist"):
        PluginHost(tmp_path / "nowhere")


def test_a_handler_may_close_the_host(folder: Path, cache: Path) -> None:
    host = PluginHost(folder, cache_path=cache).start()
    closed = Recorder()
    host.reloaded += lambda sender, args: (sender.close(), closed(sender, args))
    assert host.reload() is True
    closed.wait()
    assert list(cache.iterdir()) == []


def test_a_host_in_a_domain_closes_when_that_domain_unloads(folder: Path, cache: Path) -> None:
    import plugin_helpers

    before = len(_interpreters.list_all())
    owner = AppDomain.create_domain("Owner")
    owner.do_callback(plugin_helpers.start_plugin_host, str(folder), str(cache))
    assert len(_interpreters.list_all()) == before + 2
    AppDomain.unload(owner)
    assert len(_interpreters.list_all()) == before
    assert list(cache.iterdir()) == []


def test_a_folder_that_vanishes_is_reported_and_the_old_load_serves(
    host: PluginHost, folder: Path
) -> None:
    import shutil

    failed = Recorder()
    host.reload_failed += failed
    shutil.rmtree(folder)
    assert isinstance(failed.wait().error, FileNotFoundError)
    assert host.invoke("greeter", "greet", "you") == "hello you"
