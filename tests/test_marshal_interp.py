"""Send shareable wires into a real subinterpreter and back, through a queue."""

from __future__ import annotations

import _interpreters
import array
import datetime as dt
import decimal
import functools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from test_marshal_samples import (
    Account,
    AppError,
    Color,
    Handle,
    Outer,
    Pair,
    Point,
    Segment,
    scale,
)
from test_marshal_values import same

from appdomain._core import _compat
from appdomain._errors import RemoteException
from appdomain.marshal import (
    Ref,
    decode_call,
    decode_exception,
    decode_reply,
    encode_call,
    from_shareable,
    to_shareable,
)

TESTS = os.path.dirname(os.path.abspath(__file__))
SETUP = f"""
import sys
sys.path.insert(0, {TESTS!r})
import _interpreters
from appdomain._core import _compat
from appdomain.marshal import *
"""


@pytest.fixture
def interp() -> Iterator[tuple[int, int]]:
    """Yield (interpreter id, queue id) with appdomain.marshal imported there; clean up."""
    iid = _interpreters.create()
    qid = _compat.queue_create()
    try:
        run(iid, SETUP)
        yield iid, qid
    finally:
        _interpreters.destroy(iid)
        _compat.queue_destroy(qid)


def run(iid: int, code: str, shared: dict[str, Any] | None = None) -> None:
    err = _interpreters.exec(iid, code, shared or {})
    assert err is None, err.formatted


def echo(interp: tuple[int, int], value: Any) -> Any:
    """Decode the value in the subinterpreter, re-encode it there, and decode it here."""
    iid, qid = interp
    code = "_compat.queue_put(qid, to_shareable(from_shareable(w)))"
    run(iid, code, {"w": to_shareable(value), "qid": qid})
    return from_shareable(_compat.queue_get(qid))


VALUES: list[Any] = [
    None,
    True,
    7,
    2**100,
    1.25,
    "text",
    b"bytes",
    bytes(1 << 20),
    bytearray(b"ba"),
    bytearray(1 << 17),
    array.array("q", [1, -2]),
    (1, ("nested", [2.0])),
    [bytearray(b"x"), {1, 2}],
    {"k": 1, (1, 2): frozenset({3})},
    {f"key{i}": i for i in range(100)},
    dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    decimal.Decimal("1.10"),
    uuid.UUID(int=5),
    Color.RED,
    Point(1, 2),
    Segment(Point(0, 0), Point(1, 1), ["t"]),
    Pair("a", b"b"),
    Account("eve", 9),
    len,
    list,
    scale,
    Outer.Inner,
    decimal,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_value_round_trips_through_a_subinterpreter(interp: tuple[int, int], value: Any) -> None:
    assert same(echo(interp, value), value)


def test_memoryview_round_trips_through_a_subinterpreter(interp: tuple[int, int]) -> None:
    out = echo(interp, memoryview(array.array("i", [1, 2, 3])))
    assert type(out) is memoryview and out.format == "i" and out.tolist() == [1, 2, 3]


def test_partial_crosses_by_name_and_is_called_there(interp: tuple[int, int]) -> None:
    iid, qid = interp
    code = "_compat.queue_put(qid, from_shareable(w)(4))"
    run(iid, code, {"w": to_shareable(functools.partial(scale, factor=3)), "qid": qid})
    assert _compat.queue_get(qid) == 12


def test_call_with_out_and_ref_across_interpreters(interp: tuple[int, int]) -> None:
    iid, qid = interp
    run(
        iid,
        """
def read(buffer: Out[bytearray], count: int, total: Ref[int]) -> int:
    buffer[:count] = b"r" * count
    total.value += count
    return count
""",
    )
    buffer, total = bytearray(4), Ref(10)
    wire = encode_call((buffer, 3, total), {})
    code = """
args, kwargs = decode_call(w)
_compat.queue_put(qid, encode_reply(read(*args, **kwargs), args, kwargs, plan_for(read)))
"""
    run(iid, code, {"w": wire, "qid": qid})
    result = decode_reply(_compat.queue_get(qid), (buffer, 3, total), {})
    assert (result, buffer, total.value) == (3, bytearray(b"rrr\0"), 13)


def test_kwargs_call_decodes_in_subinterpreter(interp: tuple[int, int]) -> None:
    iid, qid = interp
    wire = encode_call((1,), {"p": Point(3, 4), "n": 2**80})
    run(iid, "_compat.queue_put(qid, to_shareable(decode_call(w)))", {"w": wire, "qid": qid})
    assert from_shareable(_compat.queue_get(qid)) == ((1,), {"p": Point(3, 4), "n": 2**80})


def test_exception_crosses_from_subinterpreter(interp: tuple[int, int]) -> None:
    iid, qid = interp
    code = """
from test_marshal_samples import AppError
try:
    raise AppError(5, "remote")
except AppError as exc:
    _compat.queue_put(qid, encode_exception(exc))
"""
    run(iid, code, {"qid": qid})
    exc = decode_exception(_compat.queue_get(qid))
    assert type(exc) is AppError and exc.code == 5 and "line 4, in <module>" in exc.remote_traceback  # type: ignore[attr-defined]


def test_exception_of_subinterpreter_only_type_is_remote_exception(interp: tuple[int, int]) -> None:
    iid, qid = interp
    code = """
class OnlyHere(Exception):
    pass
try:
    raise OnlyHere("lost")
except OnlyHere as exc:
    _compat.queue_put(qid, encode_exception(exc))
"""
    run(iid, code, {"qid": qid})
    exc = decode_exception(_compat.queue_get(qid))
    assert type(exc) is RemoteException and exc.remote_type == "__main__.OnlyHere"


def test_reference_type_rebuilds_in_the_other_interpreter(interp: tuple[int, int]) -> None:
    iid, qid = interp
    from test_marshal_samples import rebuild_handle, reduce_handle

    from appdomain.marshal import register_reference_type

    register_reference_type(Handle, reduce_handle, rebuild_handle)
    code = """
from test_marshal_samples import Handle, reduce_handle, rebuild_handle
register_reference_type(Handle, reduce_handle, rebuild_handle)
h = from_shareable(w)
_compat.queue_put(qid, (type(h).__name__, h.ident))
"""
    run(iid, code, {"w": to_shareable(Handle(55)), "qid": qid})
    assert _compat.queue_get(qid) == ("Handle", 55)


def test_fast_call_crosses_with_no_encoding(interp: tuple[int, int]) -> None:
    iid, qid = interp
    run(
        iid,
        "_compat.queue_put(qid, decode_call(w)[0])",
        {"w": encode_call((1, 2, "s"), {}), "qid": qid},
    )
    assert _compat.queue_get(qid) == (1, 2, "s")


def test_decode_call_result_types_are_exact_in_subinterpreter(interp: tuple[int, int]) -> None:
    iid, qid = interp
    wire = encode_call((True, 1, bytearray(b"x"), (1,), [1]), {})
    run(
        iid,
        "_compat.queue_put(qid, tuple(type(a).__name__ for a in decode_call(w)[0]))",
        {"w": wire, "qid": qid},
    )
    assert _compat.queue_get(qid) == ("bool", "int", "bytearray", "tuple", "list")


def test_echo_helper_rejects_nothing_of_calls(interp: tuple[int, int]) -> None:
    args, _ = decode_call(echo(interp, encode_call((AppError(1, "a"),), {})))
    assert type(args[0]) is AppError
