"""Encode calls, replies and faults as shareable tuples with a version/kind header."""

from __future__ import annotations

import marshal as _stdlib_marshal
import sys

from .._errors import SerializationException
from . import _tags as tg
from ._core import (
    MAX64,
    MIN64,
    NATIVE,
    VIEW_MIN,
    Ctx,
    Refusal,
    decode,
    encode,
    refusal_error,
    short_repr,
)
from ._exc import STACK_NOTE, encode_exception_node, rebuild_exception
from ._markers import Ref

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    import array
    from typing import Any, TypeIs

    from ._callplan import CallPlan
    from ._tags import Node, Shareable

__all__ = [
    "decode_call",
    "decode_exception",
    "decode_reply",
    "encode_call",
    "encode_exception",
    "encode_reply",
    "from_shareable",
    "to_shareable",
    "wire_from_bytes",
    "wire_to_bytes",
]

# And array.array: looked up where it is needed, for array (which imports collections.abc,
# ~1.5 ms) is loaded only by programs that make arrays.
_OUT_TYPES = (bytearray, memoryview, list, dict, set, Ref)


def _is_array(value: object) -> TypeIs[array.array[Any]]:
    module = sys.modules.get("array")
    return module is not None and isinstance(value, module.array)


def _native(values: tuple[Any, ...]) -> TypeIs[tuple[Shareable, ...]]:
    """Tell whether every value crosses natively as it is (no encoding at all)."""
    for a in values:
        t = type(a)
        if t in NATIVE:
            if t is bytes and len(a) >= VIEW_MIN:
                return False
            continue
        if t is int and MIN64 <= a <= MAX64:
            continue
        return False
    return True


def to_shareable(obj: Any, name: str = "value") -> Shareable:  # dispatched on its exact type
    """Encode one value by its cheapest tier; ``name`` starts refusal messages."""
    t = type(obj)
    if (t in NATIVE and (t is not bytes or len(obj) < VIEW_MIN)) or (
        t is int and MIN64 <= obj <= MAX64
    ):
        native: Shareable = obj
        return native
    try:
        return encode(obj, Ctx())
    except Refusal as refusal:
        raise refusal_error(name, refusal) from None


def from_shareable(x: Shareable) -> object:
    """Decode a value made by to_shareable (in any interpreter of this process)."""
    return decode(x)


def _decode_values(items: tuple[Shareable, ...]) -> tuple[object, ...]:
    for x in items:
        if type(x) is tuple:
            return tuple([c if type(c) is not tuple else decode(c) for c in items])
    return items


def _check_out(args: tuple[object, ...], kwargs: dict[str, object], plan: CallPlan) -> None:
    """Refuse, before sending, Out arguments that cannot receive a copy-back."""
    checks = [(plan.arg_name(i), args[i]) for i in plan.out_positions if i < len(args)]
    checks += [(f"argument {k!r}", v) for k, v in kwargs.items() if k in plan.out_names]
    for where, value in checks:
        if not (isinstance(value, _OUT_TYPES) or _is_array(value)) or (
            isinstance(value, memoryview) and value.readonly
        ):
            raise SerializationException(
                f"{where} is an Out parameter, so it must be a bytearray, array.array, writable "
                f"memoryview, list, dict, set or Ref (got {short_repr(value)} that is a "
                f"{type(value).__name__})"
            )


def encode_call(
    args: tuple[object, ...], kwargs: dict[str, object], plan: CallPlan | None = None
) -> Node:
    """Encode call arguments (caller side) as a shareable tuple."""
    if plan is not None and plan.has_out:
        _check_out(args, kwargs, plan)
    if not kwargs and _native(args):
        return (tg.CALL, *args)
    ctx = Ctx()
    out: list[Shareable] = [tg.CALL_KW, len(args)] if kwargs else [tg.CALL]
    for i, value in enumerate(args):
        try:
            out.append(encode(value, ctx))
        except Refusal as refusal:
            where = plan.arg_name(i) if plan is not None else f"argument {i}"
            raise refusal_error(where, refusal) from None
    for key, value in kwargs.items():
        try:
            out.append(key)
            out.append(encode(value, ctx))
        except Refusal as refusal:
            raise refusal_error(f"argument {key!r}", refusal) from None
    return tuple(out)


def decode_call(message: Shareable) -> tuple[tuple[object, ...], dict[str, object]]:
    """Decode call arguments (callee side)."""
    wire: Any = message  # a call message, as _kind checks
    kind = _kind(wire)
    if kind == tg.CALL:
        return _decode_values(wire[1:]), {}
    if kind != tg.CALL_KW:
        raise SerializationException(f"expected a call message (got kind {kind:#x})")
    count = wire[1]
    args = _decode_values(wire[2 : 2 + count])
    rest = wire[2 + count :]
    kwargs = {rest[i]: decode(rest[i + 1]) for i in range(0, len(rest), 2)}
    return args, kwargs


def encode_reply(
    result: object, args: tuple[object, ...], kwargs: dict[str, object], plan: CallPlan | None
) -> Node:
    """Encode the result plus copy-backs of Ref boxes and Out parameters (callee side)."""
    plain = (result,)
    if not kwargs and (plan is None or not plan.has_out) and _native(plain):
        # A plain result, and nothing to copy back unless an argument is a Ref box (a call
        # passing a callback object lands here too: its proxy is no Ref).
        for a in args:
            if type(a) is Ref:
                break
        else:
            return (tg.REPLY, plain[0])
    ctx = Ctx()
    try:
        encoded = encode(result, ctx)
    except Refusal as refusal:
        raise refusal_error("return value", refusal) from None
    out_positions = plan.out_positions if plan is not None else frozenset()
    out_names = plan.out_names if plan is not None else frozenset()
    backs: list[Shareable] = []
    for i, value in enumerate(args):
        if type(value) is Ref or i in out_positions:
            backs += _copy_back_item(i, value, ctx, plan.arg_name(i) if plan else f"argument {i}")
    for key, value in kwargs.items():
        if type(value) is Ref or key in out_names:
            backs += _copy_back_item(key, value, ctx, f"argument {key!r}")
    if not backs:
        return (tg.REPLY, encoded)
    return (tg.REPLY_OUT, encoded, *backs)


def _copy_back_item(key: int | str, value: object, ctx: Ctx, where: str) -> list[Shareable]:
    try:
        return [key, encode(value.value if type(value) is Ref else value, ctx)]
    except Refusal as refusal:
        raise refusal_error(f"{where} (copy-back)", refusal) from None


def decode_reply(message: Shareable, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
    """Return the result, after writing copy-backs into the caller's original arguments.

    A fault message (from encode_exception) is raised here as the decoded exception.
    """
    wire: Any = message  # a reply message, as _kind checks
    kind = _kind(wire)
    if kind == tg.REPLY:
        return decode(wire[1])
    if kind == tg.FAULT:
        raise decode_exception(wire)
    if kind != tg.REPLY_OUT:
        raise SerializationException(f"expected a reply message (got kind {kind:#x})")
    backs = wire[2:]
    for i in range(0, len(backs), 2):
        key, node = backs[i], backs[i + 1]
        target = args[key] if type(key) is int else kwargs[key]
        copy_back(target, node)
    return decode(wire[1])


def copy_back(target: object, node: Shareable) -> None:
    """Write the callee's final value (a tree) into the caller's object, in place."""
    if type(target) is Ref:
        target.value = decode(node)
        return
    if type(target) is bytearray and type(node) is tuple and node[0] == tg.BYTEARRAY:
        payload: Any = node[1]  # bytes, or a view of the sender's buffer
        target[:] = payload  # straight from the sender's buffer: the only copy
        return
    value: Any = decode(node)  # the callee's final value of the parameter
    if isinstance(target, bytearray | list):
        target[:] = value
    elif _is_array(target):
        if not _is_array(value) or value.typecode != target.typecode:
            raise SerializationException(
                f"copy-back into array({target.typecode!r}) got {short_repr(value)}"
            )
        target[:] = value
    elif isinstance(target, memoryview):
        dest, src = target.cast("B"), memoryview(value).cast("B")
        if dest.nbytes != src.nbytes:
            raise SerializationException(
                f"copy-back into a memoryview of {dest.nbytes} bytes got {src.nbytes} bytes"
            )
        dest[:] = src
    elif isinstance(target, dict | set):
        target.clear()
        target.update(value)
    else:
        raise SerializationException(f"cannot copy back into {short_repr(target)}")


def encode_exception(exc: BaseException) -> Node:
    """Encode an exception raised by the callee (never fails: unsendable parts are dropped)."""
    return (tg.FAULT, encode_exception_node(exc, Ctx()))


def decode_exception(wire: Shareable) -> BaseException:
    """Rebuild the callee's exception, with its traceback as a "Server stack trace" note."""
    if _kind(wire) != tg.FAULT:
        raise SerializationException("expected a fault message")
    fault: Any = wire  # (FAULT, exception node), as _kind checks
    exc = rebuild_exception(fault[1], True)
    tb = getattr(exc, "remote_traceback", "")
    if tb:
        exc.add_note(STACK_NOTE + tb.rstrip("\n"))
    return exc


def _kind(wire: Shareable) -> int:
    kind = wire[0] if type(wire) is tuple and wire else None
    if type(kind) is not int:
        raise SerializationException(f"not an appdomain message: {short_repr(wire)}")
    if kind >> 8 != tg.WIRE_VERSION:
        raise SerializationException(f"unsupported message version {kind >> 8}")
    return kind


def wire_to_bytes(wire: Shareable) -> bytes:
    """Pack a shareable message into one bytes object (in-process use only)."""
    return _stdlib_marshal.dumps(wire)


def wire_from_bytes(data: bytes) -> Shareable:
    """Unpack wire_to_bytes output (trusted, in-process data only)."""
    wire: Shareable = _stdlib_marshal.loads(data)
    return wire
