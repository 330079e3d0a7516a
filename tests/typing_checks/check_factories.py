"""Checked by mypy (scripts/typecheck), never run: what type checkers see of the factories."""

from __future__ import annotations

from typing import Any, assert_type

from appdomain import AppDomain, MarshalByRefObject


class Greeter(MarshalByRefObject):
    def __init__(self, name: str) -> None:
        self.name = name

    def greet(self) -> str:
        return f"hello {self.name}"


def check(domain: AppDomain) -> None:
    greeter = domain.create_instance_and_unwrap(Greeter, "ada")
    assert_type(greeter, Greeter)
    assert_type(greeter.greet(), str)
    by_name = domain.create_instance_and_unwrap("greeters", "Greeter", "ada")
    assert_type(by_name, Any)
    greeter.no_such_method()  # type: ignore[attr-defined]
    domain.create_instance_and_unwrap(42, "Greeter")  # type: ignore[call-overload]


def check_from_file(domain: AppDomain) -> None:
    greeter = domain.create_instance_from_and_unwrap("greeters.py", Greeter, "ada")
    assert_type(greeter, Greeter)
    by_name = domain.create_instance_from_and_unwrap("greeters.py", "Greeter", "ada")
    assert_type(by_name, Any)
    domain.create_instance_from_and_unwrap("greeters.py", 42)  # type: ignore[call-overload]
