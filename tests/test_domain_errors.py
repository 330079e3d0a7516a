"""Bad input to the domain API gets clear errors, before anything crosses a domain."""

from __future__ import annotations

import threading
from pathlib import Path

import domain_helpers as helpers
import pytest

from appdomain import AppDomain, AppDomainSetup, SerializationException

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")


def test_non_string_name_is_type_error_naming_value() -> None:
    with pytest.raises(TypeError, match="12345"):
        AppDomain.create_domain(12345)  # type: ignore[arg-type]


def test_bad_setup_is_type_error() -> None:
    with pytest.raises(TypeError, match="setup"):
        AppDomain.create_domain("BadSetup", {"application_base": "."})  # type: ignore[arg-type]


def test_bad_application_base_is_type_error() -> None:
    with pytest.raises(TypeError, match="application_base"):
        AppDomainSetup(application_base=42)  # type: ignore[arg-type]


def test_bad_private_bin_path_is_type_error() -> None:
    with pytest.raises(TypeError, match="private_bin_path"):
        AppDomainSetup(private_bin_path=[1, 2])  # type: ignore[list-item]


def test_constructor_is_refused() -> None:
    with pytest.raises(TypeError, match="create_domain"):
        AppDomain("Direct")


def test_missing_script_is_file_not_found_naming_path(domain: AppDomain, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_tool.py"
    with pytest.raises(FileNotFoundError, match=r"no_such_tool\.py"):
        domain.execute_assembly(str(missing))


def test_execute_assembly_args_as_string_is_type_error(domain: AppDomain, tmp_path: Path) -> None:
    script = tmp_path / "ok.py"
    script.write_text("pass\n")
    with pytest.raises(TypeError, match="args"):
        domain.execute_assembly(str(script), "--flag")  # type: ignore[arg-type]


def test_unmarshallable_set_data_names_the_key(domain: AppDomain) -> None:
    with pytest.raises(SerializationException, match="the_lock_key"):
        domain.set_data("the_lock_key", threading.Lock())


def test_failed_set_data_stores_nothing(domain: AppDomain) -> None:
    with pytest.raises(SerializationException):
        domain.set_data("lock", threading.Lock())
    assert domain.get_data("lock") is None


def test_non_string_data_key_is_type_error(domain: AppDomain) -> None:
    with pytest.raises(TypeError, match="name"):
        domain.set_data(1, "x")  # type: ignore[arg-type]


def test_lambda_callback_is_refused(domain: AppDomain) -> None:
    with pytest.raises(TypeError, match="lambda"):
        domain.do_callback(lambda: 1)


def test_closure_callback_is_refused(domain: AppDomain) -> None:
    def inner() -> int:
        return 1

    with pytest.raises(TypeError, match="importable"):
        domain.do_callback(inner)


def test_non_callable_callback_is_refused(domain: AppDomain) -> None:
    with pytest.raises(TypeError, match="callback"):
        domain.do_callback(42)  # type: ignore[arg-type]


def test_unmarshallable_callback_argument_is_serialization_error(domain: AppDomain) -> None:
    with pytest.raises(SerializationException):
        domain.do_callback(helpers.echo, threading.Lock())


def test_unmarshallable_callback_result_is_serialization_error(domain: AppDomain) -> None:
    with pytest.raises(SerializationException):
        domain.do_callback(helpers.make_lock)


def test_domain_serves_after_bad_input(domain: AppDomain) -> None:
    with pytest.raises(TypeError):
        domain.do_callback(lambda: 1)
    with pytest.raises(SerializationException):
        domain.set_data("k", threading.Lock())
    assert domain.do_callback(helpers.add, 1, 2) == 3
