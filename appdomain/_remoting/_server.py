"""Serve remote objects: create them, run their members, and track who references them."""

from __future__ import annotations

import itertools
import os
import sys
import types

from .. import _core
from .._core import Route, _compat, _context
from .._core._foreign import PROCESS_KEY, known_route, origin_of, set_resolver
from .._domains import _runtime
from .._errors import SerializationException
from ..marshal import (
    decode_call,
    encode_reply,
    from_shareable,
    is_serializable,
    plan_for,
    register_reference_type,
    to_shareable,
)
from . import _table
from ._base import MarshalByRefObject, is_one_way
from ._methods import REF, RemoteRef, ref_of
from ._proxy import (
    _CELL,
    _LEAN_REF,
    _Entry,
    _lean_classes,
    _on_gone,
    _proxies,
    _returned_types,
    is_transparent_proxy,
    lean_proxy,
    live_proxies,
    proxy_for,
    settle_lean,
)
from ._release import arm as _arm_owner
from ._release import release as _release_at_owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from .._core._serve import OpHandler
    from .._core._wire import NativeReply, Shareable
    from ..marshal import CallPlan

__all__ = ["install", "live_count"]


def _find_type(module: types.ModuleType, type_name: str) -> type:
    target: object = module
    for part in type_name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise TypeError(
                f"module {getattr(module, '__name__', module)!r} has no type {type_name!r}"
            ) from None
    if not isinstance(target, type):
        raise TypeError(f"{type_name!r} must name a class (got {target!r})")
    return target


def _instantiate(cls: type, wire_args: Shareable) -> Shareable:
    if not (issubclass(cls, MarshalByRefObject) or _by_value(cls)):
        # As .NET: only MarshalByRefObject types come back by reference, serializable by copy.
        raise SerializationException(
            f"type {cls.__module__}.{cls.__qualname__} can cross domains neither by reference "
            "(it does not derive from MarshalByRefObject) nor by value (it is not a "
            "dataclass, enum or @serializable type)"
        )
    args, kwargs = decode_call(wire_args)
    obj = cls(*args, **kwargs)
    wire: Shareable = to_shareable(obj, name="created instance")
    return wire


def _by_value(cls: type) -> bool:
    import dataclasses
    import enum

    return is_serializable(cls) or dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)


def _op_create(payload: tuple[str, str, Shareable]) -> Shareable:
    module_name, type_name, wire_args = payload
    return _instantiate(_find_type(_runtime.load_module(module_name), type_name), wire_args)


def _op_create_from(payload: tuple[str, str, Shareable]) -> Shareable:
    path, type_name, wire_args = payload
    return _instantiate(_find_type(_load_path(path), type_name), wire_args)


def _load_path(path: str) -> types.ModuleType:
    """Import a file by path under its stem, its folder on sys.path (as CreateInstanceFrom)."""
    folder, filename = os.path.split(path)
    name = os.path.splitext(filename)[0]
    module = sys.modules.get(name)
    if module is not None and os.path.abspath(getattr(module, "__file__", "") or "") == path:
        return module
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return _runtime.exec_module_from_file(name, path)


# (type, method name) -> plan: saves a signature lookup per call.
_plans: dict[tuple[type, str], CallPlan | None] = {}


def _op_invoke(payload: tuple[int, str, Shareable]) -> Shareable:
    oid, name, wire_args = payload
    obj = _table.lookup(oid)
    method = getattr(obj, name)
    args, kwargs = decode_call(wire_args)
    result = method(*args, **kwargs)
    key = (type(obj), name)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = plan_for(method)
    reply: Shareable = encode_reply(result, args, kwargs, plan)
    return reply


def _invoke_lean(oid: int, name: str, args: tuple[object, ...]) -> NativeReply:
    """Serve a lean native invoke (plain arguments, no call context) without the generic layers.

    References among the arguments are objects already (the C switch made them).
    """
    # Releases are not drained here: each one also wakes this domain's dispatcher, which
    # drains them, and the generic route drains before every call.
    ident, nested = _enter_call()
    try:
        if _state.unloading:
            raise _core.unloaded(_core.CURRENT_INTERP, "is being unloaded")
        entry = _entries.get(oid)
        if entry is not None:
            # Leased objects take lookup(), which renews or explains.
            target = entry.obj if entry.lease is None else _table.lookup(oid)
        else:  # lent to a lean call in flight (a callback through it), or unknown
            target = _lent.get(oid)
            if target is None or type(target) is tuple:  # lookup() explains, or unpacks
                target = _table.lookup(oid)
        result = getattr(target, name)(*args)
    except BaseException as exc:  # every error goes back to the caller
        return (False, _core.encode_failure(exc), None)
    finally:
        _leave_call(ident, nested)
    ctx_back = None
    if _logical_data.get() is not None:
        ctx_back = _context.capture()  # the callee set logical data: it flows back
        _context.clear()
    kind = type(result)
    if kind in _PLAIN or (kind is int and -(1 << 63) <= result < (1 << 63)):
        return (True, result, ctx_back)
    # A new reference to an object of this domain: its caller makes (or finds) a proxy,
    # on the route it called by (oid, module, qualname).
    info = _lean_types.get(kind)  # never a proxy type: _learn sees objects of this domain
    if info is not None:
        # The type named in full once per caller, then by its token (_proxy._returned_names);
        # exported in C, or by _table for an object with a lease to ask for.
        reply = _lean_ref(result, info, ctx_back, None)
        if reply is None:
            reply = _lean_ref(result, info, ctx_back, _table.export(result))
        if reply is not None:
            return reply
    if isinstance(result, MarshalByRefObject) and not is_transparent_proxy(result):
        reduced = _reduce_here(result)
        _learn(kind, reduced)
        return (_LEAN_REF, reduced[4:], ctx_back)
    return (False, encode_reply(result, args, {}, None), ctx_back)


# How the C switch makes a lean call's new proxy itself (_native/refs.c make_proxy), as
# lean_proxy does, once lean_proxy has met its type.
# The same tuple lets it make the proxy of a reference a lean call returns, and release a
# dead proxy's references (_native/method.c adopt_ref, table.c proxy_gone).
# Its tenth item keeps, for each type lent to this domain, the Route and names its full form
# came with, so that later calls send a compact one (_native/invoke.c lend, refs.c
# ref_parts); its last the types lean calls returned here (_proxy._returned_names).
_kept_refs: dict[tuple[int, int], tuple[Route, tuple[str, str]]] = {}
_fast = (
    *(_lean_classes, RemoteRef, Route, _Entry, _on_gone, REF, "key", _CELL, "cell"),
    *(_kept_refs, _returned_types),
)


def _home(oid: int) -> object:
    """The object of this domain a lean call's reference names (it comes home)."""
    return _table.lookup(oid, renew=False)


def _ref_out(obj: object, target: int) -> tuple[Shareable, ...] | None:
    """Say how obj crosses by reference in a lean call into domain target (caller side).

    The reference counts for the call only (_ref_done gives it back): the callee counts
    one of its own if it keeps a proxy.  None: the generic route (a proxy to a third
    domain's object, counted at its owner before it crosses).
    """
    if is_transparent_proxy(obj):
        ref = ref_of(obj)
        if ref.route.interp_id == target:
            return (ref.oid,)  # going home: this domain's proxy keeps it alive meanwhile
        return None
    reduced = _reduce_here(obj)
    _learn(type(obj), reduced)
    return reduced


def _reduce_here(obj: object) -> tuple[Shareable, ...]:
    """Reduce an object of this domain for a lean call: (*route, oid, module, qualname).

    Lean calls stay within this process, so the process key _reduce starts with is left out.
    """
    return _reduce(obj)[1:]


def _learn(cls: type, reduced: tuple[Shareable, ...]) -> None:
    """From now on the C switch lends such objects itself: (*route, module, qualname, token)."""
    _lean_types[cls] = (*reduced[:4], *reduced[5:], next(_tokens))


# Types whose instances the C switch lends to lean calls: type -> (*route, module, qualname,
# token); the token names the type in compact references to a domain sent it in full.
_lean_types: dict[type, tuple[Shareable, ...]] = {}
_tokens = itertools.count(1)


def _no_lean_ref(obj: object, info: tuple[Shareable, ...], ctx: object, oid: int | None) -> None:
    """Leave every export to _table (no C switch)."""


def _op_type_names(token: int) -> tuple[str, str]:
    """Name the type a token stands for in lean replies: (module, qualname)."""
    for info in list(_lean_types.values()):
        if info[6] == token:
            return (info[4], info[5])  # type: ignore[return-value]
    raise LookupError(f"no type of this domain has the token {token!r}")


def _ref_done(refs: list[tuple[Shareable, ...]]) -> None:
    """A lean call is over: give back the references counted for it (caller side)."""
    for ref in refs:
        if len(ref) > 1:
            oid: Any = ref[4]
            _table.release(oid, 1)


_PLAIN = frozenset({type(None), bool, float, str, bytes})
_entries = _table._entries
_lent = _table._lent
_new_tuple = tuple.__new__
_logical_data = _context._data  # the call context's variable: None when it carries nothing
_state = _core.state
_enter_call = _core.enter_call
# Lean calls come with the C switch: install() sets it.
_lean_ref: Callable[[object, tuple[Shareable, ...], object, int | None], NativeReply | None]
_lean_ref = _no_lean_ref
_leave_call = _core.leave_call


def _op_getattr(payload: tuple[int, str]) -> tuple[str, Shareable]:
    oid, name = payload
    obj = _table.lookup(oid)
    value = getattr(obj, name)
    if isinstance(value, types.MethodType) and value.__self__ is obj:
        return ("method", is_one_way(value))
    return ("value", to_shareable(value, name=f"attribute {name!r}"))


def _op_setattr(payload: tuple[int, str, Shareable]) -> None:
    oid, name, wire = payload
    setattr(_table.lookup(oid), name, from_shareable(wire))


def _op_delattr(payload: tuple[int, str]) -> None:
    oid, name = payload
    delattr(_table.lookup(oid), name)


_iterators: dict[int, Iterator[object]] = {}
_iterator_ids = itertools.count(1)


def _chunk(iterator: Iterator[object], size: int) -> tuple[list[object], bool]:
    items = list(itertools.islice(iterator, size))
    return items, len(items) < size


def _op_iter(payload: tuple[int, int]) -> tuple[int, Shareable, bool]:
    oid, size = payload
    iterator = iter(_table.lookup(oid))
    items, done = _chunk(iterator, size)
    iterator_id = 0
    if not done:
        iterator_id = next(_iterator_ids)
        _iterators[iterator_id] = iterator
    return iterator_id, to_shareable(items, name="iterated items"), done


def _op_iter_next(payload: tuple[int, int]) -> tuple[Shareable, bool]:
    iterator_id, size = payload
    items, done = _chunk(_iterators[iterator_id], size)
    if done:
        del _iterators[iterator_id]
    return to_shareable(items, name="iterated items"), done


def _op_iter_close(iterator_id: int) -> None:
    _iterators.pop(iterator_id, None)


def _op_exit(payload: tuple[int, Shareable]) -> Shareable:
    oid, wire = payload
    exc = from_shareable(wire) if wire is not None else None
    result = _table.lookup(oid).__exit__(type(exc) if exc is not None else None, exc, None)
    reply: Shareable = to_shareable(result, name="__exit__ result")
    return reply


def _op_incref(oid: int) -> None:
    _table.incref(oid)


def live_count() -> int:
    """Return how many objects of this domain other domains hold references to.

    Releases already queued by dead proxies elsewhere count as done: their owner's wake may
    still be on its way (see _release).
    """
    _core.drain_releases()  # nothing to drain before this domain's route exists
    return _table.live_count()


def _op_live_count(_: None) -> int:
    return live_count()


def _drain_releases(release_queue: int) -> None:
    if _apply_native is not None:
        flat = _apply_native()  # those the C switch queued, applied in C
        if flat is not None:  # the table's lock was busy
            _table.release_many(flat)
    # As many as are queued now (a later one waits for the next drain): an empty get raises,
    # and raising costs more than a release.
    try:
        waiting = _compat.queue_count(release_queue)
    except _compat.QueueNotFoundError:
        return
    for _ in range(waiting):
        try:
            item = _compat.queue_get(release_queue)
        except (_compat.QueueEmpty, _compat.QueueNotFoundError):
            return
        if type(item) is int:  # one reference (see _release.release)
            _table.release(item, 1)
        else:
            _table.release(*item)


# The C switch's queue of releases for this domain (apply_releases), when it is loaded.
_apply_native: Callable[[], list[int] | None] | None = None


# -- references crossing domains --------------------------------------------------------------


def _reduce(obj: object) -> tuple[Shareable, ...]:
    # A reference names its domain by origin (process key, route there): route numbers mean
    # something only in their own process, and the reference may be on its way to another.
    if is_transparent_proxy(obj):
        ref = ref_of(obj)
        if ref.route.interp_id != _core.CURRENT_INTERP:
            # The receiver will hold its own reference: count it at the owner first.
            _core.call(ref.route, f"{__package__}:incref", ref.oid)
        key, origin = origin_of(ref.route)
        return (key, *origin, ref.oid, ref.module, ref.qualname)
    route = _runtime.ensure_started()
    oid = _table.export(obj)
    cls = type(obj)
    return (PROCESS_KEY, *route, oid, _runtime.wire_module(cls.__module__), cls.__qualname__)


# The tuple _reduce made: (process key, *route there, oid, module, qualname).
def _rebuild(data: tuple[str, int, int, str, int, int, str, str]) -> object:
    if data[0] == PROCESS_KEY:
        route = _new_tuple(Route, data[1:5])  # known_route's first case, without the calls
    else:
        route = known_route(data[0], (data[1], data[2], data[3], data[4]))
    oid = data[5]
    if route[0] == _core.CURRENT_INTERP:
        # A reference coming home is the object itself; give back the count it carried.
        obj = _table.lookup(oid, renew=False)
        _table.release(oid, 1)
        return obj
    return proxy_for(_new_tuple(RemoteRef, (route, oid, data[6], data[7])))


# The hosts layer's operation, named (it is a layer above): the default domain holds the
# links to other processes, and finds the route to a domain of one of them.
_ROUTE_OP = "appdomain._hosts._links:route"


def _ask_default_domain(key: str, origin: tuple[int, int, str, int]) -> Route:
    default = _runtime.info.default_route
    if default is None:
        raise LookupError(f"a reference names process {key!r}, and this domain has no default")
    return Route(*_core.call(default, _ROUTE_OP, (key, origin)))


def install() -> None:
    """Register the remoting operations and the by-reference marshalling of objects."""
    register_reference_type(MarshalByRefObject, _reduce, _rebuild)
    if _core.CURRENT_INTERP != _core.MAIN_INTERP:
        set_resolver(_ask_default_domain)
    global _apply_native, _lean_ref
    native = _core.native_module()
    if native is not None:
        _apply_native = native.apply_releases
        _lean_ref = native.lean_ref
        native.set_proxy_hooks(_proxies, _fast, _release_at_owner, _arm_owner)
        native.set_table_hooks(_table._entries, _table._Entry, _table._lock, _table._leaseless)
    _core.set_release_hook(_drain_releases, None if native is None else native.releases_pending)
    if native is not None:
        native.set_invoke_handler(_invoke_lean, (_proxies, lean_proxy, settle_lean, _home, _fast))
        lend = (_lean_types, _table._by_identity, _table._lent, _table._lent_ids, _table._next_oid)
        native.set_reference_hooks(MarshalByRefObject, _ref_out, _ref_done, lend)
    handlers: dict[str, OpHandler] = {
        f"{__package__}:create": _op_create,
        f"{__package__}:create_from": _op_create_from,
        f"{__package__}:invoke": _op_invoke,
        f"{__package__}:getattr": _op_getattr,
        f"{__package__}:setattr": _op_setattr,
        f"{__package__}:delattr": _op_delattr,
        f"{__package__}:iter": _op_iter,
        f"{__package__}:iter_next": _op_iter_next,
        f"{__package__}:iter_close": _op_iter_close,
        f"{__package__}:exit": _op_exit,
        f"{__package__}:incref": _op_incref,
        f"{__package__}:live_count": _op_live_count,
        f"{__package__}:type_names": _op_type_names,
    }
    for name, handler in handlers.items():
        _core.register_op(name, handler)
    # What statistics() reports of remoting in this domain.
    from .._domains import _monitoring

    _monitoring.counters.update(proxies_held=live_proxies, objects_exported=live_count)
