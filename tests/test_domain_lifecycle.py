"""Creating, identifying, configuring and using real AppDomains (issue 2)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import domain_helpers as helpers
import plain_helpers
import pytest

from appdomain import (
    AppDomain,
    AppDomainError,
    AppDomainSetup,
    AppDomainUnloadedException,
    Channel,
)

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")

Factory = Callable[..., AppDomain]


# -- identity ------------------------------------------------------------------------------


def test_default_domain_identity() -> None:
    here = AppDomain.current_domain
    assert here.id == 1
    assert here.is_default_app_domain() is True
    assert isinstance(here.friendly_name, str) and here.friendly_name


def test_current_domain_inside_a_domain(domain_factory: Factory) -> None:
    d = domain_factory("Inside")
    assert d.do_callback(helpers.whoami) == (d.id, "Inside", False)


def test_created_domain_handle_identity(domain_factory: Factory) -> None:
    d = domain_factory("Handle")
    assert d.friendly_name == "Handle"
    assert d.id > 1
    assert d.is_default_app_domain() is False


def test_domain_runs_in_its_own_interpreter(domain: AppDomain) -> None:
    assert domain.do_callback(helpers.interp_id) != helpers.interp_id()


def test_ids_are_never_reused() -> None:
    seen: set[int] = set()
    for i in range(5):
        d = AppDomain.create_domain(f"Ids{i}")
        assert d.id not in seen
        seen.add(d.id)
        AppDomain.unload(d)
    with AppDomain.create_domain("IdsLast") as last:
        assert last.id not in seen
        assert last.id > max(seen)


# -- isolation ----------------------------------------------------------------------------


def test_module_global_is_per_domain(domain_factory: Factory) -> None:
    a = domain_factory("IsoA")
    b = domain_factory("IsoB")
    helpers.set_global(0)
    a.do_callback(helpers.set_global, 41)
    b.do_callback(helpers.set_global, 42)
    assert a.do_callback(helpers.get_global) == 41
    assert b.do_callback(helpers.get_global) == 42
    assert helpers.get_global() == 0


def test_global_set_in_default_domain_not_seen_in_domain(domain: AppDomain) -> None:
    helpers.set_global(7)
    try:
        assert domain.do_callback(helpers.get_global) == 0
    finally:
        helpers.set_global(0)


def test_sys_modules_are_per_domain(domain: AppDomain) -> None:
    import colorsys  # noqa: F401 - a stdlib module nothing else imports

    assert "colorsys" in sys.modules
    assert domain.do_callback(helpers.module_loaded, "colorsys") is False


# -- AppDomainSetup -----------------------------------------------------------------------


def _write_module(folder: Path, name: str, answer: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(f"def answer():\n    return {answer!r}\n")


def test_application_base_module_imports_in_domain(tmp_path: Path, domain_factory: Factory) -> None:
    _write_module(tmp_path, "only_in_base_mod", "from base")
    d = domain_factory("Based", AppDomainSetup(application_base=str(tmp_path)))
    assert d.do_callback(helpers.import_and_call, "only_in_base_mod", "answer") == "from base"


def test_private_bin_path_module_imports_in_domain(tmp_path: Path, domain_factory: Factory) -> None:
    _write_module(tmp_path / "lib", "only_in_lib_mod", "from lib")
    setup = AppDomainSetup(application_base=str(tmp_path), private_bin_path=["lib"])
    d = domain_factory("Binned", setup)
    assert d.do_callback(helpers.import_and_call, "only_in_lib_mod", "answer") == "from lib"


def test_setup_folders_lead_the_domain_sys_path(tmp_path: Path, domain_factory: Factory) -> None:
    setup = AppDomainSetup(application_base=str(tmp_path), private_bin_path=["lib", "ext"])
    d = domain_factory("PathShape", setup)
    path = d.do_callback(helpers.sys_path)
    assert path[:3] == [str(tmp_path), str(tmp_path / "lib"), str(tmp_path / "ext")]


def test_setup_module_not_importable_in_default_domain(tmp_path: Path) -> None:
    _write_module(tmp_path / "lib", "only_in_lib_mod2", "x")
    with pytest.raises(ImportError):
        __import__("only_in_lib_mod2")


def test_domain_without_setup_inherits_sys_path(domain: AppDomain) -> None:
    assert helpers.__file__ is not None
    tests_dir = str(Path(helpers.__file__).parent)
    assert tests_dir in domain.do_callback(helpers.sys_path)


def test_private_bin_path_semicolon_string() -> None:
    setup = AppDomainSetup(application_base="/base", private_bin_path="a;b")
    assert setup.private_bin_path == ["a", "b"]
    assert setup.PrivateBinPath == "a;b"


# -- data and callbacks -------------------------------------------------------------------


def test_set_data_get_data_round_trip(domain: AppDomain) -> None:
    domain.set_data("config", {"name": "x", "items": [1, 2, 3]})
    assert domain.get_data("config") == {"name": "x", "items": [1, 2, 3]}


def test_set_data_stores_a_copy(domain: AppDomain) -> None:
    value = [1, 2]
    domain.set_data("list", value)
    value.append(3)
    got = domain.get_data("list")
    assert got == [1, 2]
    got.append(99)
    assert domain.get_data("list") == [1, 2]


def test_get_data_missing_key_is_none(domain: AppDomain) -> None:
    assert domain.get_data("never-set") is None


def test_get_data_missing_key_gives_the_default(domain: AppDomain) -> None:
    assert domain.get_data("never-set", 7) == 7


def test_get_data_stored_none_is_not_replaced_by_the_default(domain: AppDomain) -> None:
    domain.set_data("nothing", None)
    assert domain.get_data("nothing", 7) is None


def test_data_is_per_domain(domain_factory: Factory) -> None:
    a = domain_factory("DataA")
    b = domain_factory("DataB")
    a.set_data("k", "a")
    assert b.get_data("k") is None


def test_data_readable_from_inside_the_domain(domain: AppDomain) -> None:
    domain.set_data("greeting", "hello")
    assert domain.do_callback(helpers.own_data, "greeting") == "hello"


def test_do_callback_runs_inside_and_returns_result(domain: AppDomain) -> None:
    assert domain.do_callback(helpers.add, 2, 3) == 5


def test_do_callback_kwargs(domain: AppDomain) -> None:
    assert domain.do_callback(helpers.add, a=1, b=10) == 11


def test_do_callback_reraises_callee_exception(domain: AppDomain) -> None:
    with pytest.raises(TypeError):
        domain.do_callback(helpers.add, 1, "x")


# -- execute_assembly ---------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """\
    import sys
    from appdomain import AppDomain
    here = AppDomain.current_domain
    here.set_data("ran", [__name__, sys.argv[1:], here.id])
    if "--fail" in sys.argv:
        sys.exit(3)
    """
)


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "tool.py"
    path.write_text(SCRIPT)
    return path


def test_execute_assembly_returns_zero(tmp_path: Path, domain: AppDomain) -> None:
    assert domain.execute_assembly(str(_script(tmp_path)), ["a", "b"]) == 0


def test_execute_assembly_runs_as_main_with_own_argv(tmp_path: Path, domain: AppDomain) -> None:
    argv_before = list(sys.argv)
    domain.execute_assembly(_script(tmp_path), ["--flag", "x"])
    assert domain.get_data("ran") == ["__main__", ["--flag", "x"], domain.id]
    assert sys.argv == argv_before


def test_execute_assembly_returns_sys_exit_code(tmp_path: Path, domain: AppDomain) -> None:
    assert domain.execute_assembly(str(_script(tmp_path)), ["--fail"]) == 3


def test_execute_assembly_twice_in_same_domain(tmp_path: Path, domain: AppDomain) -> None:
    script = str(_script(tmp_path))
    assert domain.execute_assembly(script, ["--fail"]) == 3
    assert domain.execute_assembly(script, []) == 0


# -- context manager ----------------------------------------------------------------------


def test_context_manager_unloads_on_exit() -> None:
    with AppDomain.create_domain("Scratch") as d:
        assert d.do_callback(helpers.add, 1, 1) == 2
    with pytest.raises(AppDomainUnloadedException):
        d.do_callback(helpers.noop)


def test_context_manager_unloads_on_error() -> None:
    with pytest.raises(KeyError), AppDomain.create_domain("ScratchErr") as d:
        raise KeyError("x")
    with pytest.raises(AppDomainUnloadedException):
        d.get_data("x")


def test_context_manager_tolerates_unload_inside() -> None:
    with AppDomain.create_domain("ScratchTwice") as d:
        AppDomain.unload(d)
    with pytest.raises(AppDomainUnloadedException):
        d.get_data("x")


# -- events --------------------------------------------------------------------------------


def test_domain_unload_event_fires_in_the_domain(tmp_path: Path, domain_factory: Factory) -> None:
    # Observed through a file: a Channel value sent by the dying domain is lost with it
    # (see test_channel.py::test_values_sent_by_a_domain_survive_its_unload).
    d = domain_factory("UnloadFile")
    marker = tmp_path / "unloaded.txt"
    d.do_callback(helpers.subscribe_unload_to_file, str(marker))
    assert not marker.exists()
    AppDomain.unload(d)
    assert marker.read_text() == f"unloaded {d.id}"


def test_domain_unload_subscription_from_outside_is_refused(domain: AppDomain) -> None:
    with pytest.raises(AppDomainError, match="from inside"):
        domain.domain_unload += helpers.noop


def test_unhandled_exception_event_fires(domain: AppDomain) -> None:
    reports = Channel()
    domain.set_data("exc_channel", reports)
    domain.do_callback(helpers.raise_in_thread, "escaped!")
    name, message, terminating, sender_id = reports.recv(timeout=10)
    assert (name, message, terminating, sender_id) == ("ValueError", "escaped!", False, domain.id)


# -- .NET names ----------------------------------------------------------------------------


def test_net_aliases_round_trip(tmp_path: Path) -> None:
    d = AppDomain.CreateDomain("NetNames")
    try:
        assert d.FriendlyName == "NetNames"
        assert d.Id == d.id
        assert d.IsDefaultAppDomain() is False
        assert AppDomain.CurrentDomain.Id == 1
        assert AppDomain.CurrentDomain.IsDefaultAppDomain() is True
        d.SetData("k", 5)
        assert d.GetData("k") == 5
        assert d.DoCallBack(helpers.add, 2, 2) == 4
        assert d.DoCallBack(helpers.whoami_net) == (d.id, "NetNames", False)
        assert d.ExecuteAssembly(str(_script(tmp_path)), ["--fail"]) == 3
    finally:
        AppDomain.Unload(d)
    with pytest.raises(AppDomainUnloadedException):
        d.GetData("k")


def test_setup_net_names() -> None:
    setup = AppDomainSetup(application_base="/base", private_bin_path=["lib"])
    assert setup.ApplicationBase == "/base"
    assert setup.PrivateBinPath == "lib"


# -- what a domain loads -----------------------------------------------------------------------


def test_new_domain_loads_remoting_and_sockets_only_when_used(domain_factory: Factory) -> None:
    d = domain_factory("Lean")
    loaded = set(d.do_callback(plain_helpers.loaded_modules))
    assert not loaded & {"appdomain._remoting", "appdomain._sockets._socket", "socket", "pickle"}


def test_remoting_loads_in_a_domain_on_first_use(domain_factory: Factory) -> None:
    d = domain_factory("FirstUse")
    calc = d.create_instance_and_unwrap(helpers.__name__, "Calculator")
    assert calc.add(2, 3) == 5
    assert "appdomain._remoting" in d.do_callback(plain_helpers.loaded_modules)


def test_remoting_in_a_domain_does_not_import_typing(domain_factory: Factory) -> None:
    d = domain_factory("NoTyping")
    adder = d.create_instance_and_unwrap("lean_helpers", "Adder")
    assert adder.add(2, 3) == 5
    loaded = set(d.do_callback(plain_helpers.loaded_modules))
    assert not loaded & {"typing", "queue", "heapq"}  # ~2 ms of every domain's first call


def test_channel_is_the_first_appdomain_object_a_domain_receives(domain_factory: Factory) -> None:
    d = domain_factory("ChannelFirst")
    channel = Channel()
    d.do_callback(plain_helpers.send_through, channel, "hello")
    assert channel.recv(timeout=10) == "hello"
