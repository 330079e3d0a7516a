"""A new domain does site's work itself: .pth import lines run, editable finders deferred."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from appdomain import AppDomain, AppDomainSetup
from appdomain._domains import _site

EDITABLE_LINE = "import __editable___demo_0_1_finder; __editable___demo_0_1_finder.install()\n"


def finder_module(mapping: dict[str, str], namespaces: dict[str, list[str]]) -> str:
    """The lines of setuptools' finder module that _site reads (the rest does not matter)."""
    return (
        "import sys\nfrom pathlib import Path\n\n"
        f"MAPPING: dict[str, str] = {mapping!r}\n"
        f"NAMESPACES: dict[str, list[str]] = {namespaces!r}\n"
        "def install():\n    raise AssertionError('the finder module was imported')\n"
    )


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    """A site directory with one editable package, as setuptools' default mode lays it out."""
    package = tmp_path / "src" / "demo_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 'from the editable package'\n")
    (package / "part.py").write_text("VALUE = 'a submodule'\n")
    site = tmp_path / "site-packages"
    site.mkdir()
    mapping = {"demo_pkg": str(package)}
    (site / "__editable___demo_0_1_finder.py").write_text(finder_module(mapping, {}))
    (site / "__editable__.demo-0.1.pth").write_text(EDITABLE_LINE)
    (site / "other.pth").write_text("# a comment\n/some/path\nimport sys; sys.probe = 1\n")
    return site


def test_plan_defers_editable_finders_and_keeps_other_import_lines(site_dir: Path) -> None:
    lines, finders = _site._read_plan([str(site_dir)])
    assert lines == ("import sys; sys.probe = 1",)
    assert finders == ((("demo_pkg", str(site_dir.parent / "src" / "demo_pkg")),),)


def test_plan_runs_a_finder_with_namespace_packages_as_it_is(site_dir: Path) -> None:
    (site_dir / "__editable___demo_0_1_finder.py").write_text(
        finder_module({"demo_pkg": "/x"}, {"ns": ["/y"]})
    )
    lines, finders = _site._read_plan([str(site_dir)])
    assert lines == (EDITABLE_LINE.strip(), "import sys; sys.probe = 1")
    assert finders == ()


def run_site(plan: _site.SitePlan, name: str) -> tuple[object, ...]:
    """Inside a domain: do site's work with plan, then import name and report."""
    import builtins
    import importlib

    exec(_site.SOURCE, {"site_plan": plan})
    module = importlib.import_module(name)
    part = importlib.import_module(name + ".part")
    return (
        module.VALUE,
        part.VALUE,
        getattr(sys, "probe", None),
        "__editable___demo_0_1_finder" in sys.modules,
        callable(getattr(builtins, "exit", None)),
    )


def test_domain_imports_a_deferred_editable_package_without_its_finder_module(
    site_dir: Path, domain: AppDomain
) -> None:
    plan = _site._read_plan([str(site_dir)])
    assert domain.do_callback(run_site, plan, "demo_pkg") == (
        "from the editable package",
        "a submodule",
        1,  # the other .pth file's import line ran
        False,  # the finder module itself was never imported
        True,  # site's builtins are there
    )


def site_report() -> tuple[bool, bool, list[str]]:
    """Inside a domain: site's builtins, and the import path."""
    import builtins

    return callable(getattr(builtins, "quit", None)), callable(builtins.help), sys.path


def test_new_domain_has_sites_builtins_and_this_process_path(domain: AppDomain) -> None:
    has_quit, has_help, path = domain.do_callback(site_report)
    assert (has_quit, has_help) == (True, True)
    assert [p for p in sys.path if "site-packages" in p] == [
        p for p in path if "site-packages" in p
    ]


def customized() -> object:
    """Inside a domain: what its sitecustomize left, if one ran."""
    return getattr(sys, "customized_by", None)


def test_a_sitecustomize_on_the_domains_path_runs_there(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.customized_by = __file__\n")
    setup = AppDomainSetup(application_base=str(tmp_path))
    with AppDomain.create_domain("Customized", setup) as customized_domain:
        assert customized_domain.do_callback(customized) == str(tmp_path / "sitecustomize.py")
    with AppDomain.create_domain("Plain") as plain:
        assert plain.do_callback(customized) is None


def test_domain_creation_leaves_this_interpreters_site_setting_alone(domain: AppDomain) -> None:
    native = pytest.importorskip("appdomain._native._ext")
    assert native.set_site_import(True) in (True, None)  # None: a CPython it does not touch
