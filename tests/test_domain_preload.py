"""A new domain imports its boot modules from code its creator read: the same modules."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import remoting_helpers

from appdomain import AppDomain, AppDomainSetup
from appdomain._domains import _runtime
from appdomain._testing._light import LightDomain

Factory = Callable[..., AppDomain]

MODULES = [
    "threading",
    "appdomain",
    "appdomain._domains._runtime",
    "appdomain.marshal",
    "appdomain._native._ext",
    "appdomain._remoting._methods",
    "appdomain._remoting._proxy",
]


def module_record(name: str) -> tuple[object, ...]:
    """Where a module of this interpreter came from, as the import system recorded it."""
    module = sys.modules[name]
    spec = module.__spec__
    assert spec is not None
    return (
        module.__file__,
        getattr(module, "__cached__", None),
        getattr(module, "__path__", None),
        spec.origin,
        spec.cached,
        spec.has_location,
        spec.submodule_search_locations,
        spec.parent,
    )


def fail_inside_appdomain() -> None:
    """Inside a domain: fail inside appdomain's own code."""
    _runtime.load_module("no_such_module_for_preload_tests")


def future_is_the_stand_in() -> bool:
    return getattr(sys.modules["__future__"], "STAND_IN", False)


def reload_runtime_events() -> tuple[str | None, bool]:
    import importlib

    module = importlib.reload(sys.modules["appdomain._domains._events"])
    return module.__file__, hasattr(module, "Event")


@pytest.mark.parametrize("name", MODULES)
def test_domain_modules_come_from_the_files_this_process_loaded(
    domain: AppDomain, name: str
) -> None:
    domain.create_instance_and_unwrap(remoting_helpers.Calculator)  # remoting loads there
    assert domain.do_callback(module_record, name) == module_record(name)


def test_tracebacks_from_a_domain_name_appdomains_files(domain: AppDomain) -> None:
    with pytest.raises(ModuleNotFoundError) as raised:
        domain.do_callback(fail_inside_appdomain)
    remote = getattr(raised.value, "remote_traceback", "")
    assert f'File "{_runtime.__file__}", line' in remote
    assert "return importlib.import_module(module)" in remote  # its source line


def test_a_module_the_domains_path_finds_first_is_the_one_it_imports(
    domain_factory: Factory, tmp_path: Path
) -> None:
    # A stand-in for __future__ (which every appdomain module imports) that runs the real one.
    real = sys.modules["__future__"].__file__
    (tmp_path / "__future__.py").write_text(
        f"exec(compile(open({real!r}).read(), {real!r}, 'exec'))\nSTAND_IN = True\n"
    )
    domain = domain_factory(setup=AppDomainSetup(application_base=str(tmp_path)))
    assert domain.do_callback(future_is_the_stand_in) is True
    assert domain.create_instance_and_unwrap(remoting_helpers.Calculator).add(1, 2) == 3


def test_reloading_a_boot_module_in_a_domain_reads_its_file(domain: AppDomain) -> None:
    events = sys.modules["appdomain._domains._events"]
    assert domain.do_callback(reload_runtime_events) == (events.__file__, True)


@pytest.fixture
def test_interpreter() -> Iterator[LightDomain]:
    """A pytest plugin test's interpreter (no domain until asked), unloaded after the test."""
    light = LightDomain("PreloadTestInterpreter")
    yield light
    light.unload_domain(timeout=30)


@pytest.mark.parametrize("name", ["appdomain._testing._remote", "appdomain._testing", "types"])
def test_a_test_interpreters_modules_come_from_the_files_this_process_loaded(
    test_interpreter: LightDomain, name: str
) -> None:
    domain = test_interpreter.domain()
    assert domain.do_callback(module_record, name) == module_record(name)
