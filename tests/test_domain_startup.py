"""AppDomainSetup's startup: the initializer run first in a new domain, and shadow copy."""

from __future__ import annotations

import _interpreters
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import plugin_helpers
import pytest

from appdomain import AppDomain, AppDomainError, AppDomainSetup

pytestmark = pytest.mark.usefixtures("route")

Factory = Callable[..., AppDomain]


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """A code folder with two modules."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "shadowed_mod.py").write_text("VALUE = 1\n")
    (folder / "later_mod.py").write_text("VALUE = 'later'\n")
    return folder


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def shadow_setup(folder: Path, cache: Path, **more: object) -> AppDomainSetup:
    return AppDomainSetup(
        application_base=str(folder), shadow_copy_files=True, cache_path=str(cache), **more
    )


# -- initializer ----------------------------------------------------------------------------


def test_initializer_runs_first_with_its_arguments(domain_factory: Factory) -> None:
    setup = AppDomainSetup(
        initializer=plugin_helpers.initialize, initializer_arguments=[1, "two", {"k": 3}]
    )
    domain = domain_factory(setup=setup)
    assert domain.do_callback(plugin_helpers.initialization) == [1, "two", {"k": 3}]


def test_initializer_that_raises_means_no_domain(domain_factory: Factory) -> None:
    before = len(_interpreters.list_all())
    setup = AppDomainSetup(
        initializer=plugin_helpers.failing_initializer, initializer_arguments=["no thanks"]
    )
    with pytest.raises(AppDomainError) as raised:
        domain_factory("Refused", setup)
    message = str(raised.value)
    assert message.startswith(
        "domain 'Refused' was not created: its initializer plugin_helpers.failing_initializer "
        "raised ValueError: initializer refused: no thanks"
    )
    assert 'plugin_helpers.py", line' in message  # the remote traceback
    assert isinstance(raised.value.__cause__, ValueError)
    assert len(_interpreters.list_all()) == before


def test_initializer_must_be_importable() -> None:
    before = len(_interpreters.list_all())
    setup = AppDomainSetup(initializer=lambda: None)
    with pytest.raises(TypeError, match="'initializer' must be a function importable"):
        AppDomain.create_domain("Never", setup)
    assert len(_interpreters.list_all()) == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("initializer", 3, "'initializer' must be an importable function or None"),
        ("initializer_arguments", "abc", "'initializer_arguments' must be a list or tuple"),
        ("shadow_copy_files", "yes", "'shadow_copy_files' must be bool"),
        ("cache_path", 3, "'cache_path' must be str or os.PathLike or None"),
        ("shadow_copy_directories", 3, "'shadow_copy_directories' must be a list of paths"),
    ],
)
def test_setup_rejects_bad_fields(field: str, value: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        AppDomainSetup(**{field: value})  # type: ignore[arg-type]


def test_net_names_read_the_fields(plugins: Path, cache: Path) -> None:
    setup = shadow_setup(plugins, cache, initializer=plugin_helpers.initialize)
    assert setup.ShadowCopyFiles == "true" and setup.CachePath == str(cache)
    assert setup.AppDomainInitializer is plugin_helpers.initialize
    assert "shadow_copy_files=True" in repr(setup)
    assert setup == shadow_setup(plugins, cache, initializer=plugin_helpers.initialize)


# -- shadow copy ----------------------------------------------------------------------------


def test_shadowed_domain_imports_copies_from_the_cache(
    domain_factory: Factory, plugins: Path, cache: Path
) -> None:
    domain = domain_factory(setup=shadow_setup(plugins, cache))
    there = domain.do_callback(plugin_helpers.module_file, "shadowed_mod")
    assert there.startswith(str(cache) + os.sep)
    assert there.endswith("shadowed_mod.py")


def test_originals_can_change_while_the_domain_runs(
    domain_factory: Factory, plugins: Path, cache: Path
) -> None:
    old = domain_factory(setup=shadow_setup(plugins, cache))
    (plugins / "shadowed_mod.py").write_text("VALUE = 2\n")
    (plugins / "later_mod.py").unlink()
    new = domain_factory(setup=shadow_setup(plugins, cache))
    assert old.do_callback(plugin_helpers.module_value, "shadowed_mod", "VALUE") == 1
    assert old.do_callback(plugin_helpers.module_value, "later_mod", "VALUE") == "later"
    assert new.do_callback(plugin_helpers.module_value, "shadowed_mod", "VALUE") == 2


def test_copies_are_removed_when_the_domain_unloads(plugins: Path, cache: Path) -> None:
    domain = AppDomain.create_domain("Shadowed", shadow_setup(plugins, cache))
    assert len(list(cache.iterdir())) == 1
    AppDomain.unload(domain)
    assert list(cache.iterdir()) == []


def test_copies_go_to_the_temporary_folder_without_a_cache_path(
    domain_factory: Factory, plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    setup = AppDomainSetup(application_base=str(plugins), shadow_copy_files=True)
    domain = domain_factory(setup=setup)
    assert domain.do_callback(plugin_helpers.module_file, "shadowed_mod").startswith(str(temp))
    AppDomain.unload(domain)
    assert list(temp.iterdir()) == []


def test_only_the_named_directories_are_shadowed(
    domain_factory: Factory, plugins: Path, cache: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "plain_mod.py").write_text("")
    setup = AppDomainSetup(
        application_base=str(plugins),
        private_bin_path=[str(other)],
        shadow_copy_files=True,
        shadow_copy_directories=[str(other)],
        cache_path=str(cache),
    )
    domain = domain_factory(setup=setup)
    assert domain.do_callback(plugin_helpers.module_file, "plain_mod").startswith(str(cache))
    assert domain.do_callback(plugin_helpers.module_file, "shadowed_mod") == str(
        plugins / "shadowed_mod.py"
    )


def test_a_missing_shadow_folder_is_an_error_that_leaves_nothing(
    plugins: Path, cache: Path, tmp_path: Path
) -> None:
    before = len(_interpreters.list_all())
    setup = AppDomainSetup(
        application_base=str(plugins),
        shadow_copy_files=True,
        shadow_copy_directories=[str(plugins), str(tmp_path / "missing")],
        cache_path=str(cache),
    )
    with pytest.raises(FileNotFoundError, match=r"the folder .*missing' does not exist"):
        AppDomain.create_domain("NoFolder", setup)
    assert not cache.exists() or list(cache.iterdir()) == []
    assert len(_interpreters.list_all()) == before


def test_a_failing_initializer_leaves_no_copies(plugins: Path, cache: Path) -> None:
    setup = shadow_setup(
        plugins, cache, initializer=plugin_helpers.failing_initializer, initializer_arguments=["x"]
    )
    with pytest.raises(AppDomainError, match="was not created"):
        AppDomain.create_domain("Refused", setup)
    assert list(cache.iterdir()) == []


def test_shadow_copy_needs_folders() -> None:
    with pytest.raises(ValueError, match="shadow_copy_files=True needs folders to copy"):
        AppDomainSetup(shadow_copy_files=True)


def test_a_domain_creates_a_shadowed_initialized_domain(
    domain: AppDomain, plugins: Path, cache: Path
) -> None:
    initialized, file = domain.do_callback(
        plugin_helpers.create_with_initializer, str(plugins), str(cache)
    )
    assert initialized == ["nested", 2]
    assert file.startswith(str(cache))
    assert list(cache.iterdir()) == []
