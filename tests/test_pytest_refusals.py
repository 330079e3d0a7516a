"""What a test isolated by --appdomain-isolate learns from another test's refused import."""

from __future__ import annotations

import pytest
from test_pytest_plugin import _refusing_extension, run

pytest_plugins = ["pytester"]

# Each run of the test body (in a domain, then again in the main interpreter) logs its param.
NAMED = """
import pytest
@pytest.mark.parametrize("which", ["{stem}", "{stem}_again", "{stem}.more"])
def test_needs_it(which):
    with open("attempts.log", "a") as log:
        log.write(which + "\\n")
    import {name}
"""


def test_later_tests_naming_a_refused_module_skip_the_domain(pytester: pytest.Pytester) -> None:
    name = _refusing_extension()
    stem = name.lstrip("_")
    result = run(pytester, NAMED.format(name=name, stem=stem), "--appdomain-isolate")
    result.assert_outcomes(passed=3)
    attempts = (pytester.path / "attempts.log").read_text().split()
    assert attempts == [stem, stem, f"{stem}_again", f"{stem}.more"]


def test_summary_says_which_test_taught_the_refusal(pytester: pytest.Pytester) -> None:
    name = _refusing_extension()
    stem = name.lstrip("_")
    result = run(pytester, NAMED.format(name=name, stem=stem), "--appdomain-isolate")
    result.stdout.fnmatch_lines(
        [
            f"appdomain: 3 tests ran unisolated: *::test_needs_it[[]{stem}_again[]] "
            f"(imports {name}, a C extension that refuses to load in a subinterpreter, "
            f"as test_needs_it[[]{stem}[]] did)*"
        ]
    )


def test_later_tests_not_naming_it_still_run_isolated(pytester: pytest.Pytester) -> None:
    name = _refusing_extension()
    stem = name.lstrip("_")
    source = f"""
import pytest
@pytest.mark.parametrize("which", ["{stem}", "other"])
def test_maybe(which):
    if which == "{stem}":
        import {name}
"""
    result = run(pytester, source, "--appdomain-isolate")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"appdomain: 1 test ran unisolated: *::test_maybe[[]{stem}[]] *"])


def test_a_marked_test_naming_a_refused_module_still_fails_saying_why(
    pytester: pytest.Pytester,
) -> None:
    name = _refusing_extension()
    stem = name.lstrip("_")
    source = f"""
import pytest
@pytest.mark.isolated
@pytest.mark.parametrize("which", ["{stem}", "{stem}_again"])
def test_needs_it(which):
    import {name}
"""
    result = run(pytester, source, "--appdomain-isolate")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*subinterpreter limit*C extension refuses to load*"])
