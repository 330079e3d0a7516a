"""Modules ("assemblies") of a domain: get_assemblies, load, and the import and raise events."""

from __future__ import annotations

import sys
from pathlib import Path

import plugin_helpers
import pytest

import appdomain
from appdomain import AppDomain, AppDomainError, AssemblyInfo

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")


def test_get_assemblies_lists_the_domains_own_modules(domain: AppDomain) -> None:
    domain.load("plugin_helpers")
    here = {info.name for info in AppDomain.current_domain.get_assemblies()}
    there = {info.name: info for info in domain.get_assemblies()}
    assert "plugin_helpers" in there
    assert there["plugin_helpers"].file == str(Path(__file__).with_name("plugin_helpers.py"))
    assert "sys" in there and there["sys"].file is None  # built in: no file
    assert "pytest" in here and "pytest" not in there  # each domain has its own modules


def test_assembly_version_comes_from_the_distributions_metadata(domain: AppDomain) -> None:
    from importlib import metadata

    import msgpack  # type: ignore[import-untyped]

    info = domain.load("msgpack")
    assert info == AssemblyInfo("msgpack", msgpack.__file__, metadata.version("msgpack"))
    assert domain.load("plugin_helpers").version is None  # a test module: no distribution


def test_load_imports_in_the_domain_only(domain: AppDomain) -> None:
    sys.modules.pop("json.tool", None)
    info = domain.load("json.tool")
    assert info.name == "json.tool" and info.file is not None and info.file.endswith("tool.py")
    assert "json.tool" not in sys.modules
    assert "json.tool" in {i.name for i in domain.get_assemblies()}


def test_load_of_a_missing_module_raises_module_not_found(domain: AppDomain) -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        domain.load("no_such_module_here")


@pytest.mark.parametrize("bad", ["", 3, None])
def test_load_rejects_a_name_that_is_no_str(domain: AppDomain, bad: object) -> None:
    with pytest.raises(TypeError, match="'module_name' must be a non-empty str"):
        domain.load(bad)  # type: ignore[arg-type]


def test_net_names_are_aliases() -> None:
    assert AppDomain.GetAssemblies is AppDomain.get_assemblies
    assert AppDomain.Load is AppDomain.load
    assert AssemblyInfo("m", "/m.py", "1.0").FullName == "m, Version=1.0"


def test_assembly_load_reports_each_module_imported_from_a_file(
    domain: AppDomain, tmp_path: Path
) -> None:
    (tmp_path / "fresh_module_a.py").write_text("import fresh_module_b\n")
    (tmp_path / "fresh_module_b.py").write_text("X = 1\n")
    domain.do_callback(plugin_helpers.add_path, str(tmp_path))
    domain.do_callback(plugin_helpers.watch_loads)
    domain.load("fresh_module_a")
    seen = [s for s in domain.do_callback(plugin_helpers.loads_seen) if s[0].startswith("fresh")]
    assert seen == [
        ("fresh_module_b", str(tmp_path / "fresh_module_b.py")),
        ("fresh_module_a", str(tmp_path / "fresh_module_a.py")),
    ]
    # The imported modules keep their real loader.
    assert domain.do_callback(plugin_helpers.loader_is_plain, "fresh_module_a")


def test_assembly_load_stops_with_its_last_handler(domain: AppDomain, tmp_path: Path) -> None:
    (tmp_path / "fresh_module_c.py").write_text("")
    domain.do_callback(plugin_helpers.add_path, str(tmp_path))
    domain.do_callback(plugin_helpers.watch_loads)
    domain.do_callback(plugin_helpers.stop_watching_loads)
    domain.load("fresh_module_c")
    assert domain.do_callback(plugin_helpers.loads_seen) == []
    finders = domain.do_callback(meta_path_names)
    assert "_LoadWatcher" not in finders


def test_events_subscribe_only_from_inside_their_domain(domain: AppDomain) -> None:
    with pytest.raises(AppDomainError, match="subscribe to assembly_load from inside"):
        domain.assembly_load += print
    with pytest.raises(AppDomainError, match="subscribe to first_chance_exception from inside"):
        domain.FirstChanceException += print


def test_assembly_resolve_answers_a_failed_import_with_a_folder(
    domain: AppDomain, tmp_path: Path
) -> None:
    (tmp_path / "resolvable_x.py").write_text("WHO = 'resolved from a folder'\n")
    domain.do_callback(plugin_helpers.answer_resolves_with, str(tmp_path))
    assert domain.do_callback(plugin_helpers.try_import, "resolvable_x") == "resolved from a folder"
    assert "resolvable_x" in domain.do_callback(plugin_helpers.resolves_asked)


def test_assembly_resolve_answers_with_a_file(domain: AppDomain, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text("WHO = 'resolved from a file'\n")
    domain.do_callback(plugin_helpers.answer_resolves_with, str(tmp_path / "elsewhere.py"))
    assert domain.do_callback(plugin_helpers.try_import, "resolvable_y") == "resolved from a file"


def test_assembly_resolve_is_not_asked_for_modules_that_exist(domain: AppDomain) -> None:
    domain.do_callback(plugin_helpers.answer_resolves_with, "/nowhere")
    domain.load("json.decoder")
    asked = domain.do_callback(plugin_helpers.resolves_asked)
    assert "json" not in asked and "json.decoder" not in asked


def test_assembly_resolve_answer_that_holds_no_module_says_where_it_looked(
    domain: AppDomain, tmp_path: Path
) -> None:
    domain.do_callback(plugin_helpers.answer_resolves_with, str(tmp_path))
    said = domain.do_callback(plugin_helpers.try_import, "resolvable_z")
    assert said.startswith("ImportError: an assembly_resolve handler answered")
    assert "resolvable_z.py" in said


def test_unanswered_import_still_fails_as_usual(domain: AppDomain) -> None:
    domain.do_callback(plugin_helpers.answer_resolves_with, "/nowhere")
    said = domain.do_callback(plugin_helpers.try_import, "not_resolvable_q")
    assert said == "ModuleNotFoundError: No module named 'not_resolvable_q'"


def test_first_chance_exception_fires_once_per_raise(domain: AppDomain) -> None:
    domain.do_callback(plugin_helpers.watch_first_chances)
    assert domain.do_callback(plugin_helpers.raise_and_catch) == [
        "KeyError: 'deep'",
        "ValueError: invalid literal for int() with base 10: 'not a number'",
        "RuntimeError: plain",
    ]


def test_first_chance_exception_is_off_without_handlers(domain: AppDomain) -> None:
    domain.do_callback(plugin_helpers.watch_first_chances)
    domain.do_callback(plugin_helpers.stop_watching_first_chances)
    assert domain.do_callback(plugin_helpers.raise_and_catch) == []
    assert domain.do_callback(monitoring_tools) == [None, None]


def test_first_chance_exception_is_per_domain(domain_factory) -> None:  # type: ignore[no-untyped-def]
    watched, other = domain_factory(), domain_factory()
    watched.do_callback(plugin_helpers.watch_first_chances)
    assert other.do_callback(plugin_helpers.raise_and_catch) == []
    assert len(watched.do_callback(plugin_helpers.raise_and_catch)) == 3


def test_event_args_are_public() -> None:
    assert appdomain.ResolveEventArgs("m", None).Name == "m"
    error = KeyError("k")
    assert appdomain.FirstChanceExceptionEventArgs(error).Exception is error


def meta_path_names() -> list[str]:
    return [type(finder).__name__ for finder in sys.meta_path]


def monitoring_tools() -> list[str | None]:
    return [sys.monitoring.get_tool(3), sys.monitoring.get_tool(4)]
