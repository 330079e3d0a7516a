"""Bound remote methods: what `proxy.method` is, and calls through it on every route.

On the native path binding and lean calls run in C (_native/method.c); on the pure path
in Python.  These tests hold on both (conftest's route fixture, and tests/test_pure_start.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import remoting_helpers as helpers

from appdomain import AppDomain, AppDomainUnloadedException, RemoteMethod

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")


@pytest.fixture
def calc() -> Iterator[helpers.Calculator]:
    domain = AppDomain.create_domain("MethodWorker")
    yield domain.create_instance_and_unwrap("remoting_helpers", "Calculator", 5)
    try:
        AppDomain.unload(domain)
    except AppDomainUnloadedException:
        pass


def test_a_method_read_from_a_proxy_is_a_remote_method(calc: helpers.Calculator) -> None:
    method = calc.add
    assert isinstance(method, RemoteMethod)
    assert method.name == "add"
    assert method.proxy is calc


def test_remote_method_of_a_proxy_method_is_that_method(calc: helpers.Calculator) -> None:
    method = calc.add
    assert RemoteMethod.of(method) is method
    assert RemoteMethod.of(method).begin_invoke(1, 2).result(timeout=10) == 3


def test_remote_method_of_a_local_method_is_refused() -> None:
    local = helpers.Calculator(5)
    with pytest.raises(TypeError, match="'method' must be a method of a transparent proxy"):
        RemoteMethod.of(local.add)


def test_a_remote_method_repr_names_method_and_proxy(calc: helpers.Calculator) -> None:
    assert repr(calc.add) == f"<remote method add of {calc!r}>"


def test_a_method_held_in_a_variable_keeps_working(calc: helpers.Calculator) -> None:
    add = calc.add
    assert [add(i, 1) for i in range(3)] == [1, 2, 3]


def test_keyword_arguments_give_the_positional_result(calc: helpers.Calculator) -> None:
    assert calc.add(a=2, b=3) == calc.add(2, 3) == 5


def test_arguments_that_are_not_plain_values_cross(calc: helpers.Calculator) -> None:
    assert calc.identity([1, {"k": (2, 3)}]) == [1, {"k": (2, 3)}]


def test_an_integer_beyond_64_bits_crosses(calc: helpers.Calculator) -> None:
    assert calc.add(1 << 70, 1) == (1 << 70) + 1


def test_a_remote_error_raised_through_a_bound_method(calc: helpers.Calculator) -> None:
    with pytest.raises(KeyError, match="boom"):
        calc.fail("boom")


def test_calls_leave_no_references_behind(calc: helpers.Calculator) -> None:
    text = "an argument the test counts references to"
    proxy_refs, text_refs = sys.getrefcount(calc), sys.getrefcount(text)
    for _ in range(200):
        calc.identity(text)
        calc.add(1, 2)
    assert (sys.getrefcount(calc), sys.getrefcount(text)) == (proxy_refs, text_refs)


def test_failed_calls_leave_no_references_behind(calc: helpers.Calculator) -> None:
    text = "a message the test counts references to"
    text_refs = sys.getrefcount(text)
    for _ in range(50):
        with pytest.raises(KeyError):
            calc.fail(text)
    assert sys.getrefcount(text) == text_refs


def test_a_bound_method_outliving_its_domain_says_unloaded() -> None:
    domain = AppDomain.create_domain("MethodShortLived")
    add = domain.create_instance_and_unwrap("remoting_helpers", "Calculator").add
    AppDomain.unload(domain)
    with pytest.raises(AppDomainUnloadedException):
        add(1, 2)
