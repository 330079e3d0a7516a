"""Run small test files through the appdomain pytest plugin: fixtures, leaks, isolation."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["pytester"]

# Helpers the domains import by name (test files and domains share the pytester folder).
HELPERS = """
import os
import socket
import threading

from appdomain import AppDomain, MarshalByRefObject

_kept = []

def domain_name():
    return AppDomain.current_domain.friendly_name

def start_spinning_thread():
    stop = threading.Event()
    def spin():
        while not stop.wait(0.01):  # wakes often, so unload's abort lands
            pass
    threading.Thread(target=spin, name="spinner").start()
    _kept.append(stop)

def start_blocked_thread():
    # Stuck in one C call (open() of a FIFO with no writer yet), where no abort lands, until
    # this process's main interpreter opens the FIFO for writing as it exits.
    path = os.environ["BLOCK_FIFO"]
    threading.Thread(target=lambda: open(path, "rb").close(), name="blocked").start()

def release_blocked_thread_at_exit():
    import atexit  # runs before appdomain's own exit hook, registered earlier
    atexit.register(lambda: open(os.environ["BLOCK_FIFO"], "wb").close())

def open_socket():
    _kept.append(socket.socket())

def keep(value):
    _kept.append(value)

class Counter(MarshalByRefObject):
    def __init__(self):
        self.hits = 0
    def hit(self):
        self.hits += 1
        return self.hits
"""


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Write source as a test file next to the helpers and run it in a fresh process."""
    pytester.makepyfile(helpers=HELPERS)
    pytester.makepyfile(test_subject=source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


# -- registration ------------------------------------------------------------------------


def test_markers_lists_isolated(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.isolated(alone=False):*fresh AppDomain*"])


def test_help_lists_isolate_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--appdomain-isolate*"])


def test_plugin_loads_with_dash_p(pytester: pytest.Pytester) -> None:
    source = "def test_it(appdomain):\n    assert appdomain.friendly_name == 'test_it'\n"
    result = run(pytester, source, "-p", "no:appdomain", "-p", "appdomain.pytest_plugin")
    result.assert_outcomes(passed=1)


def test_a_run_that_uses_no_domain_loads_no_domain_machinery(pytester: pytest.Pytester) -> None:
    # The plugin loads in every pytest run of the venv: it must not cost such runs anything.
    source = """
import sys
def test_plain():
    loaded = {"appdomain._core", "appdomain._domains._domain", "appdomain._testing._isolation"}
    assert not loaded & set(sys.modules)
"""
    result = run(pytester, source)
    result.assert_outcomes(passed=1)


def test_appdomains_modules_import_without_pytests_assertion_rewriter(
    pytester: pytest.Pytester,
) -> None:
    # pytest would parse and compile each module again to rewrite asserts appdomain has not.
    source = """
import sys
def test_loaders(appdomain):
    before_the_shim = {"appdomain", "appdomain.pytest_plugin"}
    rewritten = [
        name for name, module in list(sys.modules.items())
        if name.split(".")[0] == "appdomain" and name not in before_the_shim
        and type(getattr(module.__spec__, "loader", None)).__name__ == "AssertionRewritingHook"
    ]
    assert "appdomain._domains._domain" in sys.modules
    assert rewritten == []
"""
    run(pytester, source).assert_outcomes(passed=1)


# -- fixtures ----------------------------------------------------------------------------


def test_appdomain_fixture_is_named_after_the_test(pytester: pytest.Pytester) -> None:
    source = """
import helpers
def test_named(appdomain):
    assert appdomain.do_callback(helpers.domain_name) == "test_named"
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_appdomain_fixture_unloads_after_the_test(pytester: pytest.Pytester) -> None:
    source = """
import pytest
import helpers
from appdomain import AppDomainUnloadedException
seen = []
def test_first(appdomain):
    seen.append(appdomain)
def test_second():
    with pytest.raises(AppDomainUnloadedException):
        seen[0].do_callback(helpers.domain_name)
"""
    run(pytester, source).assert_outcomes(passed=2)


def test_factory_creates_named_and_numbered_domains(pytester: pytest.Pytester) -> None:
    source = """
import helpers
def test_many(appdomain_factory):
    first = appdomain_factory("first")
    second = appdomain_factory()
    assert first.do_callback(helpers.domain_name) == "first"
    assert second.do_callback(helpers.domain_name) == "test_many-2"
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_factory_unloads_every_domain(pytester: pytest.Pytester) -> None:
    source = """
import pytest
import helpers
from appdomain import AppDomainUnloadedException
made = []
def test_make(appdomain_factory):
    made.extend([appdomain_factory(), appdomain_factory()])
def test_gone():
    for domain in made:
        with pytest.raises(AppDomainUnloadedException):
            domain.do_callback(helpers.domain_name)
"""
    run(pytester, source).assert_outcomes(passed=2)


def test_leaked_thread_fails_the_test(pytester: pytest.Pytester) -> None:
    source = """
import helpers
def test_leaky(appdomain):
    appdomain.do_callback(helpers.start_spinning_thread)
"""
    result = run(pytester, source)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*'test_leaky' leaked: thread 'spinner' is still running*"])


def test_leaked_socket_fails_the_test(pytester: pytest.Pytester) -> None:
    source = """
import helpers
def test_leaky(appdomain):
    appdomain.do_callback(helpers.open_socket)
"""
    result = run(pytester, source)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*'test_leaky' leaked: socket fd=* is still open*"])


def test_leaked_proxy_fails_the_test(pytester: pytest.Pytester) -> None:
    source = """
import helpers
def test_leaky(appdomain):
    appdomain.do_callback(helpers.keep, helpers.Counter())
"""
    result = run(pytester, source)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*'test_leaky' leaked: 1 proxy(ies)*still alive*"])


@pytest.fixture
def fifo(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO the inner run's helpers block a thread on (BLOCK_FIFO), released at its exit."""
    path = pytester.path / "block.fifo"
    os.mkfifo(path)
    monkeypatch.setenv("BLOCK_FIFO", str(path))


@pytest.mark.usefixtures("fifo")
def test_domain_that_cannot_unload_fails_the_test(pytester: pytest.Pytester) -> None:
    # The thread sits in one C call past the unload timeout, so the abort cannot land.
    source = """
import helpers
helpers.release_blocked_thread_at_exit()
def test_stuck(appdomain):
    appdomain.do_callback(helpers.start_blocked_thread)
"""
    result = run(pytester, source, "--appdomain-unload-timeout=0.2")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*could not be unloaded within 0.2 s*"])


def test_clean_domain_passes(pytester: pytest.Pytester) -> None:
    source = """
import helpers
def test_clean(appdomain):
    appdomain.do_callback(helpers.domain_name)
"""
    run(pytester, source).assert_outcomes(passed=1)


# -- the isolated marker and option ----------------------------------------------------------


def test_isolated_test_runs_in_another_interpreter(pytester: pytest.Pytester) -> None:
    source = """
import _interpreters
import pytest
@pytest.mark.isolated
def test_where():
    assert _interpreters.get_current()[0] != _interpreters.get_main()[0]
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_isolated_domain_is_named_after_the_test(pytester: pytest.Pytester) -> None:
    source = """
import pytest
from appdomain import AppDomain
@pytest.mark.isolated
def test_where():
    assert AppDomain.current_domain.friendly_name == "test_where"
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_isolated_test_that_needs_no_domain_loads_no_call_path(pytester: pytest.Pytester) -> None:
    # Its interpreter becomes a domain only when something in it needs one (_testing._light).
    source = """
import sys
import pytest
@pytest.mark.isolated
def test_plain():
    assert "appdomain._core" not in sys.modules
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_fixture_values_crossing_by_name_need_no_domain(pytester: pytest.Pytester) -> None:
    # Classes and functions cross by appdomain's marshalling, which needs no call path.
    source = """
import collections
import functools
import sys
import pytest
@pytest.fixture(params=[list, collections.OrderedDict])
def factory(request):
    return request.param
@pytest.mark.isolated
def test_makes(factory):
    assert factory() == factory() and "appdomain._core" not in sys.modules
@pytest.mark.isolated
@pytest.mark.parametrize("make", [functools.partial(int, "7")])
def test_partial(make):
    assert make() == 7 and "appdomain._core" not in sys.modules
"""
    run(pytester, source).assert_outcomes(passed=3)


def test_isolated_test_creates_and_calls_a_domain_of_its_own(pytester: pytest.Pytester) -> None:
    # appdomain is first imported by the test function: its interpreter becomes a domain then.
    source = """
import pytest
@pytest.mark.isolated
def test_nested():
    import helpers
    from appdomain import AppDomain
    assert AppDomain.current_domain.friendly_name == "test_nested"
    inner = AppDomain.create_domain("inner")
    try:
        assert inner.do_callback(helpers.domain_name) == "inner"
    finally:
        AppDomain.unload(inner)
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_module_globals_do_not_leak_between_isolated_tests(pytester: pytest.Pytester) -> None:
    source = """
import pytest
STATE = []
@pytest.mark.isolated
def test_one():
    STATE.append(1)
    assert STATE == [1]
@pytest.mark.isolated
def test_two():
    STATE.append(2)
    assert STATE == [2]
def test_main_untouched():
    assert STATE == []
"""
    run(pytester, source).assert_outcomes(passed=3)


def test_isolate_option_applies_to_every_test(pytester: pytest.Pytester) -> None:
    source = """
import _interpreters
def in_domain():
    return _interpreters.get_current()[0] != _interpreters.get_main()[0]
def test_one():
    assert in_domain()
class TestGroup:
    def test_two(self):
        assert in_domain()
"""
    run(pytester, source, "--appdomain-isolate").assert_outcomes(passed=2)


def test_isolate_ini_setting_applies_to_every_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nappdomain_isolate = true\n")
    source = """
import _interpreters
def test_one():
    assert _interpreters.get_current()[0] != _interpreters.get_main()[0]
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_failed_assert_shows_rewritten_diff(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_compare():
    expected = [1, 2, 4]
    assert [1, 2, 3] == expected
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            ">*assert [[]1, 2, 3[]] == expected",
            "E*assert [[]1, 2, 3[]] == [[]1, 2, 4[]]",
            "E*At index 2 diff: 3 != 4",
            "test_subject.py:5: AssertionError",
        ]
    )


def test_failure_shows_the_remote_frames(pytester: pytest.Pytester) -> None:
    source = """
import pytest
def deep():
    raise ValueError("from the domain")
@pytest.mark.isolated
def test_boom():
    deep()
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [">*deep()", '>*raise ValueError("from the domain")', "E*ValueError: from the domain"]
    )


def test_skip_inside_isolated_test_skips(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_skipper():
    pytest.skip("not today")
"""
    result = run(pytester, source, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*test_subject.py*not today"])


def test_skip_is_reported_at_the_line_that_skipped(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_skipper():
    reason = "not today"
    pytest.skip(reason)
"""
    result = run(pytester, source, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_subject.py:5: not today"])


def _refusing_extension() -> str:
    """Name a C extension of this Python that refuses to load in a subinterpreter."""
    import importlib.util

    for name in ("_curses", "readline", "_tkinter", "_testsinglephase"):
        if importlib.util.find_spec(name) is not None:
            return name
    pytest.skip("this Python has none of the single-phase C extensions the test imports")


def test_extension_refusing_the_domain_fails_with_the_reason(pytester: pytest.Pytester) -> None:
    source = f"""
import pytest
@pytest.mark.isolated
def test_needs_it():
    import {_refusing_extension()}
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*subinterpreter limit*C extension refuses to load*"])


def test_skip_after_a_refused_import_says_why(pytester: pytest.Pytester) -> None:
    name = _refusing_extension()
    source = f"""
import pytest
@pytest.mark.isolated
def test_needs_it():
    try:
        import {name}
    except ImportError:
        pytest.skip("requires {name}")
"""
    result = run(pytester, source, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [f"SKIPPED*requires {name} (appdomain:*subinterpreter limit*C extension refuses*"]
    )


def test_xfail_inside_isolated_test_xfails(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_imperative():
    pytest.xfail("known bug")
@pytest.mark.isolated
@pytest.mark.xfail(raises=ZeroDivisionError, strict=True)
def test_marked():
    1 / 0
"""
    run(pytester, source).assert_outcomes(xfailed=2)


def test_fail_inside_isolated_test_fails_with_message(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_failer():
    pytest.fail("plainly wrong", pytrace=False)
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*plainly wrong*"])


def test_raises_inside_isolated_test_works(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_catch():
    with pytest.raises(KeyError):
        {}["missing"]
"""
    run(pytester, source).assert_outcomes(passed=1)


RAISES_CASES = """
import sys
import pytest
def boom(message):
    raise ValueError(message)
@pytest.mark.isolated
def test_plain():
    with pytest.raises((KeyError, ValueError), match=r"^mis+ing") as info:
        boom("missing key")
    assert info.type is ValueError and info.typename == "ValueError"
    assert pytest.raises(ValueError, boom, "x").value.args == ("x",)
    assert "_pytest.raises" not in sys.modules  # decided without loading pytest
@pytest.mark.isolated
def test_info_match():
    with pytest.raises(ValueError) as info:
        boom("abc")
    info.match("b")
@pytest.mark.isolated
def test_did_not_raise():
    with pytest.raises(ValueError):
        pass
@pytest.mark.isolated
def test_no_match():
    with pytest.raises(ValueError, match="xyz"):
        boom("abc")
@pytest.mark.isolated
def test_other_type_propagates():
    with pytest.raises(KeyError):
        boom("other")
@pytest.mark.isolated
def test_call_did_not_raise():
    pytest.raises(ValueError, len, "x")
"""


def test_raises_decides_as_pytest_does(pytester: pytest.Pytester) -> None:
    result = run(pytester, RAISES_CASES)
    result.assert_outcomes(passed=2, failed=4)
    result.stdout.fnmatch_lines(
        [
            "*test_did_not_raise - Failed: DID NOT RAISE ValueError",
            "*test_no_match - AssertionError: Regex pattern did not*",
            "*test_other_type_propagates - ValueError: other",
            "*test_call_did_not_raise - Failed: DID NOT RAISE Value*",
        ],
        consecutive=False,
    )


def test_fixture_values_cross_by_value(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.fixture
def config():
    return {"name": "demo", "sizes": [1, 2]}
@pytest.mark.isolated
@pytest.mark.parametrize("n", [1, 2])
def test_uses(config, n, tmp_path):
    assert config == {"name": "demo", "sizes": [1, 2]}
    assert n in config["sizes"]
    (tmp_path / "out.txt").write_text("ok")
"""
    run(pytester, source).assert_outcomes(passed=2)


def test_builtin_fixture_values_reach_the_domain_without_appdomain_marshal(
    pytester: pytest.Pytester,
) -> None:
    # They cross packed with the test's spec: the domain need not load the marshal layer.
    source = """
import sys
import pytest
@pytest.fixture
def config():
    return {"name": "x", "sizes": [1, 2], "pair": (1.5, b"b"), "set": frozenset({None})}
@pytest.mark.isolated
@pytest.mark.parametrize("n", [3, "s"])
def test_gets(config, n):
    assert config["sizes"] == [1, 2] and n in (3, "s")
    assert "appdomain.marshal" not in sys.modules
"""
    run(pytester, source).assert_outcomes(passed=2)


def test_marshal_by_ref_fixture_crosses_by_reference(pytester: pytest.Pytester) -> None:
    source = """
import pytest
import helpers
from appdomain import is_transparent_proxy
@pytest.fixture
def counter():
    c = helpers.Counter()
    yield c
    assert c.hits == 1  # the isolated test called the very same object
@pytest.mark.isolated
def test_hits(counter):
    assert is_transparent_proxy(counter)
    assert counter.hit() == 1
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_monkeypatch_patches_inside_the_domain(pytester: pytest.Pytester) -> None:
    source = """
import json
import pytest
@pytest.mark.isolated
def test_patched(monkeypatch):
    monkeypatch.setattr(json, "dumps", lambda value: "patched")
    assert json.dumps(1) == "patched"
def test_main_untouched():
    assert json.dumps(1) == "1"
"""
    run(pytester, source).assert_outcomes(passed=2)


def test_monkeypatch_in_the_domain_does_not_load_pytests_fixtures(
    pytester: pytest.Pytester,
) -> None:
    source = """
import sys
import pytest
@pytest.mark.isolated
def test_light(monkeypatch):
    monkeypatch.setattr(sys, "maxsize", 7)
    assert sys.maxsize == 7 and "_pytest.fixtures" not in sys.modules
@pytest.mark.isolated
def test_then_real_pytest(monkeypatch):
    monkeypatch.setenv("SEEN", "1")
    assert pytest.approx(0.1 + 0.2) == 0.3 and "_pytest.fixtures" in sys.modules
"""
    run(pytester, source).assert_outcomes(passed=2)


def test_monkeypatch_is_undone_after_the_isolated_test(pytester: pytest.Pytester) -> None:
    # Environment variables belong to the process: a later domain would see one left set.
    source = """
import os
import pytest
@pytest.mark.isolated
def test_sets(monkeypatch):
    monkeypatch.setenv("APPDOMAIN_PLUGIN_PROBE", "set")
    assert os.environ["APPDOMAIN_PLUGIN_PROBE"] == "set"
@pytest.mark.isolated
def test_gone():
    assert "APPDOMAIN_PLUGIN_PROBE" not in os.environ
"""
    # Without preparing ahead, the second domain starts after the first test ran.
    run(pytester, source, "--appdomain-prepare-ahead=0").assert_outcomes(passed=2)


def test_fixture_that_cannot_cross_names_itself(pytester: pytest.Pytester) -> None:
    source = """
import threading
import pytest
@pytest.fixture(scope="module")
def lock():
    return threading.Lock()
@pytest.mark.isolated
def test_locked(lock):
    pass
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*fixture 'lock' cannot cross into the test's AppDomain*", "*it is module-scoped*"]
    )


def test_function_scoped_fixture_that_cannot_cross_is_made_in_the_domain(
    pytester: pytest.Pytester,
) -> None:
    source = """
import threading
import pytest
from helpers import domain_name
@pytest.fixture
def where():
    return lambda: domain_name()
@pytest.mark.isolated
def test_made_there(where):
    assert where() == "test_made_there"
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_fixture_made_in_the_domain_gets_the_values_of_its_fixtures(
    pytester: pytest.Pytester,
) -> None:
    source = """
import pytest
@pytest.fixture
def base():
    return 20
@pytest.fixture
def adder(base, monkeypatch):
    monkeypatch.setenv("ADDED", "yes")
    return lambda n: n + base
@pytest.mark.isolated
def test_adds(adder):
    import os
    assert (adder(1), os.environ["ADDED"]) == (21, "yes")
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_generator_fixture_made_in_the_domain_is_torn_down_there(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = """
import os
import pytest
from helpers import domain_name
@pytest.fixture
def opened():
    read, write = os.pipe()
    yield lambda: os.write(write, b"x")
    os.close(write)
    os.close(read)
    with open(os.environ["TORN_DOWN"], "a") as file:  # pytest tears its own one down too
        file.write(domain_name() + "\\n")
@pytest.mark.isolated
def test_writes(opened):
    assert opened() == 1
"""
    marker = pytester.path / "torn-down"
    monkeypatch.setenv("TORN_DOWN", str(marker))
    run(pytester, source).assert_outcomes(passed=1)
    assert "test_writes" in marker.read_text().splitlines()


def test_chain_of_fixtures_that_cannot_cross_is_made_in_the_domain(
    pytester: pytest.Pytester,
) -> None:
    source = """
import threading
import pytest
@pytest.fixture
def lock():
    return threading.Lock()
@pytest.fixture
def guarded(lock):
    return (lock, [])
@pytest.mark.isolated
def test_shares_one_lock(lock, guarded):
    assert guarded[0] is lock
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_parametrized_fixture_made_in_the_domain_gets_its_param(
    pytester: pytest.Pytester,
) -> None:
    source = """
import threading
import pytest
@pytest.fixture(params=[1, lambda: 2], ids=["one", "two"])
def make(request):
    request.addfinalizer(lambda: None)
    param = request.param
    return lambda: (param, request.fixturename, threading.Lock())
@pytest.mark.isolated
def test_param(make):
    value, name, _ = make()
    assert (value if isinstance(value, int) else value(), name) in ((1, "make"), (2, "make"))
"""
    run(pytester, source).assert_outcomes(passed=2)


def test_pytest_param_does_not_load_pytest_in_the_domain(pytester: pytest.Pytester) -> None:
    source = """
import sys
import pytest
@pytest.fixture(params=[pytest.param(lambda: 1, id="one")])
def make(request):
    return request.param
@pytest.mark.isolated
@pytest.mark.parametrize("n", [pytest.param(1, id="first"), 2])
def test_param(n, make):
    assert make() == 1 and n in (1, 2)
    assert "_pytest.mark" not in sys.modules
"""
    run(pytester, source).assert_outcomes(passed=2)


def test_fixture_using_more_of_request_is_not_made_in_the_domain(
    pytester: pytest.Pytester,
) -> None:
    source = """
import threading
import pytest
@pytest.fixture
def lock(request):
    assert request.node.name
    return threading.Lock()
@pytest.mark.isolated
def test_locked(lock):
    pass
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*it asks for 'request' and uses request.node*"])


def test_fixture_value_crossing_by_name_crosses(pytester: pytest.Pytester) -> None:
    source = """
import collections
import functools
import pytest
def twice(x):
    return 2 * x
@pytest.fixture(params=[list, tuple, iter, collections.OrderedDict, twice])
def factory(request):
    return request.param
@pytest.fixture
def doubler():
    return functools.partial(twice)
@pytest.mark.isolated
def test_makes(factory, doubler):
    assert factory is not None and doubler(2) == 4
"""
    run(pytester, source).assert_outcomes(passed=5)


# -- tests --appdomain-isolate runs in the main interpreter ---------------------------------


def test_option_runs_a_test_whose_fixture_cannot_cross_unisolated(
    pytester: pytest.Pytester,
) -> None:
    source = """
import threading
import pytest
from helpers import domain_name
@pytest.fixture(scope="module")
def lock():
    return threading.Lock()
def test_locked(lock):
    assert domain_name() == "__main__.py"
def test_isolated():
    assert domain_name() == "test_isolated"
"""
    result = run(pytester, source, "--appdomain-isolate")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "appdomain: 1 test ran unisolated: test_subject.py::test_locked (fixture 'lock' "
            "holds <unlocked _thread.lock object at *>, which cannot cross, and cannot be made "
            "in the domain: it is module-scoped)"
        ]
    )


def test_option_runs_a_test_importing_a_refusing_extension_unisolated(
    pytester: pytest.Pytester,
) -> None:
    name = _refusing_extension()
    source = f"""
def test_needs_it():
    import {name}
def test_fine():
    pass
"""
    result = run(pytester, source, "--appdomain-isolate")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "appdomain: 1 test ran unisolated: test_subject.py::test_needs_it (imports "
            f"{name}, a C extension that refuses to load in a subinterpreter)"
        ]
    )


# Tests that cannot run in a domain, and the summary line naming them: (source, passed, line).
UNISOLATED = {
    "every test of a module importing a refusing extension": (
        "import {ext}\ndef test_one():\n    pass\ndef test_two():\n    pass\n",
        2,
        "appdomain: 2 tests ran unisolated: *::test_one (*; *::test_two (*",
    ),
    "a tracemalloc test": (
        "import tracemalloc\ndef test_traces():\n    tracemalloc.start()\n    tracemalloc.stop()\n",
        1,
        "appdomain: 1 test ran unisolated: *::test_traces (uses tracemalloc*",
    ),
    "a daemon thread test": (
        "import threading\ndef test_daemon():\n"
        "    thread = threading.Thread(target=print, daemon=True)\n"
        "    thread.start()\n    thread.join()\n",
        1,
        "appdomain: 1 test ran unisolated: *::test_daemon (starts a daemon*",
    ),
    "a unittest case importing a refusing extension": (
        "import unittest\nclass Case(unittest.TestCase):\n    def test_needs_it(self):\n"
        "        import {ext}\n",
        1,
        "appdomain: 1 test ran unisolated: *::Case::test_needs_it (*",
    ),
}


@pytest.mark.parametrize("case", sorted(UNISOLATED))
def test_option_runs_what_cannot_run_in_a_domain_unisolated(
    pytester: pytest.Pytester, case: str
) -> None:
    source, passed, line = UNISOLATED[case]
    result = run(pytester, source.format(ext=_refusing_extension()), "--appdomain-isolate")
    result.assert_outcomes(passed=passed)
    result.stdout.fnmatch_lines([line])


def test_option_keeps_a_failing_test_failing_unisolated(pytester: pytest.Pytester) -> None:
    name = _refusing_extension()
    source = f"""
def test_needs_it():
    import {name}
    assert False, "fails here too"
"""
    result = run(pytester, source, "--appdomain-isolate")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*AssertionError: fails here too*", "appdomain: 1 test ran unisolated*"]
    )


def test_option_runs_nothing_unisolated_without_saying_so(pytester: pytest.Pytester) -> None:
    result = run(pytester, "def test_plain():\n    pass\n", "--appdomain-isolate")
    result.assert_outcomes(passed=1)
    assert "ran unisolated" not in result.stdout.str()


def test_daemon_thread_reports_the_subinterpreter_limit(pytester: pytest.Pytester) -> None:
    source = """
import threading
import pytest
@pytest.mark.isolated
def test_daemon():
    threading.Thread(target=print, daemon=True).start()
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*subinterpreter limit*daemon threads*"])


def test_isolated_output_is_captured(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_talks():
    print("said inside")
    assert False
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured stdout call*", "said inside"])


# Tests whose domains are still being prepared (their imports allocate megabytes) when the
# first test of test_subject.py starts: tracemalloc would count all of that.
HEAVY_TESTS = """
import pytest
@pytest.mark.isolated
@pytest.mark.parametrize("n", range(3))
def test_heavy(n):
    import asyncio, decimal, email.message, http.client, xml.dom.minidom
"""


def test_tracemalloc_test_runs_with_no_domain_work_beside_it(pytester: pytest.Pytester) -> None:
    # _tracemalloc refuses subinterpreters, so such a test runs in the main process; but it
    # traces every interpreter's allocations (and on 3.13.0 tracing while another
    # interpreter runs can crash the process).
    pytester.makepyfile(test_heavy=HEAVY_TESTS)
    source = """
import tracemalloc
def test_traces():
    tracemalloc.start()
    try:
        kept = [sum(range(100)) for _ in range(20000)]
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert traced < 1024 * 1024, traced
"""
    result = run(pytester, source, "test_subject.py", "test_heavy.py")
    result.assert_outcomes(passed=4)


def test_option_runs_a_tracemalloc_test_unisolated_with_no_domain_work_beside_it(
    pytester: pytest.Pytester,
) -> None:
    # Run in the main interpreter, it traces every allocation of the process: domains the
    # next tests' would be created meanwhile (and on 3.13.0 that can deadlock the process).
    pytester.makepyfile(test_heavy=HEAVY_TESTS.replace("@pytest.mark.isolated\n", ""))
    source = """
import tracemalloc
def test_traces():
    tracemalloc.start()
    try:
        kept = [sum(range(100)) for _ in range(20000)]
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert traced < 1024 * 1024, traced
"""
    result = run(pytester, source, "--appdomain-isolate", "test_subject.py", "test_heavy.py")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["appdomain: 1 test ran unisolated: *::test_traces (uses tracemalloc*"]
    )


def test_alone_marker_keeps_domain_work_from_running_beside_it(
    pytester: pytest.Pytester,
) -> None:
    # Process CPU time outruns this thread's only while another thread of the process works.
    pytester.makepyfile(test_heavy=HEAVY_TESTS)
    source = """
import time
import pytest
@pytest.mark.isolated(alone=True)
def test_measures():
    process, thread = time.process_time(), time.thread_time()
    kept = [sum(range(100)) for _ in range(100000)]
    process, thread = time.process_time() - process, time.thread_time() - thread
    assert process < thread * 1.3 + 0.005, (process, thread)
"""
    result = run(pytester, source, "test_subject.py", "test_heavy.py")
    result.assert_outcomes(passed=4)


def test_unittest_case_runs_isolated(pytester: pytest.Pytester) -> None:
    source = """
import unittest
from appdomain import AppDomain
class Case(unittest.TestCase):
    def test_where(self):
        self.assertFalse(AppDomain.current_domain.is_default_app_domain())
"""
    run(pytester, source, "--appdomain-isolate").assert_outcomes(passed=1)


def test_unittest_class_fixtures_run_in_the_domain(pytester: pytest.Pytester) -> None:
    source = """
import unittest
from appdomain import AppDomain
class Case(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.where = AppDomain.current_domain.friendly_name
    def test_where(self):
        self.assertEqual(self.where, "test_where")
"""
    run(pytester, source, "--appdomain-isolate").assert_outcomes(passed=1)


def test_unittest_failure_shows_unittest_message(pytester: pytest.Pytester) -> None:
    source = """
import unittest
class Case(unittest.TestCase):
    def test_equal(self):
        self.assertEqual([1, 2], [1, 3])
"""
    result = run(pytester, source, "--appdomain-isolate")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: Lists differ: [[]1, 2[]] != [[]1, 3[]]*"])


def test_unittest_skip_expected_failure_and_unexpected_success(
    pytester: pytest.Pytester,
) -> None:
    source = """
import unittest
class Case(unittest.TestCase):
    @unittest.skip("not here")
    def test_skipped(self):
        pass
    @unittest.expectedFailure
    def test_expected(self):
        self.fail("as expected")
    @unittest.expectedFailure
    def test_unexpected(self):
        pass
"""
    result = run(pytester, source, "--appdomain-isolate", "-rsx")
    result.assert_outcomes(skipped=1, xfailed=1, failed=1)
    result.stdout.fnmatch_lines(["Unexpected success", "SKIPPED*not here"])
    result.stdout.no_fnmatch_line("*traceback entries are hidden*")


def test_unittest_subtests_are_reported_as_pytest_reports_them(pytester: pytest.Pytester) -> None:
    source = """
import unittest
class Case(unittest.TestCase):
    def test_numbers(self):
        for n in range(3):
            with self.subTest(n=n):
                self.assertNotEqual(n, 1)
    def test_skips(self):
        for n in range(2):
            with self.subTest("half", n=n):
                if n:
                    self.skipTest("odd")
"""
    plain = run(pytester, source).parseoutcomes()
    result = run(pytester, source, "--appdomain-isolate")
    assert result.parseoutcomes() == plain
    result.stdout.fnmatch_lines(["SUBFAILED(n=1) *::Case::test_numbers - AssertionError: 1 == 1"])


def test_isolated_tests_run_without_preparing_ahead(pytester: pytest.Pytester) -> None:
    source = """
import pytest
STATE = []
@pytest.mark.isolated
@pytest.mark.parametrize("n", range(3))
def test_fresh(n):
    STATE.append(n)
    assert STATE == [n]
"""
    run(pytester, source, "--appdomain-prepare-ahead=0").assert_outcomes(passed=3)


def test_failed_assert_shows_the_explanation(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_numbers():
    assert 1 == 2
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([">*assert 1 == 2", "E*assert 1 == 2"])


def test_failed_assert_on_a_call_shows_its_value(pytester: pytest.Pytester) -> None:
    source = """
import pytest
def total():
    return 3
@pytest.mark.isolated
def test_sum():
    assert total() == 4
"""
    result = run(pytester, source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E*assert 3 == 4", "E*+  where 3 = total()"])


def test_passing_isolated_test_loads_nothing_of_pytest(pytester: pytest.Pytester) -> None:
    source = """
import sys
import pytest
@pytest.fixture
def three():
    return 3
@pytest.mark.isolated
@pytest.mark.parametrize("n", [1])
def test_light(n, three):
    assert [name for name in sys.modules if name.split(".")[0] == "_pytest"] == []
"""
    run(pytester, source).assert_outcomes(passed=1)


def test_isolated_test_can_use_the_rest_of_pytest(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
@pytest.mark.parametrize("x", [pytest.param(0.1, id="tenth")])
def test_close(x):
    assert x * 3 == pytest.approx(0.3)
    with pytest.warns(UserWarning):
        __import__("warnings").warn("careful")
"""
    result = run(pytester, source, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_close?tenth? PASSED*"])


def test_edited_module_is_imported_anew(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without pyc files the domains share the code they compiled; an edit must show.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    pytester.makepyfile(edited="VALUE = 1\n")
    source = """
import pathlib
import pytest
@pytest.mark.isolated
def test_before():
    import edited
    assert edited.VALUE == 1
def test_edit():
    pathlib.Path(__file__).with_name("edited.py").write_text("VALUE = 22\\n")
@pytest.mark.isolated
def test_after():
    import edited
    assert edited.VALUE == 22
"""
    # Prepared at its turn, test_after's domain gets the code test_before's compiled.
    run(pytester, source, "--appdomain-prepare-ahead=0").assert_outcomes(passed=3)


def test_thread_left_running_is_stopped_at_unload(pytester: pytest.Pytester) -> None:
    source = """
import helpers
import pytest
@pytest.mark.isolated
def test_spins():
    helpers.start_spinning_thread()
"""
    run(pytester, source).assert_outcomes(passed=1)


@pytest.mark.usefixtures("fifo")
def test_domain_that_cannot_unload_fails_the_isolated_test(pytester: pytest.Pytester) -> None:
    # As for the fixture: the thread sits in one C call past the unload timeout.
    source = """
import helpers
import pytest
from appdomain import AppDomain
if AppDomain.current_domain.is_default_app_domain():
    helpers.release_blocked_thread_at_exit()
@pytest.mark.isolated
def test_stuck():
    helpers.start_blocked_thread()
"""
    result = run(pytester, source, "--appdomain-unload-timeout=0.2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*could not be unloaded within 0.2 s*"])


def test_failed_assert_without_rewriting_fails_plainly(pytester: pytest.Pytester) -> None:
    source = """
import pytest
@pytest.mark.isolated
def test_numbers():
    assert 1 == 2
"""
    result = run(pytester, source, "--assert=plain")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E*AssertionError"])
    result.stdout.no_fnmatch_line("E*assert 1 == 2")
