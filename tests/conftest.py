"""Shared fixtures for the domain, call path and channel tests.

``domain`` / ``domain_factory`` are deliberately local (not the package's pytest plugin,
which is being rewritten): each creates real AppDomains and unloads every one still
loaded after the test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)
# Domains import tests/domain_helpers.py by name and inherit their creator's sys.path.
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from appdomain import (  # noqa: E402
    AppDomain,
    AppDomainSetup,
    AppDomainUnloadedException,
    ProcessHost,
    RayHost,
    _core,
)

# Final unload of a test's domains: generous, so a slow CI box does not turn a passing
# test into a teardown error.
TEARDOWN_TIMEOUT = 30.0


# Where the tests that hold on every host run their domains (tests/test_remoting.py).
HOSTS = ["subinterpreter", "process", "ray"]


def host_setup(host: str) -> AppDomainSetup | None:
    """Return the setup that puts a new domain on the named host."""
    if host == "subinterpreter":
        return None
    if host == "process":
        return AppDomainSetup(host=ProcessHost())
    if host == "ray":
        return AppDomainSetup(host=RayHost())
    raise ValueError(f"'host' must be one of {HOSTS} (got {host!r})")


def unload_quietly(domain: AppDomain, timeout: float = TEARDOWN_TIMEOUT) -> None:
    """Unload domain unless the test already did."""
    try:
        AppDomain.unload(domain, timeout=timeout)
    except AppDomainUnloadedException:
        pass


@pytest.fixture(scope="module", params=["native", "pure"])
def route(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a module's tests on the native route (the C switch), then on the pure routes.

    Modules whose behaviour must hold on both use it (``pytestmark``).  Domains choose
    their route as they start, by APPDOMAIN_PURE: the fixture sets it for the domains the
    tests create, and switches this interpreter's own calls.
    """
    native = request.param == "native"
    if native and _core.native_built() is None:
        pytest.fail("the C switch was not built: the native route cannot be tested")
    saved = os.environ.get("APPDOMAIN_PURE")
    if native:
        os.environ.pop("APPDOMAIN_PURE", None)
    else:
        os.environ["APPDOMAIN_PURE"] = "1"
    was_native = _core.native_module() is not None
    _core.use_native_route(native)
    yield request.param
    _core.use_native_route(was_native)
    if saved is None:
        os.environ.pop("APPDOMAIN_PURE", None)
    else:
        os.environ["APPDOMAIN_PURE"] = saved


@pytest.fixture
def domain_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., AppDomain]]:
    """create(name=None, setup=None) -> a new AppDomain, unloaded after the test.

    Not the plugin's appdomain_factory: that one fails a test whose domains still run
    threads, and the unload tests here leave threads running on purpose.
    """
    created: list[AppDomain] = []

    def create(name: str | None = None, setup: AppDomainSetup | None = None) -> AppDomain:
        domain = AppDomain.create_domain(name or f"{request.node.name}-{len(created) + 1}", setup)
        created.append(domain)
        return domain

    yield create
    for domain in reversed(created):
        unload_quietly(domain)


@pytest.fixture
def domain(domain_factory: Callable[..., AppDomain]) -> AppDomain:
    """One fresh domain, unloaded after the test."""
    return domain_factory()


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))
