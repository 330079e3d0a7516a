"""An isolated test's interpreter is served the modules earlier tests' module imports loaded."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from test_domain_preload import module_record
from test_pytest_plugin import run

from appdomain._domains import _preload
from appdomain._testing import _light, _loaders
from appdomain._testing._light import LightDomain

pytest_plugins = ["pytester"]

# colorsys: a small stdlib module nothing of pytest's or appdomain's imports.
SERVED = """
import colorsys
import pytest

def loader_of(name):
    return type(sys.modules[name].__loader__).__name__

import sys

def test_first():
    pass

def test_second():
    # Its interpreter was made after test_first's told the main process what it imported.
    assert loader_of("colorsys") == "CodeLoader"
    import json  # imported by no test module: found by the import system
    assert loader_of("json") != "CodeLoader"
"""


def test_the_next_tests_interpreter_is_served_the_test_modules_imports(
    pytester: pytest.Pytester,
) -> None:
    # One interpreter prepared ahead: the second is made once the first is ready.
    result = run(pytester, SERVED, "--appdomain-isolate", "--appdomain-prepare-ahead=1")
    result.assert_outcomes(passed=2)


LATER = """
import sys

def test_imports_later():
    import colorsys  # another test module's import: served only while that one imports
    assert type(sys.modules["colorsys"].__loader__).__name__ != "CodeLoader"
"""


def test_modules_a_test_function_imports_are_not_served(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="import colorsys\ndef test_a():\n    pass\n")
    result = run(pytester, LATER, "--appdomain-isolate", "--appdomain-prepare-ahead=1")
    result.assert_outcomes(passed=2)


@pytest.fixture
def learned_colorsys(monkeypatch: pytest.MonkeyPatch) -> Iterator[LightDomain]:
    """A test's interpreter made after colorsys was learned (undone afterwards)."""
    import colorsys  # noqa: F401  (this process loaded it: its file is the one read)

    monkeypatch.setattr(_light, "_learned", _light._learned)
    monkeypatch.setattr(_light, "_learned_from", set(_light._learned_from))
    _light.learn_imports("test_module_for_learning", ("colorsys",))
    light = LightDomain("LearnedInterpreter")
    yield light
    light.unload_domain(timeout=30)


def colorsys_record() -> tuple[tuple[object, ...], str]:
    import colorsys

    return module_record("colorsys"), type(colorsys.__loader__).__name__


def colorsys_after_path_change() -> str:
    sys.path.insert(0, sys.path[0])  # finds the same file, but the path is not the one checked
    import colorsys

    return type(colorsys.__loader__).__name__


def test_a_learned_module_is_served_from_the_file_this_process_loaded(
    learned_colorsys: LightDomain,
) -> None:
    domain = learned_colorsys.domain()
    assert domain.do_callback(colorsys_record) == (module_record("colorsys"), "CodeLoader")


def test_a_learned_module_is_not_served_once_sys_path_changed(
    learned_colorsys: LightDomain,
) -> None:
    domain = learned_colorsys.domain()
    assert domain.do_callback(colorsys_after_path_change) == "SourceFileLoader"


def test_the_learning_knows_which_test_modules_were_named(
    learned_colorsys: LightDomain,
) -> None:
    assert _light.knows_imports("test_module_for_learning")
    assert not _light.knows_imports("test_module_never_prepared")


def test_the_domains_side_names_the_preload_module() -> None:
    assert _loaders._PRELOAD == _preload.__name__


REMADE_PLAIN = """
import sys
import threading
import pytest
@pytest.fixture
def size():
    return 3
@pytest.fixture
def guarded(size):
    return (threading.Lock(), size)  # a lock cannot cross: made again in the domain
@pytest.mark.isolated
def test_made_there(guarded):
    assert guarded[1] == 3
    assert "appdomain.marshal" not in sys.modules  # its plan crossed packed with the spec
"""


def test_a_fixture_made_in_the_domain_from_builtin_values_needs_no_appdomain_marshal(
    pytester: pytest.Pytester,
) -> None:
    run(pytester, REMADE_PLAIN).assert_outcomes(passed=1)


WARNS_CASES = """
import sys
import warnings
import pytest
@pytest.mark.isolated
def test_warns():
    with pytest.warns(UserWarning, match="^old") as record:
        warnings.warn("old thing", UserWarning)
    assert len(record) == 1 and str(record[0].message) == "old thing"
    with pytest.deprecated_call():
        warnings.warn("gone", DeprecationWarning)
    assert "_pytest.fixtures" not in sys.modules  # pytest's own, without most of pytest
@pytest.mark.isolated
def test_did_not_warn():
    with pytest.warns(UserWarning):
        pass
@pytest.mark.isolated
def test_then_real_pytest():
    with pytest.warns(UserWarning):
        warnings.warn("w", UserWarning)
    assert pytest.approx(0.1 + 0.2) == 0.3 and "_pytest.fixtures" in sys.modules
"""


def test_warns_in_the_domain_is_pytests_own(pytester: pytest.Pytester) -> None:
    result = run(pytester, WARNS_CASES)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_did_not_warn - Failed: DID NOT WARN*"])
