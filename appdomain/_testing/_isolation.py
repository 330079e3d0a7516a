"""Run isolated tests inside fresh domains: the main-process side of the ``isolated`` marker.

Each isolated test gets a new domain; its module is imported there (assertions rewritten),
its function called with the fixture values pytest computed here, and the domain unloaded.
The outcome comes back as the same exception type (so skip, xfail and ``raises`` behave
as usual) together with the failure report rendered where the frames were.

Creating a domain and importing the test module into it costs far more than a typical
test, so background threads prepare the domains of the next isolated tests while the
current one runs (``_Warmer``); a domain has its own GIL, so that work runs in parallel.
The test module crosses as the code pytest compiled for it here, asserts rewritten; so
does the code of the modules it imports from source files that have no usable pyc,
compiled once by an earlier domain (``_pytest_code``).
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from .._errors import AppDomainError, CannotUnloadAppDomainException
from ..marshal._core import is_plain
from . import _remote
from ._code import code_cache, stashed
from ._fixtures import crossing_funcargs
from ._light import LightDomain, knows_imports, learn_imports
from ._refusals import function_code, known, learn, names_any
from ._reports import (
    longrepr_key,
    rebuild_longrepr,
    rebuild_outcome,
    report_subtests,
    take_longrepr,
    take_skip_location,
)

if TYPE_CHECKING:
    from ._remote import TestSpec

__all__ = [
    "isolate_all",
    "plan",
    "quiet_background",
    "resume_background",
    "route_unittest",
    "run",
    "shutdown",
    "take_longrepr",
    "take_skip_location",
    "unisolated_summary",
]

# On an item: isolated by --appdomain-isolate (not by its own marker), so a test that cannot
# run in a domain runs here instead, listed in the summary.
_auto_key = pytest.StashKey[bool]()
# On the config: (node id, why) of every such test that ran here.
_unisolated_key = pytest.StashKey[list[tuple[str, str]]]()
# On an item run alone in the main interpreter: the background work resumes after it.
_resume_key = pytest.StashKey[bool]()
_warmer_key = pytest.StashKey["_Warmer"]()
_session_spec_key = pytest.StashKey["TestSpec"]()
_unloader_key = pytest.StashKey["_Unloader"]()
# Ini values pytest's assertion helpers read while explaining a failed assert.
_ASSERT_INIS = ("truncation_limit_lines", "truncation_limit_chars", "assertion_text_diff_style")


def is_isolated(item: pytest.Item) -> bool:
    """Tell whether item is a test function to run inside its own domain."""
    return isinstance(item, pytest.Function) and item.get_closest_marker("isolated") is not None


def _is_unittest(item: pytest.Item) -> bool:
    from _pytest.unittest import TestCaseFunction

    return isinstance(item, TestCaseFunction)


def isolate_all(items: list[pytest.Item]) -> None:
    """Isolate every test function not marked already (--appdomain-isolate).

    Unlike a test marked ``isolated``, which fails when it cannot run in a domain, such a
    test then runs in the main interpreter, and the summary says so (``unisolated_summary``).
    """
    for item in items:
        if isinstance(item, pytest.Function) and item.get_closest_marker("isolated") is None:
            item.add_marker(pytest.mark.isolated)
            item.stash[_auto_key] = True


def unisolated_summary(config: pytest.Config) -> str | None:
    """Return the one line naming the tests that ran in the main interpreter, and why."""
    ran = config.stash.get(_unisolated_key, [])
    if not ran:
        return None
    tests = "; ".join(f"{nodeid} ({why})" for nodeid, why in ran)
    many = "test" if len(ran) == 1 else "tests"
    return f"appdomain: {len(ran)} {many} ran unisolated: {tests}"


def _run_unisolated(item: pytest.Function, why: str, *, alone: bool = False) -> None:
    """Note that item runs in the main interpreter; unload a domain prepared for it.

    With alone (a test that traces the process's memory), no domain is prepared or
    unloaded in the background until the test has run (``resume_background``): tracing
    while another interpreter is created can deadlock CPython 3.13.
    """
    item.config.stash.setdefault(_unisolated_key, []).append((item.nodeid, why))
    alone = alone or runs_alone(item)
    warmer = item.config.stash.get(_warmer_key, None)
    domain, _, quiet = warmer.take(item) if warmer is not None else (None, False, False)
    if alone:
        if domain is not None:
            _unload(domain, item.config, quiet=quiet)
        if warmer is not None:
            warmer.wait_idle()
        unloader = item.config.stash.get(_unloader_key, None)
        if unloader is not None:
            unloader.wait_idle()
        item.stash[_resume_key] = True
        return
    if domain is not None:
        # Its test module was imported there, which may have started threads (not quiet).
        _unloader(item.config).put(domain, item.nodeid, quiet=quiet)
    if warmer is not None:
        warmer.prepare_after(item)


def resume_background(item: pytest.Item) -> None:
    """After a test that ran alone in the main interpreter, prepare the next domains again."""
    if not item.stash.get(_resume_key, False):
        return
    del item.stash[_resume_key]
    warmer = item.config.stash.get(_warmer_key, None)
    if warmer is not None and isinstance(item, pytest.Function):
        warmer.prepare_after(item)


def _run_unittest(item: pytest.Function) -> None:
    if not run(item):
        type(item).runtest(item)


def route_unittest(items: list[pytest.Item]) -> None:
    """Make the isolated unittest.TestCase items run in a domain too.

    pytest runs a TestCase test through unittest (its runtest), not pytest_pyfunc_call: the
    item's runtest is replaced by run.
    """
    for item in items:
        if isinstance(item, pytest.Function) and is_isolated(item) and _is_unittest(item):
            vars(item)["runtest"] = functools.partial(_run_unittest, item)  # shadows the method


def quiet_background(item: pytest.Item) -> None:
    """Before a test that measures the whole process, let the background domain work end.

    Domains being prepared or unloaded allocate memory in this process; a test that traces
    allocations (``tracemalloc``) would count theirs, and on CPython 3.13.0 tracing while
    another interpreter runs can even crash the process.
    """
    warmer = item.config.stash.get(_warmer_key, None)
    unloader = item.config.stash.get(_unloader_key, None)
    if warmer is None and unloader is None:
        return  # nothing runs in the background: no need to look at the test's code
    if not (isinstance(item, pytest.Function) and runs_alone(item)):
        return
    if warmer is not None:
        warmer.wait_idle()
    if unloader is not None:
        unloader.wait_idle()


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
        config.stash[_warmer_key] = _Warmer(isolated, ahead, _known_unisolated)


def shutdown(config: pytest.Config) -> list[str]:
    """Unload the domains prepared for tests that never ran, and those still unloading.

    Returns the problems met unloading in the background, one line per test.
    """
    warmer = config.stash.get(_warmer_key, None)
    if warmer is not None:
        warmer.close()
        del config.stash[_warmer_key]
    unloader = config.stash.get(_unloader_key, None)
    if unloader is None:
        return []
    del config.stash[_unloader_key]
    return unloader.close()


def spec_of(item: pytest.Function, *, code: bool = True) -> TestSpec:
    """Describe item for the domain: where its function lives and how to report a failure.

    With code, the spec also carries the test module's compiled code and the code earlier
    domains compiled, for a domain that has not imported the test module yet.
    """
    config = item.config
    module = item.module
    cls = item.cls
    spec: TestSpec = {
        "module": module.__name__,
        "path": str(module.__file__),
        "cls": cls.__qualname__ if cls is not None else None,
        "function": item.originalname,
        **stashed(config, _session_spec_key, _session_spec),
        "unittest": _is_unittest(item),
    }
    if code:
        cache = code_cache(config)
        spec["code"] = cache.test_module(item)
        spec["cache"] = cache.shared()
    return spec


def _session_spec(config: pytest.Config) -> TestSpec:
    """The part of every test's spec that comes from the session's options (read once)."""
    return {
        "assertmode": config.getoption("assertmode", "rewrite"),
        "verbosity": {
            "": config.get_verbosity(),
            config.VERBOSITY_ASSERTIONS: config.get_verbosity(config.VERBOSITY_ASSERTIONS),
        },
        "ini": {name: _ini(config, name) for name in _ASSERT_INIS},
        "tbstyle": config.getoption("tbstyle", "auto"),
        "showlocals": bool(config.getoption("showlocals", False)),
    }


def _ini(config: pytest.Config, name: str) -> object:
    try:
        value = config.getini(name)
    except ValueError:
        return None  # an older pytest without this setting
    try:
        _remote.pack(value)  # the spec crosses packed by CPython's marshal
    except ValueError:
        return str(value)
    return value


def run(item: pytest.Function) -> bool:
    """Run item's function inside a fresh domain; raise what it raised there.

    Return False when item is to run in this interpreter instead: one isolated by the
    option (not by its own marker) whose fixture values cannot cross, or that needs what a
    subinterpreter refuses.  Such a test is listed in the summary.
    """
    __tracebackhide__ = True
    auto = item.stash.get(_auto_key, False)
    why = _known_unisolated(item)
    if why is not None:
        _run_unisolated(item, why)
        return False
    crossing = crossing_funcargs(item, auto)
    if isinstance(crossing, str):
        _run_unisolated(item, crossing)
        return False
    funcargs, made_here, remade, remade_args = crossing
    warmer = item.config.stash.get(_warmer_key, None)
    light, ready, _ = warmer.take(item) if warmer is not None else (None, False, False)
    if light is None:
        light = _new_domain(item)
    quiet = False
    try:
        spec = spec_of(item, code=not ready)
        reply: tuple[Any, ...]
        if not is_plain(funcargs) or (remade and not is_plain(remade)):
            if not ready:
                # A value crossing by name from the test module must find it imported as
                # pytest compiled it, not imported afresh by the decoder.
                try:
                    code_cache(item.config).learn(light.call(_remote.PREPARE, spec)[0])
                except Exception:
                    pass  # run_test imports it again, and reports what goes wrong
            spec["remade_args"] = remade_args
            # Values crossing by appdomain's marshalling (by name, copies, references).
            reply = light.run_encoded(spec, funcargs, made_here, remade)
        else:
            # Builtin values only: they cross packed with the spec, by CPython's marshal,
            # so the test's interpreter need not be a domain, nor load appdomain.marshal;
            # so do the plans of the fixtures made there again when their values are.
            spec["made_here"] = made_here
            spec["funcargs"] = funcargs
            if remade:
                spec["remade"] = remade
                spec["remade_args"] = remade_args
            reply = light.call(_remote.RUN, spec)
        outcome, exc, longrepr, compiled, quiet, limit, subtests = reply
        code_cache(item.config).learn(compiled)
    finally:
        if warmer is not None:
            warmer.prepare_after(item)
        unload_problem = None
        if quiet:
            # Nothing the test started can stop the unload: it needs no waiting for here.
            _unloader(item.config).put(light, item.nodeid, quiet=True)
        else:
            unload_problem = _unload(light, item.config, quiet=False)
    if auto and limit is not None and outcome != "passed":
        why, module_wide, refused = limit
        learn(item, why, module_wide, refused)
        if warmer is not None:
            warmer.drop_known()  # the next tests it now knows of need no domain
        _run_unisolated(item, why, alone="tracemalloc" in why)
        return False
    report_subtests(item, subtests)
    if outcome == "passed":
        if unload_problem:
            pytest.fail(unload_problem, pytrace=False)
        return True
    if outcome == "outcome":
        exc = rebuild_outcome(item, *exc)
    if unload_problem:
        exc.add_note(unload_problem)
    report = rebuild_longrepr(longrepr, exc)
    if report is not None:
        item.stash[longrepr_key] = report
    raise exc


def _known_unisolated(item: pytest.Function) -> str | None:
    """Say why item, isolated by the option, cannot run in a domain, if known before trying
    (see _refusals); None for a test marked isolated, which then fails saying why."""
    return known(item) if item.stash.get(_auto_key, False) else None


# Modules whose figures cover the whole process, not one domain: while a test that uses one
# runs, no other domain is prepared or unloaded, or that work would count in its figures.
_PROCESS_WIDE = frozenset({"tracemalloc"})


def runs_alone(item: pytest.Function) -> bool:
    """Tell whether item must run with no domain work going on in the background.

    True for ``@pytest.mark.isolated(alone=True)``, and for a test function whose code
    names a process-wide tool such as ``tracemalloc``.
    """
    marker = item.get_closest_marker("isolated")
    if marker is not None and marker.kwargs.get("alone"):
        return True
    code = function_code(item)
    return code is not None and names_any(code, _PROCESS_WIDE)


def _new_domain(item: pytest.Function) -> LightDomain:
    return LightDomain(item.name)


def _unloader(config: pytest.Config) -> _Unloader:
    return stashed(config, _unloader_key, _Unloader)


class _Unloader:
    """Unload the domains of finished tests on a background thread, while the next ones run.

    Only domains that no longer run a thread of the test's go here (their unload takes a
    few ms and cannot fail for a thread that will not stop); the rest are unloaded before
    the test's outcome is reported, so an unload failure fails that test.
    """

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        # A job, an Event to set once the jobs before it are done, or None to stop.
        self._queue: queue.SimpleQueue[tuple[LightDomain, str, bool] | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._problems: list[str] = []
        self._thread = threading.Thread(
            target=self._work, name="appdomain-pytest-unloader", daemon=True
        )
        self._thread.start()

    def put(self, domain: LightDomain, nodeid: str, *, quiet: bool) -> None:
        """Unload domain (quiet: no thread of the test's runs there) in the background."""
        self._queue.put((domain, nodeid, quiet))

    def wait_idle(self) -> None:
        """Wait until the domains queued so far are unloaded."""
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if isinstance(job, threading.Event):
                job.set()
                continue
            domain, nodeid, quiet = job
            try:
                problem = _unload(domain, self._config, quiet=quiet)
            except Exception as exc:  # reported, and the next domains are still unloaded
                problem = f"appdomain: the isolated test's interpreter was not unloaded: {exc!r}"
            if problem is not None:
                self._problems.append(f"{nodeid}: {problem}")

    def close(self) -> list[str]:
        """Wait for the queued unloads; return the problems met, one line per test."""
        self._queue.put(None)
        self._thread.join()
        return self._problems


def _unload(light: LightDomain, config: pytest.Config, *, quiet: bool) -> str | None:
    """Unload the test's interpreter: destroy it, or unload it as the domain it became.

    quiet tells that no thread the test started runs there: an interpreter that is no
    domain then only needs destroying; the others are stopped as domains are (bounded).
    """
    if quiet and not light.is_domain():
        light.destroy()
        return None
    timeout = config.getoption("--appdomain-unload-timeout", None)
    try:
        light.unload_domain(timeout)
    except CannotUnloadAppDomainException as exc:
        return f"appdomain: the isolated test's domain could not be unloaded: {exc}"
    except AppDomainError as exc:
        return f"appdomain: the isolated test's interpreter could not be unloaded: {exc}"
    return None


class _Warmer:
    """Prepare the domains of the next isolated tests on background threads, ahead at once.

    The threads live as long as the session: starting one per test made the test's thread
    wait for the new thread to run (Thread.start waits), a few ms on a busy machine.
    """

    def __init__(
        self,
        items: list[pytest.Function],
        ahead: int,
        unisolated: Callable[[pytest.Function], str | None],
    ) -> None:
        self._order = {id(item): n for n, item in enumerate(items)}
        self._items = items
        self._ahead = ahead
        self._unisolated = unisolated  # why a test will run unisolated, if known already
        self._lock = threading.Lock()
        self._ready: dict[int, _Prepared] = {}
        self._dropped: list[_Prepared] = []  # given up (drop_known); they unload themselves
        self._closed = False
        # What to build next, in order; None ends a thread.
        self._jobs: queue.SimpleQueue[_Prepared | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name="appdomain-pytest-warmer", daemon=True)
            for _ in range(min(ahead, len(items)))
        ]
        for thread in self._threads:
            thread.start()
        for index in range(min(ahead, len(items))):
            self._start(index)

    def _work(self) -> None:
        while (prepared := self._jobs.get()) is not None:
            if self._closed:
                prepared.done.set()  # nobody will take it
            else:
                prepared.build()

    def take(self, item: pytest.Function) -> tuple[LightDomain | None, bool, bool]:
        """Return the domain prepared for item (waiting for it), or None; whether the test
        module is imported there; and whether no thread that import started still runs."""
        with self._lock:
            prepared = self._ready.pop(id(item), None)
        if prepared is None:
            return None, False, False
        prepared.done.wait()
        return prepared.domain, prepared.ready, prepared.quiet

    def drop_known(self) -> None:
        """Stop preparing domains for the tests now known to run unisolated; unload those
        already prepared (in the background)."""
        with self._lock:
            dropped = [p for p in self._ready.values() if self._unisolated(p.item) is not None]
            for prepared in dropped:
                del self._ready[id(prepared.item)]
            self._dropped.extend(dropped)
        for prepared in dropped:
            prepared.cancel()

    def wait_idle(self) -> None:
        """Wait until every domain being prepared is ready (none starts until prepare_after),
        and those dropped are built and queued for unloading."""
        with self._lock:
            pending = [*self._ready.values(), *self._dropped]
        for prepared in pending:
            prepared.done.wait()

    def prepare_after(self, item: pytest.Function) -> None:
        """Start preparing the domain of the isolated test `ahead` places after item."""
        index = self._order.get(id(item))
        if index is not None and index + self._ahead < len(self._items):
            self._start(index + self._ahead)

    def _start(self, index: int) -> None:
        item = self._items[index]
        if self._unisolated(item) is not None:
            return  # it will not run in a domain
        with self._lock:
            if self._closed or id(item) in self._ready:
                return
            prepared = _Prepared(item)
            self._ready[id(item)] = prepared
            self._jobs.put(prepared)  # under the lock: never after close's ends

    def close(self) -> None:
        """Unload every prepared domain nobody took."""
        with self._lock:
            self._closed = True
            leftover = list(self._ready.values())
            self._ready.clear()
            for _ in self._threads:
                self._jobs.put(None)
        for prepared in self._dropped:
            prepared.done.wait()  # queued for the unloader, which closes after this
        for prepared in leftover:
            prepared.done.wait()
            if prepared.domain is not None:
                _unload(prepared.domain, prepared.item.config, quiet=prepared.quiet)


class _Prepared:
    """A domain being created, with the test module imported into it."""

    def __init__(self, item: pytest.Function) -> None:
        self.item = item
        self.spec = spec_of(item)
        if not knows_imports(self.spec["module"]):
            self.spec["imports"] = True  # so the next tests' interpreters are served them
        self.cache = code_cache(item.config)
        self.domain: LightDomain | None = None
        self.ready = False  # the test module is imported in domain
        self.quiet = False  # and no thread that import started still runs
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._cancelled = False  # nobody will take it: unload it once built

    def cancel(self) -> None:
        """Give up the domain: not built if not started yet, else unloaded once built."""
        with self._lock:
            self._cancelled = True
            if self.done.is_set():
                self._discard()

    def build(self) -> None:
        with self._lock:
            if self._cancelled:
                self.done.set()
                return
        try:
            domain = LightDomain(self.item.name)
        except BaseException:
            self.done.set()
            return
        self.domain = domain
        try:
            compiled, self.quiet, imported = domain.call(_remote.PREPARE, self.spec)
            self.cache.learn(compiled)
            if imported:
                learn_imports(self.spec["module"], imported)
            self.ready = True
        except BaseException:
            pass  # the test imports its module again, and reports what goes wrong
        finally:
            with self._lock:
                if self._cancelled:
                    self._discard()  # queued before done: who waits for done can wait for it
                self.done.set()

    def _discard(self) -> None:
        domain, self.domain = self.domain, None
        if domain is not None:
            _unloader(self.item.config).put(domain, self.item.nodeid, quiet=self.quiet)
