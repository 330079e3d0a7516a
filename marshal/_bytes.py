"""Write values as self-contained bytes (msgpack + ExtType codes) and read them back safely."""

from __future__ import annotations

import _interpreters
import sys

from .._errors import SerializationException
from ._core import MAX_DEPTH, Ctx, Refusal, decode, encode, refusal_error
from ._reader import read_tree

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from ._tags import Shareable

__all__ = ["DEFAULT_MAX_SIZE", "HEADER", "dumps", "loads"]

MAGIC = 0xAD
VERSION = 1
ORDER = b"<" if sys.byteorder == "little" else b">"
HEADER = bytes([MAGIC, VERSION]) + ORDER
DEFAULT_MAX_SIZE = 64 * 1024 * 1024

# msgpack must be imported by the main interpreter before any subinterpreter imports it
# (CPython 3.13.0 aborts at exit otherwise), so the main interpreter imports it here; a
# subinterpreter imports it on its first dumps() or loads(), so a new domain does not pay
# for it.
if TYPE_CHECKING or _interpreters.get_current()[0] == _interpreters.get_main()[0]:
    import msgpack
else:
    msgpack = None


def _load_msgpack() -> None:
    global msgpack
    import msgpack


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(
        value, use_bin_type=True, unicode_errors="surrogatepass", strict_types=True
    )
    return packed


def _to_msgpack(x: Shareable, depth: int = 0) -> object:
    """Turn each node of a tree into an ExtType(tag, packed children)."""
    if type(x) is tuple:
        if depth >= MAX_DEPTH:
            # encode() counts containers only; a leaf node (a BIGINT, a datetime and its
            # tzinfo) under the deepest one would make bytes that loads() refuses.
            raise SerializationException(
                f"value is nested more than {MAX_DEPTH} levels deep as nodes (limit of "
                f"loads' max_depth={MAX_DEPTH})"
            )
        return msgpack.ExtType(x[0], _pack([_to_msgpack(c, depth + 1) for c in x[1:]]))
    if type(x) is memoryview:
        return x.tobytes()
    return x


def dumps(obj: object) -> bytes:
    """Serialize a value to bytes: a 3-byte header then one msgpack object.

    The header is 0xAD, the format version, and the writer's byte order (b"<" or b">").
    Raise SerializationException (naming the path) if some part cannot be serialized.
    """
    try:
        tree = encode(obj, Ctx(for_bytes=True))
    except Refusal as refusal:
        raise refusal_error("value", refusal) from None
    if msgpack is None:
        _load_msgpack()
    return HEADER + _pack(_to_msgpack(tree))


def loads(
    data: bytes | bytearray | memoryview,
    *,
    trusted: bool = True,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = MAX_DEPTH,
) -> object:
    """Deserialize bytes made by dumps(); any bad input raises SerializationException.

    With ``trusted=False`` classes are only looked up in modules already imported (nothing
    is imported on the data's say-so). Either way ``max_size`` bounds the input length,
    ``max_depth`` the nesting of ext values and msgpack arrays/maps (one budget for the
    whole input), and no declared length may run past the bytes that hold it.
    """
    try:
        view = memoryview(data)
    except TypeError:
        raise SerializationException(
            f"'data' must be bytes (got {short(data)} that is a {type(data).__name__})"
        ) from None
    if view.nbytes > max_size:
        raise SerializationException(f"data is {view.nbytes} bytes, over max_size={max_size}")
    if view.nbytes < len(HEADER) or view[0] != MAGIC:
        raise SerializationException("data is not appdomain marshal output (bad header)")
    if view[1] != VERSION or bytes(view[2:3]) not in (b"<", b">"):
        raise SerializationException(f"unsupported marshal format version {view[1]}")
    if msgpack is None:
        _load_msgpack()
    try:
        tree = read_tree(view[len(HEADER) :], max_depth, msgpack.unpackb)
        return decode(tree, trusted)
    except SerializationException:
        raise
    except Exception as exc:  # corrupt data must never leak other error types
        raise SerializationException(
            f"corrupt marshalled data: {type(exc).__name__}: {exc}"
        ) from exc


def short(value: object) -> str:
    """Return a short repr for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
