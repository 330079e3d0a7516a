"""Run isolated tests inside fresh domains: the main-process side of the ``isolated`` marker.

Each isolated test gets a new domain; its module is imported there (assertions rewritten),
its function called with the fixture values pytest computed here, and the domain unloaded.
The outcome comes back as the same exception type (so skip, xfail and ``raises`` behave
as usual) together with the failure report rendered where the frames were.

Creating a domain and importing pytest plus the test module into it costs far more than
a typical test, so a background thread prepares the domain of the next isolated test while
the current one runs (``_Warmer``); a domain has its own GIL, so that work runs in parallel.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from . import _pytest_remote
from ._domain import AppDomain
from ._errors import AppDomainUnloadedException, CannotUnloadAppDomainException

__all__ = ["plan", "run", "shutdown", "take_longrepr"]

_longrepr_key = pytest.StashKey[Any]()
_warmer_key = pytest.StashKey["_Warmer"]()
# Ini values pytest's assertion helpers read while explaining a failed assert.
_ASSERT_INIS = ("truncation_limit_lines", "truncation_limit_chars", "assertion_text_diff_style")


def is_isolated(item: pytest.Item) -> bool:
    """Tell whether item is a test function to run inside its own domain."""
    return isinstance(item, pytest.Function) and item.get_closest_marker("isolated") is not None


def plan(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember the isolated tests in run order, so their domains can be prepared ahead."""
    isolated: list[pytest.Function] = [
        item for item in items if isinstance(item, pytest.Function) and is_isolated(item)
    ]
    old = config.stash.get(_warmer_key, None)
    if old is not None:
        old.close()
    ahead = config.getoption("--appdomain-prepare-ahead", None)
    if ahead is None:
        # Domains build under their own GIL: keep every core busy, plus one queued.
        ahead = min((os.cpu_count() or 1) + 1, 4)
    if isolated and ahead > 0:
        config.stash[_warmer_key] = _Warmer(isolated, ahead)


def shutdown(config: pytest.Config) -> None:
    """Unload any domain prepared for a test that never ran."""
    warmer = config.stash.get(_warmer_key, None)
    if warmer is not None:
        warmer.close()
        del config.stash[_warmer_key]


def take_longrepr(item: pytest.Item) -> Any:
    """Return (once) the failure report an isolated test brought back from its domain."""
    if _longrepr_key not in item.stash:
        return None
    longrepr = item.stash[_longrepr_key]
    del item.stash[_longrepr_key]
    return longrepr


def spec_of(item: pytest.Function) -> dict[str, Any]:
    """Describe item for the domain: where its function lives and how to report a failure."""
    config = item.config
    module = item.module
    cls = item.cls
    return {
        "module": module.__name__,
        "path": str(module.__file__),
        "cls": cls.__qualname__ if cls is not None else None,
        "function": item.originalname,
        "assertmode": config.getoption("assertmode", "rewrite"),
        "verbosity": {
            "": config.get_verbosity(),
            config.VERBOSITY_ASSERTIONS: config.get_verbosity(config.VERBOSITY_ASSERTIONS),
        },
        "ini": {name: _ini(config, name) for name in _ASSERT_INIS},
        "tbstyle": config.getoption("tbstyle", "auto"),
        "showlocals": bool(config.getoption("showlocals", False)),
    }


def _ini(config: pytest.Config, name: str) -> Any:
    try:
        return config.getini(name)
    except ValueError:
        return None  # an older pytest without this setting


def run(item: pytest.Function) -> None:
    """Run item's function inside a fresh domain; raise what it raised there."""
    __tracebackhide__ = True
    funcargs = _crossing_funcargs(item)
    warmer = item.config.stash.get(_warmer_key, None)
    domain = warmer.take(item) if warmer is not None else None
    if domain is None:
        domain = _new_domain(item)
    try:
        outcome, exc, longrepr = domain.do_callback(
            _pytest_remote.run_test, spec_of(item), funcargs
        )
    finally:
        if warmer is not None:
            warmer.prepare_after(item)
        unload_problem = _unload(domain, item.config)
    if outcome == "passed":
        if unload_problem:
            pytest.fail(unload_problem, pytrace=False)
        return
    if outcome == "outcome":
        exc = _rebuild_outcome(*exc)
    if unload_problem:
        exc.add_note(unload_problem)
    report = _rebuild_longrepr(longrepr, exc)
    if report is not None:
        item.stash[_longrepr_key] = report
    raise exc


def _rebuild_outcome(name: str, state: dict[str, Any]) -> BaseException:
    """Rebuild the skip/xfail/fail/exit exception the test raised in its domain."""
    from _pytest import outcomes

    cls = getattr(outcomes, name, None)
    if not (isinstance(cls, type) and issubclass(cls, outcomes.OutcomeException)):
        cls = outcomes.Failed
    exc = cls.__new__(cls)
    exc.__dict__.update(state)
    exc.args = (state.get("msg"),)
    if isinstance(exc, outcomes.Skipped):
        # Report the skip at the test, not at the plugin line that re-raised it.
        exc._use_item_location = True
    return exc


def _new_domain(item: pytest.Function) -> AppDomain:
    return AppDomain.create_domain(item.name)


def _crossing_funcargs(item: pytest.Function) -> dict[str, Any]:
    """Collect the values the test function asks for, checking that each can cross."""
    from . import marshal
    from ._errors import SerializationException

    values = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
    for name, value in values.items():
        try:
            marshal.to_shareable(value, name=f"fixture {name!r}")
        except SerializationException as exc:
            why = str(exc)
        else:
            continue
        pytest.fail(
            f"isolated test {item.nodeid}: fixture {name!r} cannot cross into the test's "
            f"AppDomain: {why}\n"
            "Fixture values reach an isolated test by copy (by reference for a "
            "MarshalByRefObject); use a value that can be copied, or drop the "
            "isolated marker for this test.",
            pytrace=False,
        )
    return values


def _unload(domain: AppDomain, config: pytest.Config) -> str | None:
    timeout = config.getoption("--appdomain-unload-timeout", None)
    try:
        AppDomain.unload(domain, timeout=timeout)
    except AppDomainUnloadedException:
        pass
    except CannotUnloadAppDomainException as exc:
        return f"appdomain: the isolated test's domain could not be unloaded: {exc}"
    return None


def _rebuild_longrepr(data: Any, exc: BaseException) -> Any:
    """Turn the report rendered in the domain back into pytest's report object."""
    if data is not None:
        from _pytest.reports import _report_kwargs_from_json

        try:
            return _report_kwargs_from_json({"longrepr": data})["longrepr"]
        except Exception:
            pass
    from _pytest.outcomes import OutcomeException

    if isinstance(exc, OutcomeException):
        return None  # pytest reports skips, xfails and fail(pytrace=False) itself
    remote = getattr(exc, "remote_traceback", None)
    return f"{remote}(ran inside an isolated AppDomain)" if remote else None


class _Warmer:
    """Prepare the domain of the next isolated test on a background thread."""

    def __init__(self, items: list[pytest.Function], ahead: int) -> None:
        self._order = {id(item): n for n, item in enumerate(items)}
        self._items = items
        self._ahead = ahead
        self._lock = threading.Lock()
        self._ready: dict[int, _Prepared] = {}
        self._closed = False
        for index in range(min(ahead, len(items))):
            self._start(index)

    def take(self, item: pytest.Function) -> AppDomain | None:
        """Return the domain prepared for item (waiting for it), or None."""
        with self._lock:
            prepared = self._ready.pop(id(item), None)
        if prepared is None:
            return None
        prepared.done.wait()
        return prepared.domain

    def prepare_after(self, item: pytest.Function) -> None:
        """Start preparing the domain of the isolated test `ahead` places after item."""
        index = self._order.get(id(item))
        if index is not None and index + self._ahead < len(self._items):
            self._start(index + self._ahead)

    def _start(self, index: int) -> None:
        item = self._items[index]
        with self._lock:
            if self._closed or id(item) in self._ready:
                return
            prepared = _Prepared(item)
            self._ready[id(item)] = prepared
        threading.Thread(target=prepared.build, name="appdomain-pytest-warmer", daemon=True).start()

    def close(self) -> None:
        """Unload every prepared domain nobody took."""
        with self._lock:
            self._closed = True
            leftover = list(self._ready.values())
            self._ready.clear()
        for prepared in leftover:
            prepared.done.wait()
            if prepared.domain is not None:
                try:
                    AppDomain.unload(prepared.domain)
                except (AppDomainUnloadedException, CannotUnloadAppDomainException):
                    pass


class _Prepared:
    """A domain being created, with pytest and the test module imported into it."""

    def __init__(self, item: pytest.Function) -> None:
        self.item = item
        self.spec = spec_of(item)
        self.domain: AppDomain | None = None
        self.done = threading.Event()

    def build(self) -> None:
        try:
            domain = AppDomain.create_domain(self.item.name)
        except BaseException:
            self.done.set()
            return
        self.domain = domain
        try:
            domain.do_callback(_pytest_remote.prepare, self.spec)
        except BaseException:
            pass
        finally:
            self.done.set()
