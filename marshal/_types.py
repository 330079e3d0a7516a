"""Encode and decode the non-container value types: buffers, dates, enums, dataclasses."""

from __future__ import annotations

import array
import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import struct
import sys
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

from .._errors import SerializationException
from . import _tags as tg
from ._core import (
    Ctx,
    Refusal,
    add_builtin,
    add_decoder,
    add_rule,
    decode,
    encode,
    set_reference_handler,
)
from ._markers import Ref, is_serializable
from ._registry import find_reference_type, reference_by_key, resolve, wire_module

__all__ = ["ZERO_COPY_MIN", "class_name", "resolve_kind"]

# Buffers at least this big cross as a memoryview of the sender's memory (zero copy, the
# receiver makes the one copy); smaller ones are copied to bytes, so the sender's object
# is not export-locked (unresizable) while the message is alive.
ZERO_COPY_MIN = 64 * 1024
ORDER = "<" if sys.byteorder == "little" else ">"
# Formats memoryview.cast() accepts (native single-character struct codes).
CAST_FORMATS = frozenset("bBhHiIlLqQfd?cenNP")
PATH_TYPES: dict[str, type[pathlib.PurePath]] = {
    c.__name__: c
    for c in (
        pathlib.PurePath,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.Path,
        pathlib.PosixPath,
        pathlib.WindowsPath,
    )
}


def class_name(cls: type[Any]) -> tuple[str, str]:
    """Return (wire module, qualname) for a class, refusing function-local classes."""
    if "<locals>" in cls.__qualname__:
        raise Refusal(
            cls,
            f"is defined inside a function (qualname {cls.__qualname__!r}), so it cannot be "
            "found by name in another domain",
        )
    return wire_module(cls.__module__), cls.__qualname__


def resolve_kind(module: str, qualname: str, trusted: bool, kind: str) -> type[Any]:
    """Resolve a class and check it is the kind the node claims; raise SerializationException."""
    try:
        cls = resolve(module, qualname, trusted)
    except LookupError as exc:
        raise SerializationException(f"cannot rebuild {module}.{qualname}: {exc}") from None
    checks: dict[str, Callable[[type[Any]], bool]] = {
        "enum": lambda c: issubclass(c, enum.Enum),
        "dataclass": dataclasses.is_dataclass,
        "namedtuple": lambda c: issubclass(c, tuple) and hasattr(c, "_fields"),
        "object": is_serializable,
        "exception": lambda c: issubclass(c, BaseException),
    }
    ok = checks[kind](cls)
    if not ok:
        raise SerializationException(f"{module}.{qualname} is not a {kind} type here")
    return cls


# --- buffers ------------------------------------------------------------------------


def _payload(view: memoryview, ctx: Ctx) -> Any:
    if not ctx.for_bytes and view.nbytes >= ZERO_COPY_MIN and view.c_contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return view.tobytes()


def _encode_bytearray(obj: bytearray, ctx: Ctx) -> Any:
    return (tg.BYTEARRAY, _payload(memoryview(obj), ctx))


def _encode_array(obj: array.array[Any], ctx: Ctx) -> Any:
    return (tg.ARRAY, obj.typecode, ORDER, _payload(memoryview(obj), ctx))


def _encode_memoryview(obj: memoryview, ctx: Ctx) -> Any:
    fmt = obj.format.lstrip("@")
    if fmt not in CAST_FORMATS:
        raise Refusal(obj, f"has format {obj.format!r}, which cannot be rebuilt in another domain")
    shape = (tg.TUPLE, *(obj.shape or ()))
    return (tg.MEMORYVIEW, fmt, ORDER, shape, obj.readonly, _payload(obj, ctx))


def _decode_array(x: tuple[Any, ...], trusted: bool) -> array.array[Any]:
    _, typecode, order, data = x
    out = array.array(typecode)
    out.frombytes(data)
    if order != ORDER:
        out.byteswap()
    return out


def _decode_memoryview(x: tuple[Any, ...], trusted: bool) -> memoryview:
    _, fmt, order, shape, readonly, data = x
    if fmt not in CAST_FORMATS or order not in ("<", ">"):
        raise SerializationException(f"bad memoryview format {fmt!r}/{order!r}")
    buf = bytearray(data)
    width = struct.calcsize(fmt)
    if order != ORDER and width > 1:
        swapped = bytearray(len(buf))
        for i in range(width):
            swapped[i::width] = buf[width - 1 - i :: width]
        buf = swapped
    view = memoryview(bytes(buf) if readonly else buf)
    dims = list(decode(shape, trusted))
    return view.cast(fmt, dims) if dims else view.cast(fmt)


add_builtin(bytearray, _encode_bytearray)
add_builtin(array.array, _encode_array)
add_builtin(memoryview, _encode_memoryview)
add_decoder(tg.BYTEARRAY, lambda x, t: bytearray(x[1]))
add_decoder(tg.ARRAY, _decode_array)
add_decoder(tg.MEMORYVIEW, _decode_memoryview)

# --- numbers, dates, identifiers, paths ------------------------------------------------

add_builtin(complex, lambda o, c: (tg.COMPLEX, o.real, o.imag))
add_decoder(tg.COMPLEX, lambda x, t: complex(float(x[1]), float(x[2])))
add_builtin(decimal.Decimal, lambda o, c: (tg.DECIMAL, str(o)))
add_decoder(tg.DECIMAL, lambda x, t: decimal.Decimal(_str(x[1])))
add_builtin(uuid.UUID, lambda o, c: (tg.UUID, o.bytes))
add_decoder(tg.UUID, lambda x, t: uuid.UUID(bytes=bytes(x[1])))


def _str(value: Any) -> str:
    if type(value) is not str:
        raise SerializationException(
            f"expected a str in marshalled data (got {type(value).__name__})"
        )
    return value


def _encode_tz(obj: Any, ctx: Ctx) -> Any:
    try:
        return encode(obj, ctx)
    except Refusal as refusal:
        refusal.path.append(".tzinfo")
        raise


def _encode_datetime(o: dt.datetime, ctx: Ctx) -> Any:
    tz = _encode_tz(o.tzinfo, ctx)
    return (
        tg.DATETIME,
        o.year,
        o.month,
        o.day,
        o.hour,
        o.minute,
        o.second,
        o.microsecond,
        o.fold,
        tz,
    )


def _encode_time(o: dt.time, ctx: Ctx) -> Any:
    return (tg.TIME, o.hour, o.minute, o.second, o.microsecond, o.fold, _encode_tz(o.tzinfo, ctx))


def _decode_datetime(x: tuple[Any, ...], trusted: bool) -> dt.datetime:
    _, y, mo, d, h, mi, s, us, fold, tz = x
    return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tzinfo(tz, trusted), fold=fold)


def _decode_time(x: tuple[Any, ...], trusted: bool) -> dt.time:
    _, h, mi, s, us, fold, tz = x
    return dt.time(h, mi, s, us, tzinfo=_tzinfo(tz, trusted), fold=fold)


def _tzinfo(tz: Any, trusted: bool) -> dt.tzinfo | None:
    value = decode(tz, trusted)
    if value is not None and not isinstance(value, dt.tzinfo):
        raise SerializationException(f"tzinfo must be a tzinfo (got {type(value).__name__})")
    return value


def _encode_timezone(o: dt.timezone, ctx: Ctx) -> Any:
    args = o.__getinitargs__()  # type: ignore[attr-defined]
    delta: dt.timedelta = args[0]
    name = args[1] if len(args) > 1 else None
    return (tg.TIMEZONE, delta.days, delta.seconds, delta.microseconds, name)


def _decode_timezone(x: tuple[Any, ...], trusted: bool) -> dt.timezone:
    _, days, seconds, us, name = x
    delta = dt.timedelta(days, seconds, us)
    return dt.timezone(delta) if name is None else dt.timezone(delta, _str(name))


add_builtin(dt.datetime, _encode_datetime)
add_builtin(dt.date, lambda o, c: (tg.DATE, o.year, o.month, o.day))
add_builtin(dt.time, _encode_time)
add_builtin(dt.timedelta, lambda o, c: (tg.TIMEDELTA, o.days, o.seconds, o.microseconds))
add_builtin(dt.timezone, _encode_timezone)
add_builtin(zoneinfo.ZoneInfo, lambda o, c: (tg.ZONEINFO, o.key))
add_decoder(tg.DATETIME, _decode_datetime)
add_decoder(tg.DATE, lambda x, t: dt.date(x[1], x[2], x[3]))
add_decoder(tg.TIME, _decode_time)
add_decoder(tg.TIMEDELTA, lambda x, t: dt.timedelta(x[1], x[2], x[3]))
add_decoder(tg.TIMEZONE, _decode_timezone)
add_decoder(tg.ZONEINFO, lambda x, t: zoneinfo.ZoneInfo(_str(x[1])))


def _decode_path(x: tuple[Any, ...], trusted: bool) -> pathlib.PurePath:
    cls = PATH_TYPES.get(x[1])
    if cls is None:
        raise SerializationException(f"unknown path type {x[1]!r}")
    return cls(_str(x[2]))


for _path_type in PATH_TYPES.values():
    add_builtin(_path_type, lambda o, c: (tg.PATH, type(o).__name__, str(o)))
add_decoder(tg.PATH, _decode_path)

# --- Ref boxes and reference types --------------------------------------------------------


def _encode_ref(obj: Ref[Any], ctx: Ctx) -> Any:
    try:
        return (tg.REFBOX, encode(obj.value, ctx))
    except Refusal as refusal:
        refusal.path.append(".value")
        raise


def _encode_reference(obj: Any, ctx: Ctx) -> Any:
    ref = find_reference_type(type(obj))
    assert ref is not None  # the dispatcher only sends registered types here
    payload = ref.reduce(obj)
    if type(payload) is not tuple:
        raise Refusal(obj, f"was reduced by {ref.key} to a {type(payload).__name__}, not a tuple")
    if ctx.for_bytes:
        return (tg.REFERENCE, ref.key, True, encode(payload, ctx))
    return (tg.REFERENCE, ref.key, False, payload)


def _decode_reference(x: tuple[Any, ...], trusted: bool) -> Any:
    _, key, encoded, payload = x
    ref = reference_by_key(key)
    if ref is None:
        raise SerializationException(f"no reference type {key!r} is registered in this domain")
    return ref.rebuild(decode(payload, trusted) if encoded else payload)


add_builtin(Ref, _encode_ref)
add_decoder(tg.REFBOX, lambda x, t: Ref(decode(x[1], t)))
set_reference_handler(_encode_reference)
add_decoder(tg.REFERENCE, _decode_reference)

# --- user types: @serializable, enums, dataclasses, named tuples ---------------------------


def _encode_fields(tag: int, obj: Any, names: Any, ctx: Ctx) -> Any:
    module, qualname = class_name(type(obj))
    key = ctx.enter(obj)
    out: list[Any] = [tag, module, qualname]
    try:
        for name in names:
            try:
                out.append(name)
                out.append(encode(getattr(obj, name), ctx))
            except Refusal as refusal:
                refusal.path.append(f".{name}")
                raise
    finally:
        ctx.active.discard(key)
    return tuple(out)


def _encode_dataclass(obj: Any, ctx: Ctx) -> Any:
    return _encode_fields(tg.DATACLASS, obj, [f.name for f in dataclasses.fields(obj)], ctx)


def _decode_dataclass(x: tuple[Any, ...], trusted: bool) -> Any:
    cls = resolve_kind(x[1], x[2], trusted, "dataclass")
    names = {f.name for f in dataclasses.fields(cls)}
    obj = object.__new__(cls)
    items = x[3:]
    for i in range(0, len(items) - 1, 2):
        name = items[i]
        if name not in names:
            raise SerializationException(f"{x[1]}.{x[2]} has no field {name!r}")
        object.__setattr__(obj, name, decode(items[i + 1], trusted))
    return obj


def _encode_namedtuple(obj: Any, ctx: Ctx) -> Any:
    module, qualname = class_name(type(obj))
    key = ctx.enter(obj)
    out: list[Any] = [tg.NAMEDTUPLE, module, qualname]
    try:
        for name, value in zip(obj._fields, obj, strict=False):
            try:
                out.append(encode(value, ctx))
            except Refusal as refusal:
                refusal.path.append(f".{name}")
                raise
    finally:
        ctx.active.discard(key)
    return tuple(out)


def _decode_namedtuple(x: tuple[Any, ...], trusted: bool) -> Any:
    cls = resolve_kind(x[1], x[2], trusted, "namedtuple")
    return tuple.__new__(cls, [decode(v, trusted) for v in x[3:]])


def _encode_enum(obj: enum.Enum, ctx: Ctx) -> Any:
    module, qualname = class_name(type(obj))
    if isinstance(obj, enum.Flag):
        return (tg.ENUM, module, qualname, None, encode(obj.value, ctx))
    return (tg.ENUM, module, qualname, obj.name, None)


def _decode_enum(x: tuple[Any, ...], trusted: bool) -> enum.Enum:
    _, module, qualname, name, value = x
    cls: Any = resolve_kind(module, qualname, trusted, "enum")
    if name is None:
        return cls(decode(value, trusted))  # type: ignore[no-any-return]
    member = cls.__members__.get(name)
    if member is None:
        raise SerializationException(f"{module}.{qualname} has no member {name!r}")
    return member  # type: ignore[no-any-return]


def _encode_object(obj: Any, ctx: Ctx) -> Any:
    module, qualname = class_name(type(obj))
    key = ctx.enter(obj)
    try:
        return (tg.OBJECT, module, qualname, encode(obj.__getstate__(), ctx))
    except Refusal as refusal:
        refusal.path.append(".__getstate__()")
        raise
    finally:
        ctx.active.discard(key)


def _decode_object(x: tuple[Any, ...], trusted: bool) -> Any:
    cls: Any = resolve_kind(x[1], x[2], trusted, "object")
    obj = cls.__new__(cls)
    state = decode(x[3], trusted)
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return obj
    slots: Any = None
    if type(state) is tuple and len(state) == 2:
        state, slots = state
    if state:
        obj.__dict__.update(state)
    if slots:
        for name, value in slots.items():
            setattr(obj, name, value)
    return obj


add_rule(is_serializable, _encode_object)
add_rule(lambda c: issubclass(c, enum.Enum), _encode_enum)
add_rule(lambda c: dataclasses.is_dataclass(c), _encode_dataclass)
add_rule(lambda c: issubclass(c, tuple) and hasattr(c, "_fields"), _encode_namedtuple)
add_decoder(tg.OBJECT, _decode_object)
add_decoder(tg.ENUM, _decode_enum)
add_decoder(tg.DATACLASS, _decode_dataclass)
add_decoder(tg.NAMEDTUPLE, _decode_namedtuple)
