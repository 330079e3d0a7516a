"""Give pytest users fresh AppDomains: fixtures, an ``isolated`` marker, ``--appdomain-isolate``.

Loaded through the ``pytest11`` entry point (or ``-p appdomain.pytest_plugin``):

- fixture ``appdomain``: a fresh domain named after the test, unloaded at teardown;
- fixture ``appdomain_factory``: ``create(name=None, setup=None)`` for more domains;
  both fail the test when a domain cannot be unloaded or still holds threads, open sockets
  or live proxies;
- marker ``@pytest.mark.isolated`` and option ``--appdomain-isolate``: the test function
  itself runs inside a fresh domain, its module imported there (a ``unittest.TestCase``
  test runs there as unittest runs it, with its class and module fixtures; its subtests
  are not reported one by one).  Its ``monkeypatch`` is made
  (and undone) inside that domain.  ``@pytest.mark.isolated(alone=True)``, or a test that
  uses ``tracemalloc``, runs while no other domain is being prepared or unloaded: such
  tools measure the whole process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator

import pytest

from . import _rewrites

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

    from .._domains._domain import AppDomain
    from .._domains._setup import AppDomainSetup

# Every pytest run of a venv holding appdomain loads this plugin: what domains need loads
# only once a test asks for one (a fixture, an isolated test).
_ISOLATION = f"{__package__}._isolation"
_DOMAIN = "appdomain._domains._domain"


def _isolation_if_used() -> ModuleType | None:
    """Return _isolation once a test needed it; None while none did."""
    return sys.modules.get(_ISOLATION)


def _isolation() -> ModuleType:
    from . import _isolation

    return _isolation


__all__ = ["appdomain", "appdomain_factory"]

ISOLATE_OPTION = "--appdomain-isolate"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the appdomain command-line options and ini settings."""
    group = parser.getgroup("appdomain", "AppDomain isolation (appdomain plugin)")
    group.addoption(
        ISOLATE_OPTION,
        action="store_true",
        default=None,
        help="run every test function inside a fresh AppDomain, as if marked @pytest.mark.isolated",
    )
    group.addoption(
        "--appdomain-unload-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long unloading a test's domain may wait for its threads (default 10)",
    )
    group.addoption(
        "--appdomain-prepare-ahead",
        type=int,
        default=None,
        metavar="N",
        help="how many isolated tests' domains to prepare in the background while earlier "
        "tests run (default: CPUs + 1, at most 4; 0 turns it off)",
    )
    parser.addini(
        "appdomain_isolate",
        type="bool",
        default=False,
        help="run every test function inside a fresh AppDomain",
    )


class _ExitStatus:
    """Record the outermost session's exit status for appdomain's exit (AppDomain.exit_code).

    A domain still running at exit that cannot be unloaded makes appdomain end the process
    itself; it then exits with the run's status instead of 1.  Recorded once every plugin's
    sessionfinish has run (they may change it); a session pytester runs inside this one
    leaves it alone.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None]:
        try:
            return (yield)
        finally:
            domains = sys.modules.get(_DOMAIN)  # not loaded: no domain to exit with
            if session.config is self.config and domains is not None:
                domains.AppDomain.exit_code = int(session.exitstatus)


# The outermost pytest session's config while it is configured: pytester's in-process runs
# inside it must not record their status.
_outer: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    """Declare the isolated marker; keep the code pytest compiles for test modules."""
    _rewrites.capture_rewrites()
    if not _outer:
        _outer.append(config)
        config.pluginmanager.register(_ExitStatus(config), "appdomain-exit-status")
    config.addinivalue_line(
        "markers",
        "isolated(alone=False): run the test function inside a fresh AppDomain "
        "(subinterpreter); its module is imported there and fixture values cross by value "
        "(MarshalByRefObject by reference); alone=True keeps other domains' work from "
        "running meanwhile (for tests that measure the whole process)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test isolated under --appdomain-isolate, and plan the domains ahead."""
    option = config.getoption(ISOLATE_OPTION)
    isolate_all = bool(option or (option is None and config.getini("appdomain_isolate")))
    isolation = _isolation_if_used()
    if isolation is None:
        if not isolate_all and not any(
            item.get_closest_marker("isolated") is not None for item in items
        ):
            return  # nothing to isolate (and no earlier plan to replace)
        isolation = _isolation()
    if isolate_all:
        isolation.isolate_all(items)
    isolation.route_unittest(items)
    isolation.plan(config, items)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    """Let background domain work end first if the test measures the whole process."""
    isolation = _isolation_if_used()
    if isolation is not None:
        isolation.quiet_background(item)
    try:
        return (yield)
    finally:
        if isolation is not None:
            isolation.resume_background(item)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an isolated test's function inside a fresh domain instead of here."""
    if pyfuncitem.get_closest_marker("isolated") is None:
        return None
    # False: it is to run here after all (pytest's own hook then calls it).
    return True if _isolation().run(pyfuncitem) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Show an isolated test's failure as rendered inside its domain, where its frames were."""
    report = yield
    isolation = _isolation_if_used()
    if isolation is None:
        return report
    longrepr = isolation.take_longrepr(item)
    if longrepr is not None and call.when == "call" and report.failed:
        report.longrepr = longrepr
    where = isolation.take_skip_location(item)
    if where is not None and report.skipped and isinstance(report.longrepr, tuple):
        report.longrepr = (*where, report.longrepr[2])
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which tests --appdomain-isolate ran in the main interpreter, and why."""
    isolation = _isolation_if_used()
    line = None if isolation is None else isolation.unisolated_summary(terminalreporter.config)
    if line is not None:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Finish unloading isolated tests' domains; fail the run if one could not be unloaded."""
    isolation = _isolation_if_used()
    problems = [] if isolation is None else isolation.shutdown(session.config)
    if not problems:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "appdomain: isolated tests' domains not unloaded", red=True)
        for line in problems:
            reporter.write_line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    """Unload the domains prepared ahead for tests that did not run."""
    isolation = _isolation_if_used()
    if isolation is not None:
        isolation.shutdown(config)
    if _outer and _outer[0] is config:
        _outer.clear()


# -- fixtures ------------------------------------------------------------------------------


def _unload_timeout(config: pytest.Config) -> float:
    from .._domains._domain import AppDomain

    timeout = config.getoption("--appdomain-unload-timeout", None)
    return AppDomain.unload_timeout if timeout is None else float(timeout)


def _release(domain: AppDomain, timeout: float) -> list[str]:
    """Unload domain after listing what it leaked; return the problems found."""
    from .._domains._domain import AppDomain
    from .._errors import AppDomainUnloadedException, CannotUnloadAppDomainException
    from ._leaks import leftovers

    problems: list[str] = []
    try:
        found = domain.do_callback(leftovers)
        problems += [f"{domain.friendly_name!r} leaked: {what}" for what in found]
    except AppDomainUnloadedException:
        return []  # the test unloaded it itself
    try:
        AppDomain.unload(domain, timeout=timeout)
    except AppDomainUnloadedException:
        pass
    except CannotUnloadAppDomainException as exc:
        problems.append(str(exc))
        # The domain stays loaded; give it the rest of the session to finish before exit.
    return problems


@pytest.fixture
def appdomain_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., AppDomain]]:
    """Return create(name=None, setup=None) -> AppDomain; every domain is unloaded after the test.

    The test fails when one of them cannot be unloaded or still holds threads, open
    sockets or proxies to other domains' objects.
    """
    from .._domains._domain import AppDomain

    created: list[AppDomain] = []

    def create(name: str | None = None, setup: AppDomainSetup | None = None) -> AppDomain:
        domain = AppDomain.create_domain(name or f"{request.node.name}-{len(created) + 1}", setup)
        created.append(domain)
        return domain

    yield create
    timeout = _unload_timeout(request.config)
    problems: list[str] = []
    for domain in created:
        problems += _release(domain, timeout)
    if problems:
        pytest.fail(
            "appdomain: the test left its domains unclean:\n  " + "\n  ".join(problems),
            pytrace=False,
        )


@pytest.fixture
def appdomain(
    request: pytest.FixtureRequest, appdomain_factory: Callable[..., AppDomain]
) -> AppDomain:
    """Return a fresh domain named after the test, unloaded (and checked for leaks) after it."""
    return appdomain_factory(request.node.name)
