"""Word the refusals of loads(): depth over budget, lengths past the data, bad msgpack."""

from __future__ import annotations

import re
from types import ModuleType

from .._errors import SerializationException

__all__ = ["depth_error", "native_depth", "unpack_error"]

# msgpack (C and pure Python alike) refuses a declared length over its limit (the size of
# the bytes being unpacked, half of it for maps) with this message, before allocating.
_OVER_LIMIT = re.compile(r"(-?\d+) exceeds max_(str|bin|array|map|ext)_len\((\d+)\)")
_UNITS = {"str": "bytes", "bin": "bytes", "ext": "bytes", "array": "items", "map": "pairs"}


def depth_error(what: str, limit: int) -> SerializationException:
    """Refuse data nesting ``what`` deeper than the depth budget."""
    return SerializationException(
        f"data nests {what} more than {limit} levels deep (limit max_depth={limit})"
    )


def native_depth(value: tuple[object, ...] | dict[object, object], budget: int) -> int:
    """Count the levels of msgpack arrays/maps in ``value`` (itself one), up to budget + 1."""
    depth, level = 0, [value]
    # Level by level, not recursively: msgpack may hand over ~1000 levels. Arrays are
    # tuples here (unpacked with use_list=False).
    while level and depth <= budget:
        depth += 1
        level = [
            c
            for v in level
            for c in (v.values() if type(v) is dict else v)
            if type(c) is tuple or type(c) is dict
        ]
    return depth


def unpack_error(
    exc: ValueError, size: int, max_depth: int, msgpack: ModuleType
) -> SerializationException:
    """Word msgpack's error for ``size`` bytes of bad data as a SerializationException."""
    if isinstance(exc, msgpack.StackError):
        # msgpack stops near 1000 levels (its C stack array, or Python's recursion limit).
        return SerializationException(
            "data nests msgpack arrays/maps deeper than msgpack can unpack "
            f"(limit max_depth={max_depth})"
        )
    if isinstance(exc, msgpack.ExtraData):
        return SerializationException(
            f"data has {len(exc.extra)} bytes after a msgpack value that ends early"
        )
    if isinstance(exc, msgpack.FormatError):
        return SerializationException(f"data holds a byte that starts no msgpack value ({exc})")
    text = str(exc)
    over = _OVER_LIMIT.search(text)
    if over is not None:
        declared, kind, limit = int(over[1]), over[2], int(over[3])
        # msgpack's C unpacker misreports some ext lengths (as 0): then say no number.
        found = f" of {declared} {_UNITS[kind]}" if declared > limit else ""
        return SerializationException(
            f"data declares a msgpack {kind}{found} in {size} bytes (limit max_{kind}_len={limit})"
        )
    if "incomplete input" in text:
        return SerializationException(
            f"data ends inside a msgpack value: it is cut short, or declares a length past "
            f"its {size} bytes (limit: the bytes that hold it, {size})"
        )
    return SerializationException(f"data is not valid msgpack ({type(exc).__name__}: {text})")
