"""Turn values into shareable trees and back: dispatch, containers, refusals.

A tree is either a natively shareable scalar (None, bool, 64-bit int, float, str, bytes)
or a node: a tuple whose first item is a tag from ``_tags``. Every tuple in a tree is a
node, so decoding is driven by tags alone.
"""

from __future__ import annotations

import importlib
import marshal as _stdlib_marshal
import sys

from .._errors import SerializationException
from . import _tags as tg
from ._registry import find_reference_type, on_registry_change

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from collections.abc import Callable, Iterable
    from typing import Any

    from ._tags import Node, Shareable

__all__ = [
    "MAX_DEPTH",
    "Ctx",
    "Refusal",
    "decode",
    "decode_node",
    "decode_on_first_use",
    "encode",
    "refusal_error",
]

MIN64 = -(1 << 63)
MAX64 = (1 << 63) - 1
MAX_DEPTH = 200
NATIVE: frozenset[type] = frozenset({type(None), bool, float, str, bytes})
# bytes at least this large cross in-process as a view (tag BYTES_VIEW), not natively.
VIEW_MIN = 64 * 1024
# The receiver copies a view while the sender's buffer lives, so each such crossing has two
# large blocks alive at once; when both are freed, glibc finds twice the block free at the
# top of its heap, trims it (its threshold is twice the largest block freed), and the next
# call faults in both blocks afresh, 4 KiB at a time: a 1 MiB result cost ~5x the 1 MiB
# argument.  So this interpreter keeps the last bytes it sent as a view (up to KEEP_MAX) and
# frees it only once it sends the next one, which has been built by then: the new block
# reuses the space of the one before last, and the receiver's copy that of the last.  Kept
# up to 8 MiB, which bounds what an idle interpreter holds on to (glibc would keep reusing
# heap up to 32 MiB, its largest mmap threshold; larger bytes pay the faults as before).
KEEP_MAX = 8 << 20
_last_sent: list[bytes | None] = [None]
# Types CPython's marshal round-trips exactly (it refuses their subclasses).
LEAF: frozenset[type] = frozenset({type(None), bool, int, float, complex, str, bytes})
CONTAINERS: frozenset[type] = frozenset({tuple, list, dict, set, frozenset})
PLAIN: frozenset[type] = LEAF | CONTAINERS

NOT_CROSSABLE = (
    "cannot cross domains (not a primitive, buffer, container, dataclass, enum or "
    "@serializable type; make it a MarshalByRefObject to pass it by reference)"
)
SELF_REFERENCE = "refers to itself (a self-referencing structure cannot cross domains)"
TOO_DEEP = f"is nested more than {MAX_DEPTH} levels deep"


class Refusal(Exception):
    """Carry a refused value up the recursion, collecting its path on the way out."""

    def __init__(self, obj: object, reason: str) -> None:
        super().__init__(reason)
        self.obj = obj
        self.reason = reason
        self.path: list[str] = []


class Ctx:
    """Hold the state of one encoding: target (shareable or bytes) and the open containers."""

    __slots__ = ("active", "for_bytes")

    def __init__(self, for_bytes: bool = False) -> None:
        self.for_bytes = for_bytes
        self.active: set[int] = set()

    def enter(self, obj: object) -> int:
        """Note that ``obj`` is being encoded; refuse cycles and runaway nesting."""
        key = id(obj)
        if key in self.active:
            raise Refusal(obj, SELF_REFERENCE)
        if len(self.active) >= MAX_DEPTH:
            raise Refusal(obj, TOO_DEEP)
        self.active.add(key)
        return key


def short_repr(obj: object) -> str:
    """Return a repr that is never huge and never raises."""
    try:
        text = repr(obj)
    except Exception:
        text = object.__repr__(obj)
    return text if len(text) <= 200 else text[:197] + "..."


def refusal_error(where: str, refusal: Refusal) -> SerializationException:
    """Build the user-facing error: where, path, value, reason."""
    path = "".join(reversed(refusal.path))
    return SerializationException(f"{where}{path}: {short_repr(refusal.obj)} {refusal.reason}")


if TYPE_CHECKING:
    # The tables dispatch on the value's exact type and the node's tag, so each handler
    # takes the one type it is registered for and each decoder the one node shape its tag
    # has (FORMAT.md): the parameter is theirs to declare.
    Handler = Callable[[Any, Ctx], Shareable]
    Decoder = Callable[[Any, bool], object]

_builtin_handlers: dict[type, Handler] = {}
# Exact types of modules that may not be imported yet, by (module, name) where the module
# is imported from: an object of such a type only exists once its module is loaded, so
# an entry is looked up (and moved to _builtin_handlers) when a type misses the cache.
_lazy_builtins: dict[tuple[str, str], Handler] = {}
_rules: list[tuple[Callable[[type], bool], Handler]] = []
_handlers: dict[type, Handler] = {}
DECODERS: dict[Shareable, Decoder] = {}  # by tag, looked up with a node's first item


def add_builtin(cls: type, handler: Handler) -> None:
    """Encode exactly ``cls`` (not subclasses) with ``handler``."""
    _builtin_handlers[cls] = handler
    _handlers.clear()


def add_lazy_builtin(module: str, name: str, handler: Handler) -> None:
    """Encode exactly the class ``module.name`` with ``handler``, without importing module."""
    _lazy_builtins[(module, name)] = handler
    _handlers.clear()
    if module in sys.modules:
        _load_lazy_builtins(None)


def _load_lazy_builtins(cls: type | None) -> None:
    """Move the lazy entries whose module is imported (or is ``cls``'s) to the builtins."""
    for key in list(_lazy_builtins):
        module, name = key
        mod = sys.modules.get(module)
        if mod is None and cls is not None and key == (cls.__module__, cls.__qualname__):
            # The class exists, but its public module is not imported (its C accelerator
            # was imported directly): import it to compare the classes.
            try:
                mod = importlib.import_module(module)
            except Exception:
                continue
        target = getattr(mod, name, None) if mod is not None else None
        if isinstance(target, type):
            _builtin_handlers[target] = _lazy_builtins.pop(key)


def add_rule(predicate: Callable[[type], bool], handler: Handler) -> None:
    """Encode any type ``predicate`` accepts with ``handler`` (rules are tried in order)."""
    _rules.append((predicate, handler))
    _handlers.clear()


def add_decoder(tag: int, decoder: Decoder) -> None:
    """Decode nodes tagged ``tag`` with ``decoder(node, trusted)``."""
    DECODERS[tag] = decoder


def decode_on_first_use(tag: int, load: Callable[[], object], decoder: Decoder) -> None:
    """Decode ``tag`` with ``decoder``, calling ``load()`` (imports it needs) on first use."""

    def first(x: Node, trusted: bool) -> object:
        load()
        DECODERS[tag] = decoder
        return decoder(x, trusted)

    DECODERS[tag] = first


def _refuse(obj: object, ctx: Ctx) -> Shareable:
    raise Refusal(obj, NOT_CROSSABLE)


_reference_handler: list[Handler] = []


def _handler_for(cls: type) -> Handler:
    """Pick (and cache) the handler for a type: references, builtins, rules, refusal."""
    if find_reference_type(cls) is not None and _reference_handler:
        handler = _reference_handler[0]
    else:
        if _lazy_builtins:
            _load_lazy_builtins(cls)
        handler = _builtin_handlers.get(cls, _refuse)
        if handler is _refuse:
            for predicate, rule_handler in _rules:
                if predicate(cls):
                    handler = rule_handler
                    break
    _handlers[cls] = handler
    return handler


on_registry_change(_handlers.clear)


def set_reference_handler(handler: Handler) -> None:
    """Install the handler used for registered reference types."""
    _reference_handler[:] = [handler]
    _handlers.clear()


def encode(obj: Any, ctx: Ctx) -> Shareable:  # dispatched on its exact type
    """Encode one value as a tree (raise Refusal if some part cannot cross)."""
    t = type(obj)
    if t in NATIVE:
        if t is bytes and len(obj) >= VIEW_MIN and not ctx.for_bytes:
            # Crossing natively, large bytes cost ~1 ms per MiB from a subinterpreter
            # (CPython 3.13.0); as a view, one copy on the receiving side.
            if len(obj) <= KEEP_MAX:
                _last_sent[0] = obj  # see KEEP_MAX: the previous one is freed only now
            return (tg.BYTES_VIEW, memoryview(obj))
        native: Shareable = obj  # an exact type the queues share
        return native
    if t is int:
        if MIN64 <= obj <= MAX64:
            small: int = obj
            return small
        return (tg.BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True))
    handler = _handlers.get(t)
    if handler is None:
        handler = _handler_for(t)
    return handler(obj, ctx)


def encode_at(value: object, ctx: Ctx, step: str) -> Shareable:
    """Encode a part of a value; a refusal names step (a key, index or field) in its path."""
    try:
        return encode(value, ctx)
    except Refusal as refusal:
        refusal.path.append(step)
        raise


def decode(x: Shareable, trusted: bool = True) -> object:
    """Decode a tree back into a value."""
    if type(x) is not tuple:
        return x
    return DECODERS[x[0]](x, trusted)


def decode_node(x: Node, trusted: bool = True) -> object:
    """Decode a node (a tagged tuple), refusing unknown tags."""
    decoder = DECODERS.get(x[0]) if x else None
    if decoder is None:
        raise SerializationException(f"unknown node tag {x[0] if x else None!r} in marshalled data")
    return decoder(x, trusted)


# --- builtin containers -------------------------------------------------------------


def is_plain(obj: Iterable[object], depth: int = 0) -> bool:
    """Tell whether ``obj`` is a builtin-only tree CPython's marshal copies exactly.

    Bounded depth: a cycle or deep nesting makes it False, and the generic encoder then
    reports the problem with a path.
    """
    if depth > 8:
        return False
    if type(obj) is dict:
        return _plain_items(obj.keys(), depth) and _plain_items(obj.values(), depth)
    return _plain_items(obj, depth)


def _plain_items(items: Iterable[Any], depth: int) -> bool:  # containers and leaves
    types = set(map(type, items))
    if types <= LEAF:
        return True
    if not types <= PLAIN:
        return False
    return all(type(x) in LEAF or is_plain(x, depth + 1) for x in items)


def _encode_items(tag: int, obj: Iterable[object], ctx: Ctx) -> Node:
    key = ctx.enter(obj)
    out: list[Shareable] = [tag]
    i = 0
    try:
        for i, item in enumerate(obj):  # noqa: B007 - i names the failing item
            out.append(encode(item, ctx))
    except Refusal as refusal:
        refusal.path.append("{...}" if tag in (tg.SET, tg.FROZENSET) else f"[{i}]")
        raise
    finally:
        ctx.active.discard(key)
    return tuple(out)


def _container(tag: int) -> Handler:
    def handler(obj: tuple[Any, ...] | list[Any] | set[Any] | frozenset[Any], ctx: Ctx) -> Node:
        if not ctx.for_bytes and is_plain(obj):
            return (tg.MARSHAL, _stdlib_marshal.dumps(obj))
        return _encode_items(tag, obj, ctx)

    return handler


def _encode_dict(obj: dict[object, object], ctx: Ctx) -> Node:
    if not ctx.for_bytes and is_plain(obj):
        return (tg.MARSHAL, _stdlib_marshal.dumps(obj))
    key = ctx.enter(obj)
    out: list[Shareable] = [tg.DICT]
    try:
        for k, v in obj.items():
            out.append(encode_at(k, ctx, f"<key {short_repr(k)}>"))
            out.append(encode_at(v, ctx, f"[{short_repr(k)}]"))
    finally:
        ctx.active.discard(key)
    return tuple(out)


def _decode_items(x: Node, trusted: bool) -> list[object]:
    return [c if type(c) is not tuple else DECODERS[c[0]](c, trusted) for c in x[1:]]


def _decode_dict(x: Node, trusted: bool) -> dict[object, object]:
    items = _decode_items(x, trusted)
    if len(items) % 2:
        raise SerializationException("dict node has an odd number of items")
    return dict(zip(items[::2], items[1::2], strict=True))


def _decode_bigint(x: tuple[int, bytes], trusted: bool) -> int:
    return int.from_bytes(x[1], "little", signed=True)


def _decode_marshal(x: tuple[int, bytes], trusted: bool) -> object:
    if not trusted:
        raise SerializationException("in-process marshal node in untrusted data")
    return _stdlib_marshal.loads(x[1])


add_builtin(tuple, _container(tg.TUPLE))
add_builtin(list, _container(tg.LIST))
add_builtin(set, _container(tg.SET))
add_builtin(frozenset, _container(tg.FROZENSET))
add_builtin(dict, _encode_dict)
add_decoder(tg.BIGINT, _decode_bigint)
add_decoder(tg.TUPLE, lambda x, t: tuple(_decode_items(x, t)))
add_decoder(tg.LIST, _decode_items)
add_decoder(tg.SET, lambda x, t: set(_decode_items(x, t)))
add_decoder(tg.FROZENSET, lambda x, t: frozenset(_decode_items(x, t)))
add_decoder(tg.DICT, _decode_dict)
add_decoder(tg.MARSHAL, _decode_marshal)


def _decode_bytes_view(x: tuple[int, memoryview], trusted: bool) -> bytes:
    if not trusted or len(x) != 2:
        raise SerializationException("BYTES_VIEW nodes are for in-process traffic only")
    return bytes(x[1])


add_decoder(tg.BYTES_VIEW, _decode_bytes_view)
