"""Cross modules, classes, functions, builtins and partials of them by name (tag GLOBAL)."""

from __future__ import annotations

import abc
import collections
import enum
import functools
import os.path
from typing import Any

import pytest
import test_marshal_samples as samples

from appdomain._errors import SerializationException
from appdomain.marshal import dumps, from_shareable, loads, to_shareable
from appdomain.marshal._tags import GLOBAL, PARTIAL

BY_NAME: list[Any] = [
    len,
    iter,
    list,
    ValueError,
    collections.OrderedDict,
    collections.abc.Mapping,  # ABCMeta
    abc.ABC,
    enum.Enum,  # EnumMeta
    collections.namedtuple,
    os.path.join,
    samples.scale,
    samples.Outer,
    samples.Outer.Inner,
    samples.Outer.method,
    functools,
    os,
]


@pytest.mark.parametrize("value", BY_NAME, ids=repr)
def test_shareable_round_trip_is_the_same_object(value: Any) -> None:
    assert from_shareable(to_shareable(value)) is value


@pytest.mark.parametrize("value", BY_NAME, ids=repr)
def test_bytes_round_trip_is_the_same_object(value: Any) -> None:
    assert loads(dumps(value)) is value


@pytest.mark.parametrize("value", BY_NAME, ids=repr)
def test_untrusted_loads_finds_imported_names(value: Any) -> None:
    assert loads(dumps(value), trusted=False) is value


def test_by_name_values_cross_inside_containers() -> None:
    assert from_shareable(to_shareable({"kinds": [list, tuple, iter]})) == {
        "kinds": [list, tuple, iter]
    }


def test_partial_keeps_func_args_and_keywords() -> None:
    out = loads(dumps(functools.partial(samples.scale, 3, factor=5)))
    assert (out.func, out.args, out.keywords, out()) == (samples.scale, (3,), {"factor": 5}, 15)


def test_partial_of_a_partial_crosses() -> None:
    inner = functools.partial(samples.scale, factor=4)
    out = from_shareable(to_shareable(functools.partial(inner, 2)))
    assert out() == 8


def test_partial_keeps_what_update_wrapper_set() -> None:
    wrapped = functools.update_wrapper(functools.partial(samples.scale, factor=3), samples.scale)
    out = from_shareable(to_shareable(wrapped))
    assert (out.__name__, out.__wrapped__, out(2)) == ("scale", samples.scale, 6)


# --- refused when sent --------------------------------------------------------------------


def test_lambda_is_refused() -> None:
    with pytest.raises(
        SerializationException, match=r"^value: <function .*<lambda> at .* is a lambda"
    ):
        to_shareable(lambda: 0)


def test_closure_is_refused() -> None:
    def inner() -> None:
        pass

    with pytest.raises(SerializationException, match="is defined inside a function"):
        to_shareable(inner)


def test_function_local_class_is_refused() -> None:
    class Local:
        pass

    with pytest.raises(SerializationException, match="is defined inside a function"):
        to_shareable(Local)


def test_bound_builtin_method_is_refused() -> None:
    with pytest.raises(SerializationException, match="is a method bound to an object"):
        to_shareable([].append)


def test_function_its_name_no_longer_leads_to_is_refused() -> None:
    with pytest.raises(
        SerializationException,
        match=r"is not what test_marshal_samples\.renamed names in this domain",
    ):
        to_shareable(samples.stale)


def test_partial_of_a_lambda_names_the_path() -> None:
    with pytest.raises(SerializationException, match=r"^value\.func: .* is a lambda"):
        to_shareable(functools.partial(lambda: 0))


def test_partial_argument_that_cannot_cross_names_the_path() -> None:
    with pytest.raises(SerializationException, match=r"^value\.args\[0\]: <object object"):
        dumps(functools.partial(samples.scale, object()))


# --- refused when received ---------------------------------------------------------------


def node(kind: str, module: str, qualname: str) -> tuple[Any, ...]:
    return (GLOBAL, kind, module, qualname)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (
            node("function", "test_marshal_samples", "missing"),
            "cannot find function test_marshal_samples.missing in this domain: module "
            "'test_marshal_samples' has no 'missing'",
        ),
        (
            node("function", "test_marshal_samples", "Outer"),
            "cannot find function test_marshal_samples.Outer in this domain: it is a class "
            "here, not a function",
        ),
        (
            node("class", "test_marshal_samples", "scale"),
            "cannot find class test_marshal_samples.scale in this domain: it is a function "
            "here, not a class",
        ),
        (
            node("class", "no_such_module_here", "X"),
            "cannot find class no_such_module_here.X in this domain: cannot import module "
            "'no_such_module_here'",
        ),
        (
            node("function", "test_marshal_samples", "scale.__globals__"),
            "names a dunder attribute",
        ),
        (
            node("class", "test_marshal_samples", "Outer.instance_attr.x"),
            "'Outer.instance_attr.x' goes through a Point",
        ),
        (node("class", "test_marshal_samples", "Outer..Inner"), "is not a plain dotted name"),
        (node("weird", "os", ""), "bad GLOBAL node 'weird'"),
        (node("module", "os", "path"), "bad GLOBAL node 'module'"),
    ],
)
def test_name_that_does_not_resolve_to_its_kind_is_refused(
    wire: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(SerializationException, match=message.replace(".", r"\.")):
        from_shareable(wire)


def test_untrusted_loads_does_not_import_the_named_module() -> None:
    data = dumps(samples.scale).replace(b"test_marshal_samples", b"test_marshal_sample0")
    with pytest.raises(SerializationException, match="untrusted data cannot import"):
        loads(data, trusted=False)


def test_partial_node_with_a_bad_func_is_refused() -> None:
    with pytest.raises(SerializationException, match="PARTIAL func must be callable"):
        from_shareable((PARTIAL, 1, (2,), (4,), None))
