"""Encode and decode the non-container value types: buffers, dates, enums, dataclasses.

Nothing here imports datetime, decimal, uuid, zoneinfo, pathlib, enum or dataclasses up
front (a new domain imports this module, and must start fast): an encoder is registered
by its type's module and name and found when such an object is first encoded (its module
is imported by then), and a decoder imports its module the first time its tag is seen.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .._errors import SerializationException
from . import _tags as tg
from ._core import (
    Ctx,
    Refusal,
    add_builtin,
    add_decoder,
    add_lazy_builtin,
    add_rule,
    decode,
    decode_on_first_use,
    encode,
    encode_at,
    set_reference_handler,
)
from ._markers import Ref, is_serializable
from ._registry import (
    ReferenceType,
    find_reference_type,
    on_registry_change,
    reference_by_key,
    resolve,
    wire_module,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    import array  # with collections.abc, ~1.5 ms: loaded when an array crosses
    import datetime as dt
    import decimal
    import enum
    import pathlib
    import uuid
    import zoneinfo
    from collections.abc import Callable, Iterator
    from dataclasses import Field
    from typing import Any, Protocol

    from ._tags import Node, Shareable

    class NamedTupleLike(Protocol):
        """A named tuple: its field names and its values, in order."""

        _fields: tuple[str, ...]

        def __iter__(self) -> Iterator[object]: ...


__all__ = ["ZERO_COPY_MIN", "class_name", "resolve_kind"]

# Buffers at least this big cross as a memoryview of the sender's memory (zero copy, the
# receiver makes the one copy); smaller ones are copied to bytes, so the sender's object
# is not export-locked (unresizable) while the message is alive.
ZERO_COPY_MIN = 64 * 1024
ORDER = "<" if sys.byteorder == "little" else ">"
# Formats memoryview.cast() accepts (native single-character struct codes).
CAST_FORMATS = frozenset("bBhHiIlLqQfd?cenNP")
PATH_NAMES = ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath")
# Filled with pathlib's classes by name the first time a path is decoded.
PATH_TYPES: dict[str, type[pathlib.PurePath]] = {}


def _module(name: str) -> ModuleType:
    """Return an imported module, importing it first if needed."""
    mod = sys.modules.get(name)
    return mod if mod is not None else importlib.import_module(name)


def _is_enum(cls: type) -> bool:
    mod = sys.modules.get("enum")  # no Enum class exists before enum is imported
    return mod is not None and issubclass(cls, mod.Enum)


def _is_dataclass(cls: type) -> bool:
    # dataclasses.is_dataclass(cls), without importing dataclasses to ask.
    return hasattr(cls, "__dataclass_fields__")


def _is_namedtuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


def _fields(class_or_instance: object) -> tuple[Field[object], ...]:
    fields: tuple[Field[object], ...] = _module("dataclasses").fields(class_or_instance)
    return fields


def class_name(cls: type) -> tuple[str, str]:
    """Return (wire module, qualname) for a class, refusing function-local classes."""
    if "<locals>" in cls.__qualname__:
        raise Refusal(
            cls,
            f"is defined inside a function (qualname {cls.__qualname__!r}), so it cannot be "
            "found by name in another domain",
        )
    return wire_module(cls.__module__), cls.__qualname__


def resolve_kind(module: str, qualname: str, trusted: bool, kind: str) -> type:
    """Resolve a class and check it is the kind the node claims; raise SerializationException."""
    try:
        cls = resolve(module, qualname, trusted)
    except LookupError as exc:
        raise SerializationException(f"cannot rebuild {module}.{qualname}: {exc}") from None
    checks: dict[str, Callable[[type], bool]] = {
        "enum": _is_enum,
        "dataclass": _is_dataclass,
        "namedtuple": _is_namedtuple,
        "object": is_serializable,
        "exception": lambda c: issubclass(c, BaseException),
    }
    ok = checks[kind](cls)
    if not ok:
        raise SerializationException(f"{module}.{qualname} is not a {kind} type here")
    return cls


# --- buffers ------------------------------------------------------------------------


def _payload(view: memoryview, ctx: Ctx) -> bytes | memoryview:
    if not ctx.for_bytes and view.nbytes >= ZERO_COPY_MIN and view.c_contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return view.tobytes()


def _encode_bytearray(obj: bytearray, ctx: Ctx) -> Node:
    return (tg.BYTEARRAY, _payload(memoryview(obj), ctx))


def _encode_array(obj: array.array[int] | array.array[float] | array.array[str], ctx: Ctx) -> Node:
    return (tg.ARRAY, obj.typecode, ORDER, _payload(memoryview(obj), ctx))


def _encode_memoryview(obj: memoryview, ctx: Ctx) -> Node:
    fmt = obj.format.lstrip("@")
    if fmt not in CAST_FORMATS:
        raise Refusal(obj, f"has format {obj.format!r}, which cannot be rebuilt in another domain")
    shape = (tg.TUPLE, *(obj.shape or ()))
    return (tg.MEMORYVIEW, fmt, ORDER, shape, obj.readonly, _payload(obj, ctx))


def _buffer(value: object) -> bytes | memoryview:
    """Check that a node's buffer is bytes (or, in-process, a view).

    bytearray(n) and bytes(n) would allocate n zero bytes for an int: 12 bytes of data
    could ask for gigabytes.
    """
    if type(value) is bytes or type(value) is memoryview:
        return value
    raise SerializationException(f"expected bytes in marshalled data (got {type(value).__name__})")


def _decode_array(
    x: tuple[int, str, str, Shareable], trusted: bool
) -> array.array[int] | array.array[float] | array.array[str]:
    import array

    _, typecode, order, data = x
    out = array.array(typecode)
    out.frombytes(_buffer(data))
    if order != ORDER:
        out.byteswap()
    return out


# Loosely typed: fmt is checked against CAST_FORMATS (memoryview.cast wants Literals).
def _decode_memoryview(x: tuple[Any, ...], trusted: bool) -> memoryview:
    _, fmt, order, shape, readonly, data = x
    if fmt not in CAST_FORMATS or order not in ("<", ">"):
        raise SerializationException(f"bad memoryview format {fmt!r}/{order!r}")
    import struct

    buf = bytearray(_buffer(data))
    width = struct.calcsize(fmt)
    if order != ORDER and width > 1:
        swapped = bytearray(len(buf))
        for i in range(width):
            swapped[i::width] = buf[width - 1 - i :: width]
        buf = swapped
    view = memoryview(bytes(buf) if readonly else buf)
    dims: Any = decode(shape, trusted)  # a tuple of ints in well-formed data
    dims = list(dims)
    return view.cast(fmt, dims) if dims else view.cast(fmt)


add_builtin(bytearray, _encode_bytearray)
add_lazy_builtin("array", "array", _encode_array)
add_builtin(memoryview, _encode_memoryview)
add_decoder(tg.BYTEARRAY, lambda x, t: bytearray(_buffer(x[1])))
add_decoder(tg.ARRAY, _decode_array)
add_decoder(tg.MEMORYVIEW, _decode_memoryview)

# --- numbers, dates, identifiers, paths ------------------------------------------------

add_builtin(complex, lambda o, c: (tg.COMPLEX, o.real, o.imag))
add_decoder(tg.COMPLEX, lambda x, t: complex(float(x[1]), float(x[2])))
add_lazy_builtin("decimal", "Decimal", lambda o, c: (tg.DECIMAL, str(o)))
add_lazy_builtin("uuid", "UUID", lambda o, c: (tg.UUID, o.bytes))


def _load_decimal() -> None:
    global decimal
    import decimal


def _load_uuid() -> None:
    global uuid
    import uuid


def _load_datetime() -> None:
    global dt
    import datetime as dt


def _load_zoneinfo() -> None:
    global zoneinfo
    import zoneinfo


def _load_pathlib() -> None:
    import pathlib

    PATH_TYPES.update((name, getattr(pathlib, name)) for name in PATH_NAMES)


decode_on_first_use(tg.DECIMAL, _load_decimal, lambda x, t: decimal.Decimal(_str(x[1])))
decode_on_first_use(tg.UUID, _load_uuid, lambda x, t: uuid.UUID(bytes=bytes(_buffer(x[1]))))


def _str(value: object) -> str:
    if type(value) is str:
        return value
    raise SerializationException(f"expected a str in marshalled data (got {type(value).__name__})")


def _encode_tz(obj: dt.tzinfo | None, ctx: Ctx) -> Shareable:
    try:
        return encode(obj, ctx)
    except Refusal as refusal:
        refusal.path.append(".tzinfo")
        raise


def _encode_datetime(o: dt.datetime, ctx: Ctx) -> Node:
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


def _encode_time(o: dt.time, ctx: Ctx) -> Node:
    return (tg.TIME, o.hour, o.minute, o.second, o.microsecond, o.fold, _encode_tz(o.tzinfo, ctx))


def _decode_datetime(
    x: tuple[int, int, int, int, int, int, int, int, int, Shareable], trusted: bool
) -> dt.datetime:
    _, y, mo, d, h, mi, s, us, fold, tz = x
    return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tzinfo(tz, trusted), fold=fold)


def _decode_time(x: tuple[int, int, int, int, int, int, Shareable], trusted: bool) -> dt.time:
    _, h, mi, s, us, fold, tz = x
    return dt.time(h, mi, s, us, tzinfo=_tzinfo(tz, trusted), fold=fold)


def _tzinfo(tz: Shareable, trusted: bool) -> dt.tzinfo | None:
    value = decode(tz, trusted)
    if value is not None and not isinstance(value, dt.tzinfo):
        raise SerializationException(f"tzinfo must be a tzinfo (got {type(value).__name__})")
    return value


def _encode_timezone(o: dt.timezone, ctx: Ctx) -> Node:
    args = o.__getinitargs__()  # type: ignore[attr-defined]
    delta: dt.timedelta = args[0]
    name = args[1] if len(args) > 1 else None
    return (tg.TIMEZONE, delta.days, delta.seconds, delta.microseconds, name)


def _decode_timezone(x: tuple[int, int, int, int, Shareable], trusted: bool) -> dt.timezone:
    _, days, seconds, us, name = x
    delta = dt.timedelta(days, seconds, us)
    return dt.timezone(delta) if name is None else dt.timezone(delta, _str(name))


add_lazy_builtin("datetime", "datetime", _encode_datetime)
add_lazy_builtin("datetime", "date", lambda o, c: (tg.DATE, o.year, o.month, o.day))
add_lazy_builtin("datetime", "time", _encode_time)
add_lazy_builtin(
    "datetime", "timedelta", lambda o, c: (tg.TIMEDELTA, o.days, o.seconds, o.microseconds)
)
add_lazy_builtin("datetime", "timezone", _encode_timezone)
add_lazy_builtin("zoneinfo", "ZoneInfo", lambda o, c: (tg.ZONEINFO, o.key))
decode_on_first_use(tg.DATETIME, _load_datetime, _decode_datetime)
decode_on_first_use(tg.DATE, _load_datetime, lambda x, t: dt.date(x[1], x[2], x[3]))
decode_on_first_use(tg.TIME, _load_datetime, _decode_time)
decode_on_first_use(tg.TIMEDELTA, _load_datetime, lambda x, t: dt.timedelta(x[1], x[2], x[3]))
decode_on_first_use(tg.TIMEZONE, _load_datetime, _decode_timezone)
decode_on_first_use(tg.ZONEINFO, _load_zoneinfo, lambda x, t: zoneinfo.ZoneInfo(_str(x[1])))


def _decode_path(x: tuple[int, str, Shareable], trusted: bool) -> pathlib.PurePath:
    cls = PATH_TYPES.get(x[1])
    if cls is None:
        raise SerializationException(f"unknown path type {x[1]!r}")
    return cls(_str(x[2]))


for _path_name in PATH_NAMES:
    add_lazy_builtin("pathlib", _path_name, lambda o, c: (tg.PATH, type(o).__name__, str(o)))
decode_on_first_use(tg.PATH, _load_pathlib, _decode_path)

# --- Ref boxes and reference types --------------------------------------------------------


def _encode_ref(obj: Ref[object], ctx: Ctx) -> Node:
    key = ctx.enter(obj)  # a Ref holding a Ref ... nests like a container
    try:
        return (tg.REFBOX, encode(obj.value, ctx))
    except Refusal as refusal:
        refusal.path.append(".value")
        raise
    finally:
        ctx.active.discard(key)


# type -> the reference type it falls under (a by-reference argument's type is met again and
# again: one lookup instead of a walk over the registrations).
_reference_of: dict[type, ReferenceType] = {}
on_registry_change(_reference_of.clear)


def _encode_reference(obj: object, ctx: Ctx) -> Node:
    ref = _reference_of.get(type(obj))
    if ref is None:
        ref = find_reference_type(type(obj))
        assert ref is not None  # the dispatcher only sends registered types here
        _reference_of[type(obj)] = ref
    payload = ref.reduce(obj)
    if type(payload) is not tuple:
        raise Refusal(obj, f"was reduced by {ref.key} to a {type(payload).__name__}, not a tuple")
    if ctx.for_bytes:
        return (tg.REFERENCE, ref.key, True, encode(payload, ctx))
    return (tg.REFERENCE, ref.key, False, payload)


def _decode_reference(x: tuple[int, Shareable, bool, Shareable], trusted: bool) -> object:
    _, key, encoded, payload = x
    ref = reference_by_key(_str(key), trusted)
    if ref is None:
        raise SerializationException(
            f"no reference type {key!r} is registered in this domain"
            + ("" if trusted else " (untrusted data cannot import its module)")
        )
    return ref.rebuild(decode(payload, trusted) if encoded else payload)


add_builtin(Ref, _encode_ref)
add_decoder(tg.REFBOX, lambda x, t: Ref(decode(x[1], t)))
set_reference_handler(_encode_reference)
add_decoder(tg.REFERENCE, _decode_reference)

# --- user types: @serializable, enums, dataclasses, named tuples ---------------------------


def _encode_fields(tag: int, obj: object, names: list[str], ctx: Ctx) -> Node:
    module, qualname = class_name(type(obj))
    key = ctx.enter(obj)
    out: list[Shareable] = [tag, module, qualname]
    try:
        for name in names:
            out.append(name)
            out.append(encode_at(getattr(obj, name), ctx, f".{name}"))
    finally:
        ctx.active.discard(key)
    return tuple(out)


def _encode_dataclass(obj: object, ctx: Ctx) -> Node:
    return _encode_fields(tg.DATACLASS, obj, [f.name for f in _fields(obj)], ctx)


def _decode_dataclass(x: tuple[int, str, str, *tuple[Shareable, ...]], trusted: bool) -> object:
    cls = resolve_kind(x[1], x[2], trusted, "dataclass")
    names = {f.name for f in _fields(cls)}
    obj: object = object.__new__(cls)
    items = x[3:]
    for i in range(0, len(items) - 1, 2):
        name = items[i]
        if name not in names:
            raise SerializationException(f"{x[1]}.{x[2]} has no field {name!r}")
        object.__setattr__(obj, name, decode(items[i + 1], trusted))
    return obj


def _encode_namedtuple(obj: NamedTupleLike, ctx: Ctx) -> Node:
    module, qualname = class_name(type(obj))
    key = ctx.enter(obj)
    out: list[Shareable] = [tg.NAMEDTUPLE, module, qualname]
    try:
        for name, value in zip(obj._fields, obj, strict=False):
            out.append(encode_at(value, ctx, f".{name}"))
    finally:
        ctx.active.discard(key)
    return tuple(out)


def _decode_namedtuple(x: tuple[int, str, str, *tuple[Shareable, ...]], trusted: bool) -> object:
    cls = resolve_kind(x[1], x[2], trusted, "namedtuple")
    return tuple.__new__(cls, [decode(v, trusted) for v in x[3:]])


def _encode_enum(obj: enum.Enum, ctx: Ctx) -> Node:
    module, qualname = class_name(type(obj))
    if isinstance(obj, _module("enum").Flag):
        return (tg.ENUM, module, qualname, None, encode(obj.value, ctx))
    return (tg.ENUM, module, qualname, obj.name, None)


def _decode_enum(x: tuple[int, str, str, str | None, Shareable], trusted: bool) -> enum.Enum:
    _, module, qualname, name, value = x
    cls: type[enum.Enum] = resolve_kind(module, qualname, trusted, "enum")
    if name is None:
        return cls(decode(value, trusted))
    member = cls.__members__.get(name)
    if member is None:
        raise SerializationException(f"{module}.{qualname} has no member {name!r}")
    return member


def _encode_object(obj: object, ctx: Ctx) -> Node:
    module, qualname = class_name(type(obj))
    key = ctx.enter(obj)
    try:
        return (tg.OBJECT, module, qualname, encode(obj.__getstate__(), ctx))
    except Refusal as refusal:
        refusal.path.append(".__getstate__()")
        raise
    finally:
        ctx.active.discard(key)


def _decode_object(x: tuple[int, str, str, Shareable], trusted: bool) -> object:
    cls: Any = resolve_kind(x[1], x[2], trusted, "object")  # its own __new__, __setstate__
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
add_rule(_is_enum, _encode_enum)
add_rule(_is_dataclass, _encode_dataclass)
add_rule(_is_namedtuple, _encode_namedtuple)
add_decoder(tg.OBJECT, _decode_object)
add_decoder(tg.ENUM, _decode_enum)
add_decoder(tg.DATACLASS, _decode_dataclass)
add_decoder(tg.NAMEDTUPLE, _decode_namedtuple)
