"""Read the msgpack body of dumps() output into a tree, one ext payload at a time.

In dumps() output every node is an ExtType whose payload is a msgpack array of the node's
children. Unpacking each payload from inside msgpack's ext_hook would nest one unpacker per
level: msgpack's C unpacker keeps its parse stack (about 40 KiB) on the C stack, so a few
hundred levels overflow it (SIGSEGV, sooner in threads), and msgpack's own depth limit
starts afresh in every payload. So the hook here unpacks nothing: it returns a placeholder
(a "pending" ext value), and read_tree unpacks the placeholders level by level in a loop,
charging every level to one depth budget. msgpack's C stack use is then that of a single
payload, however deep the data nests.
"""

from __future__ import annotations

import sys

from .._errors import SerializationException
from . import _tags as tg
from ._limits import depth_error, native_depth, unpack_error

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from collections.abc import Callable
    from typing import Any

    from ._tags import Shareable

    # msgpack's unpackb: what it returns is the data's (scalars, tuples, dicts, pending).
    Unpackb = Callable[..., Any]
    # [code, payload] until the payload is unpacked, then [code, node] or [code, children].
    type Pending = list[Any]

__all__ = ["EXT_CODES", "read_tree"]

# Every tag but MARSHAL and BYTES_VIEW, which are for in-process traffic only.
EXT_CODES = frozenset(v for v in tg.NAMES if v not in (tg.MARSHAL, tg.BYTES_VIEW))
# First bytes of a msgpack array: fixarray, array 16, array 32.
ARRAY_STARTS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])


# A pending ext value is a list, [code, payload] until its payload is unpacked, then
# [code, node] (or [code, children] until its children's nodes are built). A list cannot
# be confused with a msgpack array: arrays are unpacked as tuples (use_list=False).
# What a node's children may be once unpacked: scalars and (pending) ext values.
ITEM_TYPES: frozenset[type] = frozenset({type(None), bool, int, float, str, bytes, list})


def read_tree(body: bytes | memoryview, max_depth: int, unpackb: Unpackb) -> Shareable:
    """Unpack ``body`` (one msgpack object) into a tree; refuse what breaks the limits.

    ``unpackb`` is msgpack's (C or pure Python: both work, and a subinterpreter only has
    the pure one). Raise SerializationException naming the limit and what the data holds.
    """
    found: list[Pending] = []  # the ext values met by the current unpackb call(s)

    def hook(code: int, data: bytes) -> Pending:
        if code not in EXT_CODES:
            raise SerializationException(f"data holds an unknown ext code {code}")
        pending: Pending = [code, data]
        found.append(pending)
        return pending

    data = body
    # Only the unpackb calls in here raise ValueError (msgpack's errors all are one; the
    # refusals here are SerializationExceptions, TypeErrors): it names ``data``'s limits.
    try:
        top = unpackb(
            data,
            ext_hook=hook,
            raw=False,
            use_list=False,
            strict_map_key=True,
            unicode_errors="surrogatepass",
        )
        if type(top) not in ITEM_TYPES:
            _refuse_item(top, "the top-level value", 0, max_depth)
        if not found:
            scalar: Shareable = top
            return scalar
        parents: list[Pending] = []
        level = found
        found = []
        depth = 0
        # Breadth first, so the budget is checked before a level's payloads are unpacked.
        while level:
            depth += 1
            if depth > max_depth:
                raise depth_error("ext values", max_depth)
            for pending in level:
                data = pending[1]
                if not data or data[0] not in ARRAY_STARTS:
                    raise SerializationException(
                        f"ext {_name(pending[0])} does not hold a list of values"
                    )
                items = unpackb(
                    data,
                    ext_hook=hook,
                    raw=False,
                    use_list=False,
                    strict_map_key=True,
                    unicode_errors="surrogatepass",
                )
                types = set(map(type, items))
                if not types <= ITEM_TYPES:
                    _refuse_items(items, pending[0], depth, max_depth)
                if list not in types:  # no ext children (most nodes): the node is ready
                    pending[1] = (pending[0], *items)
                else:
                    pending[1] = items
                    parents.append(pending)
            level = found
            found = []
    except ValueError as exc:
        raise unpack_error(exc, len(data), max_depth, sys.modules["msgpack"]) from None
    # Deepest first, so every child's node exists when its parent's is built.
    for pending in reversed(parents):
        pending[1] = (pending[0], *[c[1] if type(c) is list else c for c in pending[1]])
    tree: Shareable = top[1]
    return tree


def _refuse_items(items: tuple[object, ...], code: int, depth: int, limit: int) -> None:
    """Refuse the first child of an ext value that is not a tree value."""
    bad = next(c for c in items if type(c) not in ITEM_TYPES)
    _refuse_item(bad, f"a value of ext {_name(code)}", depth, limit)


def _refuse_item(value: object, where: str, depth: int, limit: int) -> None:
    """Refuse a value that is not a tree value: too deep, or a msgpack array/map at all."""
    if type(value) is tuple or type(value) is dict:
        if depth + native_depth(value, limit - depth) > limit:
            raise depth_error("msgpack arrays/maps and ext values", limit)
        kind = "array" if type(value) is tuple else "map"
        raise SerializationException(
            f"{where} is a msgpack {kind} (only scalars and ext values nest in this format)"
        )
    raise SerializationException(f"{where} is a {type(value).__name__}")


def _name(code: int) -> str:
    return tg.NAMES.get(code, str(code))
