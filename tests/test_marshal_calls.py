"""Encode calls, replies and faults; copy back Out parameters and Ref boxes."""

from __future__ import annotations

import array
from typing import Any

import pytest
from test_marshal_samples import AppError, Point

from appdomain._errors import RemoteException, SerializationException
from appdomain.marshal import (
    Out,
    Ref,
    decode_call,
    decode_exception,
    decode_reply,
    encode_call,
    encode_exception,
    encode_reply,
    plan_for,
    wire_from_bytes,
    wire_to_bytes,
)


class Stream:
    def read(self, buffer: Out[bytearray], offset: int, count: int) -> int:
        buffer[offset : offset + count] = b"z" * count
        return count

    def fill(self, *, into: Out[list[int]]) -> None:
        into[:] = [7, 8]


def bump(r: Ref[int], label: str = "") -> str:
    r.value += 1
    return label


def call_across(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Simulate a cross-domain call: encode, decode, run, encode reply, decode reply."""
    plan = plan_for(func)
    wire = encode_call(args, kwargs, plan)
    callee_args, callee_kwargs = decode_call(wire_from_bytes(wire_to_bytes(wire)))
    result = func(*callee_args, **callee_kwargs)
    reply = encode_reply(result, callee_args, callee_kwargs, plan)
    return decode_reply(reply, args, kwargs)


def test_small_call_wire_is_a_flat_tuple() -> None:
    wire = encode_call((1, 2, "x"), {})
    assert type(wire) is tuple and wire[1:] == (1, 2, "x")


def test_call_round_trips_args_and_kwargs_exactly() -> None:
    args, kwargs = decode_call(encode_call((1, [2], 2**70), {"p": Point(1, 2), "b": b"x"}))
    assert (args, kwargs) == ((1, [2], 2**70), {"p": Point(1, 2), "b": b"x"})


def test_plan_finds_out_parameters_of_a_bound_method() -> None:
    plan = plan_for(Stream().read)
    assert (plan.params, plan.out_positions, plan.out_names) == (
        ("buffer", "offset", "count"),
        frozenset({0}),
        frozenset({"buffer"}),
    )


def test_plan_records_tiers_per_parameter_and_result() -> None:
    plan = plan_for(Stream().read)
    assert (dict(plan.tiers), plan.result_tier) == ({"buffer": 3, "offset": 1, "count": 1}, 1)


def test_plan_is_cached() -> None:
    assert plan_for(Stream().read) is plan_for(Stream().read)


def test_plan_reads_string_annotations() -> None:
    ns: dict[str, Any] = {}
    exec("def f(buf: 'Missing.Out[bytearray]', n: 'int') -> None: pass", ns)
    assert plan_for(ns["f"]).out_names == frozenset({"buf"})


def test_out_bytearray_is_copied_back_in_place() -> None:
    buffer = bytearray(b"....")
    original = buffer
    assert call_across(Stream().read, (buffer, 1, 2), {}) == 2
    assert buffer == bytearray(b".zz.") and buffer is original


def test_large_out_bytearray_is_copied_back() -> None:
    buffer = bytearray(1 << 20)
    call_across(Stream().read, (buffer, 0, 1 << 20), {})
    assert buffer == b"z" * (1 << 20)


def test_out_keyword_list_is_copied_back() -> None:
    into = [1]
    call_across(Stream().fill, (), {"into": into})
    assert into == [7, 8]


def test_ref_value_is_copied_back() -> None:
    r = Ref(41)
    assert call_across(bump, (r,), {"label": "x"}) == "x" and r.value == 42


def test_ref_keyword_value_is_copied_back() -> None:
    r = Ref(1)
    call_across(bump, (), {"r": r})
    assert r.value == 2


def test_out_array_is_copied_back() -> None:
    def double(a: Out[array.array[int]]) -> None:
        for i in range(len(a)):
            a[i] *= 2

    arr = array.array("i", [1, 2, 3])
    call_across(double, (arr,), {})
    assert arr == array.array("i", [2, 4, 6])


def test_out_dict_contents_are_replaced() -> None:
    def refill(d: Out[dict[str, int]]) -> None:
        d.clear()
        d["new"] = 1

    d = {"old": 0}
    call_across(refill, (d,), {})
    assert d == {"new": 1}


def test_out_writable_memoryview_is_copied_back() -> None:
    def fill(view: Out[memoryview]) -> None:
        view[:] = b"ab"

    backing = bytearray(b"..")
    call_across(fill, (memoryview(backing),), {})
    assert backing == b"ab"


def test_out_parameter_refuses_immutable_argument() -> None:
    with pytest.raises(SerializationException, match=r"argument 'buffer' is an Out parameter"):
        encode_call((b"bytes", 0, 1), {}, plan_for(Stream().read))


def test_exception_comes_back_as_same_type_with_args() -> None:
    try:
        raise AppError(7, "broken")
    except AppError as exc:
        wire = encode_exception(exc)
    out = decode_exception(wire)
    assert type(out) is AppError and out.args == ("code 7: broken",) and out.code == 7


def test_exception_carries_server_stack_trace() -> None:
    try:
        raise ValueError("deep")
    except ValueError as exc:
        out = decode_exception(encode_exception(exc))
    assert "raise ValueError" in out.remote_traceback  # type: ignore[attr-defined]
    assert out.__notes__[0].startswith("Server stack trace:\n")


def test_exception_cause_is_kept() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as exc:
        out = decode_exception(encode_exception(exc))
    assert type(out.__cause__) is KeyError and out.__cause__.args == ("inner",)


def test_exception_context_is_kept() -> None:
    try:
        try:
            raise KeyError("first")
        except KeyError:
            raise OSError(2, "second") from None
    except OSError as exc:
        out = decode_exception(encode_exception(exc))
    assert type(out.__context__) is KeyError and out.__suppress_context__


def test_unimportable_exception_becomes_remote_exception() -> None:
    class Local(Exception):
        pass

    out = decode_exception(encode_exception(Local("gone")))
    assert type(out) is RemoteException and out.remote_message == "gone"
    assert out.remote_type.endswith("<locals>.Local")


def test_exception_with_unsendable_attribute_still_crosses() -> None:
    exc = AppError(1, "x")
    exc.lock = __import__("threading").Lock()  # type: ignore[attr-defined]
    out = decode_exception(encode_exception(exc))
    assert type(out) is AppError and not hasattr(out, "lock")


def test_fault_reply_is_raised_by_decode_reply() -> None:
    with pytest.raises(ZeroDivisionError):
        decode_reply(encode_exception(ZeroDivisionError("x")), (), {})


def test_decode_call_refuses_a_reply_message() -> None:
    with pytest.raises(SerializationException, match="expected a call"):
        decode_call(encode_reply(1, (), {}, None))


def test_wire_bytes_round_trip() -> None:
    wire = encode_call((bytearray(b"x"), {1: 2}), {"k": Ref(3)})
    args, kwargs = decode_call(wire_from_bytes(wire_to_bytes(wire)))
    assert args == (bytearray(b"x"), {1: 2}) and kwargs["k"].value == 3
