"""Functions the plugin-host tests run *inside* domains (imported there by name).

Each domain has its own copy of this module's state: the events' records live here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from appdomain import AppDomain, MarshalByRefObject

# -- assembly_load -------------------------------------------------------------------------

loaded: list[tuple[str, str | None]] = []


def _on_load(sender: Any, args: Any) -> None:
    loaded.append((args.name, args.file))


def watch_loads() -> None:
    AppDomain.current_domain.assembly_load += _on_load


def stop_watching_loads() -> None:
    AppDomain.current_domain.assembly_load -= _on_load


def import_module(name: str) -> str:
    """Import name here; return the file the module came from."""
    __import__(name)
    return str(sys.modules[name].__file__)


def loads_seen() -> list[tuple[str, str | None]]:
    return list(loaded)


def loader_is_plain(name: str) -> bool:
    """Tell whether the module's loader is its finder's own (not assembly_load's wrapper)."""
    module = sys.modules[name]
    return type(module.__loader__).__name__ == "SourceFileLoader" and (
        module.__spec__ is not None and module.__spec__.loader is module.__loader__
    )


# -- assembly_resolve ---------------------------------------------------------------------

asked: list[str] = []
_answer: str | None = None


def _on_resolve(sender: Any, args: Any) -> str | None:
    asked.append(args.name)
    return _answer if args.name.startswith("resolvable_") else None


def answer_resolves_with(path: str) -> None:
    global _answer
    _answer = path
    AppDomain.current_domain.assembly_resolve += _on_resolve


def stop_resolving() -> None:
    AppDomain.current_domain.assembly_resolve -= _on_resolve


def resolves_asked() -> list[str]:
    return list(asked)


def try_import(name: str) -> str:
    """Import name; return its value of WHO, or the ImportError's type and message."""
    try:
        module = __import__(name)
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return str(module.WHO)


# -- first_chance_exception ---------------------------------------------------------------

first_chances: list[str] = []


def _on_first_chance(sender: Any, args: Any) -> None:
    first_chances.append(f"{type(args.exception).__name__}: {args.exception}")


def watch_first_chances() -> None:
    AppDomain.current_domain.first_chance_exception += _on_first_chance


def stop_watching_first_chances() -> None:
    AppDomain.current_domain.first_chance_exception -= _on_first_chance


def _deep(n: int) -> None:
    if n == 0:
        raise KeyError("deep")
    _deep(n - 1)


def raise_and_catch() -> list[str]:
    """Raise three exceptions here, each caught; return what the event saw."""
    del first_chances[:]
    try:
        _deep(5)  # one exception unwinding through six frames
    except KeyError:
        pass
    try:
        int("not a number")  # raised by C code
    except ValueError:
        pass
    try:
        raise RuntimeError("plain")
    except RuntimeError:
        pass
    return list(first_chances)


# -- initializers ---------------------------------------------------------------------------

initialized_with: list[Any] = []


def initialize(*args: Any) -> None:
    initialized_with.extend(args)


def initialization() -> list[Any]:
    return list(initialized_with)


def failing_initializer(reason: str) -> None:
    raise ValueError(f"initializer refused: {reason}")


# -- shadow copy ----------------------------------------------------------------------------


def module_file(name: str) -> str:
    """Import name here and return the file its code came from."""
    module = __import__(name)
    return os.path.abspath(str(module.__file__))


def module_value(name: str, attribute: str) -> Any:
    module = __import__(name)
    return getattr(module, attribute)


# -- monitoring -----------------------------------------------------------------------------


def spin(iterations: int) -> int:
    """Burn CPU in pure Python."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


keep: list[object] = []


def allocate(count: int) -> int:
    """Allocate count small objects and keep them alive here."""
    keep.extend(str(i) * 2 for i in range(count))
    return len(keep)


def drop() -> None:
    del keep[:]


def add_path(folder: str) -> None:
    sys.path.insert(0, folder)


def create_with_initializer(folder: str, cache: str) -> tuple[list[Any], str]:
    """From this domain, create one with an initializer and a shadow copy; report on it."""
    from appdomain import AppDomainSetup

    setup = AppDomainSetup(
        application_base=folder,
        shadow_copy_files=True,
        cache_path=cache,
        initializer=initialize,
        initializer_arguments=["nested", 2],
    )
    inner = AppDomain.create_domain("inner", setup)
    try:
        return inner.do_callback(initialization), inner.do_callback(module_file, "shadowed_mod")
    finally:
        AppDomain.unload(inner)


class Worker(MarshalByRefObject):
    """Burns CPU when asked, in the domain it lives in."""

    def spin(self, iterations: int) -> int:
        return spin(iterations)


def spin_in_thread(iterations: int) -> int:
    """Spin on a new thread of this domain; return that thread's CPU nanoseconds."""
    import threading
    import time

    used: list[int] = []

    def run() -> None:
        spin(iterations)
        used.append(time.thread_time_ns())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return used[0]


def set_monitoring(on: bool) -> bool:
    AppDomain.monitoring_is_enabled = on
    return AppDomain.monitoring_is_enabled


def start_blocked_reader(fd: int) -> None:
    """Start a thread of this domain that blocks reading fd until the test writes to it."""
    import threading

    threading.Thread(target=os.read, args=(fd, 1)).start()


def timed_spin(iterations: int) -> int:
    """Spin; return the CPU nanoseconds this thread spent in it."""
    import time

    started = time.thread_time_ns()
    spin(iterations)
    return time.thread_time_ns() - started


hosts: list[Any] = []


def start_plugin_host(folder: str, cache: str) -> int:
    """Start a PluginHost in this domain and keep it; return its domain's id."""
    from appdomain import PluginHost

    host = PluginHost(folder, cache_path=cache).start()
    hosts.append(host)
    return int(host.domain.id)
