"""Build transparent proxies: local stand-ins whose members run on the remote object.

A proxy of ``T`` is an instance of a generated subclass of ``T`` (so ``isinstance``
holds) whose every member forwards to the remote object: methods become RemoteMethod
callables, other class attributes become forwarding data descriptors (Mono's
FieldGetter/FieldSetter), and plain ``__getattr__``/``__setattr__`` catch instance
attributes.  No ``__getattribute__`` magic: the proxy's own bookkeeping is an ordinary
instance attribute.  The members come from ``_methods``; this module builds the types and
keeps the proxies' lifetimes: one proxy per remote object in a domain, the references it
counts, and their release when it dies.
"""

from __future__ import annotations

import threading
import types
import weakref

from .. import _core
from .._core import Route, _context
from .._core._foreign import is_foreign
from .._domains import _runtime
from ..marshal import decode_reply, from_shareable, plan_for, to_shareable
from ._base import MarshalByRefObject, is_one_way
from ._methods import (
    OP,
    REF,
    FieldMember,
    MethodSpec,
    RemoteRef,
    generic_call,
    method_member,
    native_ext,
    ref_of,
    remote_getattr,
    remote_setattr,
)
from ._release import release as _release_at_owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import NotImplementedType
    from typing import Any, NoReturn

    from .._core._wire import NativeReply
    from ..marshal import CallPlan


__all__ = [
    "is_transparent_proxy",
    "lean_proxy",
    "live_proxies",
    "proxy_for",
    "release_all",
    "settle_lean",
]

# How many items one round trip of a remote iteration brings back.
ITER_CHUNK = 256


# Members a proxy never forwards: object machinery, and what the proxy answers itself.
_LOCAL = frozenset(
    {
        "__init__",
        "__new__",
        "__init_subclass__",
        "__class__",
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__doc__",
        "__slots__",
        "__getattr__",
        "__getattribute__",
        "__setattr__",
        "__delattr__",
        "__reduce__",
        "__reduce_ex__",
        "__getstate__",
        "__setstate__",
        "__class_getitem__",
        "__subclasshook__",
        "__annotations__",
        "__annotate__",
        "__repr__",
        "__eq__",
        "__ne__",
        "__hash__",
        "__del__",
        "__firstlineno__",
        "__static_attributes__",
        "__parameters__",
        "__orig_bases__",
        "__dataclass_fields__",
        "__dataclass_params__",
        "__match_args__",
        "__abstractmethods__",
        "_abc_impl",
        "__copy__",
        "__deepcopy__",
        "__sizeof__",
        "__dir__",
        "__format__",
        "__getnewargs__",
        "__getnewargs_ex__",
        "initialize_lifetime_service",
        "InitializeLifetimeService",
    }
)


def is_transparent_proxy(obj: object) -> bool:
    """Tell a proxy to a remote object from a local object."""
    return getattr(type(obj), "__appdomain_proxy__", False) is True


def _lean_outcome(
    proxy: object,
    spec: MethodSpec,
    args: tuple[object, ...],
    reply: NativeReply | NotImplementedType | None,
    error: BaseException | None,
) -> Any:
    """Finish a lean call (native invoke) that did not come back as a plain value."""
    if error is not None:
        native = _core.native_module()
        assert native is not None  # lean calls run only on the native route
        unloaded = native.refusal(error, proxy.__dict__[REF].route.interp_id)
        if unloaded is not None:
            raise unloaded from None
        return generic_call(
            proxy, spec, *args
        )  # the target takes no native calls: the generic route
    if reply is None or reply is NotImplemented:  # an argument (or the call context) needs it
        return generic_call(proxy, spec, *args)
    done, value, ctx_back = reply
    if ctx_back is not None:
        _context.merge(ctx_back)
    if done is True:
        return value
    if done == _LEAN_REF:  # a reference to an object of the callee (returned_names)
        data: Any = value
        route = proxy.__dict__[REF].route  # the object lives where the call ran
        names = _returned_names(route, data)
        if names not in _lean_classes:  # from now on the C switch makes such proxies
            _lean_classes[names] = _proxy_type(names[0], names[1], True)
        return proxy_for(_new_tuple(RemoteRef, (route, data[0], names[0], names[1])))
    return decode_reply(value, args, {})


# done in a lean reply whose value is a reference (remoting's _server._invoke_lean).
_LEAN_REF = 2
# The operation that names the type behind a token (remoting's _server._op_type_names).
_TYPE_NAMES_OP = f"{__package__}:type_names"


def _returned_names(route: Route, data: tuple[Any, ...]) -> tuple[str, str]:
    """Say what type a reference a lean call returned is of: its (module, qualname).

    data is (oid, module, qualname), (oid, module, qualname, token) the first time the
    callee returns an object of that type here, or (oid, token) afterwards; the C switch
    reads it the same way (_native/method.c returned_names).  A token not met yet (the
    reply that brings it in full is another thread's, still on its way) is asked of the
    callee.
    """
    if len(data) == 3:
        return (data[1], data[2])
    key = (route.interp_id, data[-1])
    if len(data) == 4:
        names: tuple[str, str] = (data[1], data[2])
        _returned_types[key] = names
        return names
    known = _returned_types.get(key)
    if known is None:
        module, qualname = _core.call(route, _TYPE_NAMES_OP, data[1])
        known = _returned_types[key] = (module, qualname)
    return known


# (callee interp id, type token) -> (module, qualname): the types lean calls returned here.
_returned_types: dict[tuple[int, int], tuple[str, str]] = {}

# The C bound methods' ways back to Python: the generic route, and a lean call's outcome.
if native_ext is not None:
    native_ext.set_method_hooks(generic_call, _lean_outcome)

# Forwarders for protocols whose shape differs from a plain method call.


def _proxy_iter(self: object) -> Iterator[Any]:
    ref = ref_of(self)
    iterator_id, items, done = _core.call(ref.route, OP + "iter", (ref.oid, ITER_CHUNK))
    try:
        while True:
            chunk: Any = from_shareable(items)  # the list of items the server sent
            yield from chunk
            if done:
                return
            items, done = _core.call(ref.route, OP + "iter_next", (iterator_id, ITER_CHUNK))
    finally:
        if not done:
            _core.post(ref.route, OP + "iter_close", iterator_id)


def _proxy_exit(
    self: object, exc_type: object, exc: BaseException | None, tb: object
) -> bool | None:
    ref = ref_of(self)
    wire = to_shareable(exc, name="exception") if exc is not None else None
    suppress: bool | None = _core.call(ref.route, OP + "exit", (ref.oid, wire))
    return suppress


_SPECIAL = {"__iter__": _proxy_iter, "__exit__": _proxy_exit}


class _ProxyBase:
    """Behaviour shared by every generated proxy type."""

    __appdomain_proxy__ = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return remote_getattr(self, name)

    def __setattr__(self, name: str, value: object) -> None:
        remote_setattr(self, name, value)

    def __delattr__(self, name: str) -> None:
        ref = ref_of(self)
        _core.call(ref.route, OP + "delattr", (ref.oid, name))

    # A proxy is its remote object's only stand-in here, so identity is equality.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        ref = ref_of(self)
        return (
            f"<proxy of {ref.module}.{ref.qualname} object {ref.oid} "
            f"in domain #{ref.route.interp_id + 1}>"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a proxy crosses domains through appdomain's marshalling, not pickle")


# (module, qualname, native route?, local domain?) -> proxy type
_proxy_types: dict[tuple[str, str, bool, bool], type] = {}
_proxy_types_lock = threading.Lock()


def _proxy_type(module: str, qualname: str, local: bool) -> type:
    key = (module, qualname, _core.native_module() is not None, local)
    cls = _proxy_types.get(key)
    if cls is None:
        with _proxy_types_lock:
            cls = _proxy_types.get(key)
            if cls is None:
                cls = _proxy_types[key] = _build_proxy_type(_resolve(module, qualname), local)
    return cls


def _resolve(module: str, qualname: str) -> type:
    """Find the real type here when it can be imported; else proxy as MarshalByRefObject."""
    try:
        target: object = _runtime.load_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:
        return MarshalByRefObject
    if isinstance(target, type) and issubclass(target, MarshalByRefObject):
        return target
    return MarshalByRefObject


def _build_proxy_type(real: type, local: bool) -> type:
    members: dict[str, object] = {}
    seen: set[str] = set()
    for klass in real.__mro__:
        if klass in (object, MarshalByRefObject):
            continue
        for name, value in vars(klass).items():
            if name in seen or name in _LOCAL:
                continue
            seen.add(name)
            members[name] = _member(name, value, local)
    namespace = {
        **members,
        "__module__": real.__module__,
        "__qualname__": real.__qualname__,
        "__doc__": real.__doc__,
    }
    try:
        return type(real.__name__, (_ProxyBase, real), namespace)
    except TypeError:  # a layout the subclass cannot take (e.g. builtin bases): no isinstance
        return type(real.__name__, (_ProxyBase, MarshalByRefObject), namespace)


def _member(name: str, value: object, local: bool) -> object:
    if name in _SPECIAL:
        return _SPECIAL[name]
    if isinstance(value, staticmethod):
        func = value.__func__
        return method_member(name, _plan(func, bound=False), is_one_way(func), local)
    if isinstance(value, classmethod):
        func = value.__func__
        return method_member(name, _plan(func, bound=True), is_one_way(func), local)
    if isinstance(value, types.FunctionType):
        return method_member(name, _plan(value, bound=True), is_one_way(value), local)
    if callable(value) and not isinstance(value, type):
        return method_member(name, None, False, local)
    return FieldMember(name)


def _plan(func: Callable[..., object], *, bound: bool) -> CallPlan | None:
    try:
        # Plan as a bound method would be called: without self.
        return plan_for(func.__get__(object()) if bound else func)
    except Exception:
        return None


# -- references in and out --------------------------------------------------------------------

# proxy identity (interp_id, oid) -> weak reference to this domain's one proxy for it (or,
# while the lean call that made it runs, the proxy itself: _native/refs.c make_proxy).
# A plain dict (the C switch reads and writes it); a dead proxy's weak reference removes
# its own entry.
_proxies: dict[tuple[int, int], Any] = {}
# Makes finding-or-making a proxy one step.  Reentrant: building a proxy type may collect
# garbage, running any finalizer in this thread (none takes it today).
_proxies_lock = threading.RLock()
# Where a proxy keeps its cell: [how many remote references it holds (released together
# when it dies), whether its release is attached, the owner's route].  The release is the
# proxy's entry in _proxies: its weak reference carries the cell, and its callback (_gone,
# or the C switch's proxy_gone) releases what the cell holds; a proxy listed otherwise
# gets a weakref.finalize.  A proxy made for a lean call holds none while that call runs
# (the caller counts the reference for the call) and gets its release only if it outlives
# the call (settle_lean).
_CELL = "_appdomain_cell"


class _Entry(weakref.ref):  # type: ignore[type-arg]  # of a proxy: weakref.ref[Any]
    """A weak reference to a proxy that knows its key and, once it counts, its cell.

    weakref.KeyedRef runs Python code; a weakref.finalize costs ~1 µs to make and more to
    run, so the entry every proxy has anyway is its finalizer.
    """

    __slots__ = ("cell", "key")
    key: tuple[int, int]
    cell: list[Any] | None


def _gone(wr: _Entry) -> None:
    """A proxy died: drop its entry and release its references (its weak reference's callback)."""
    key = wr.key
    if _proxies.get(key) is wr:
        del _proxies[key]
    cell = wr.cell
    if cell is not None:
        _release(cell[2], key[1], cell)


# The C switch's proxy_gone does the same without Python code, and queues the release at
# an owner it serves in that owner's record (no cross-interpreter queue).
_on_gone: Callable[[_Entry], object] = _gone if native_ext is None else native_ext.proxy_gone


def _live(key: tuple[int, int]) -> Any:
    entry = _proxies.get(key)
    if type(entry) is _Entry:
        return entry()
    return entry  # None, or a lean call's proxy, listed strongly while that call runs


def _new_proxy(ref: RemoteRef, cls: type, key: tuple[int, int], counted: bool) -> Any:
    """Make and list the proxy for ref (lock held), holding one reference if counted."""
    proxy: Any = object.__new__(cls)
    state = proxy.__dict__
    state[REF] = ref
    # ref[0]: its route (tuple indexing: the properties cost a Python call each)
    cell = state[_CELL] = [1, 1, ref[0]] if counted else [0, 0, ref[0]]
    entry = _Entry(proxy, _on_gone)
    entry.key = key
    entry.cell = cell if counted else None  # what _count would attach
    _proxies[key] = entry
    return proxy


def proxy_for(ref: RemoteRef) -> Any:
    """Return this domain's one proxy for ref, counting the reference it brings."""
    route = ref[0]
    key = (route[0], ref[1])  # (interp id, oid)
    # First, outside the lock: building the type may import (and collect garbage, running
    # other proxies' finalizers, which take the lock).  Once built it is a lookup, and the
    # lock is taken once.
    cls = _proxy_type(ref[2], ref[3], not is_foreign(route[0]))
    with _proxies_lock:
        proxy = _live(key)
        if proxy is not None:
            _count(proxy)
            return proxy
        return _new_proxy(ref, cls, key, True)


def _count(proxy: object) -> None:
    """Count one more reference held by proxy (lock held); its death releases them all."""
    state = proxy.__dict__
    cell: list[Any] | None = state.get(_CELL)
    ref: RemoteRef = state[REF]
    if cell is None:  # made by the C switch for a lean call: it had no count yet
        cell = state[_CELL] = [0, 0, ref.route]
    cell[0] += 1
    if not cell[1]:
        cell[1] = 1
        entry = _proxies.get((ref.route.interp_id, ref.oid))
        if type(entry) is _Entry and entry() is proxy:
            entry.cell = cell  # its entry releases it
        else:  # listed strongly by a lean call in flight: that entry goes after the call
            weakref.finalize(proxy, _release, ref.route, ref.oid, cell)


def _release(route: Route, oid: int, cell: list[Any]) -> None:
    """Tell the owner this domain dropped its references (no waiting: finalizer context)."""
    with _proxies_lock:
        count, cell[0] = cell[0], 0
    if count:
        _release_at_owner(route, oid, count)


def release_all() -> int:
    """Give back every reference this domain's proxies hold (its process is ending).

    The proxies stay, holding nothing: their owners count them gone.  Returns how many
    objects were released.
    """
    released = 0
    with _proxies_lock:
        for key in list(_proxies):
            proxy = _live(key)
            cell = None if proxy is None else proxy.__dict__.get(_CELL)
            if not cell or not cell[0]:
                continue
            ref: RemoteRef = proxy.__dict__[REF]
            count, cell[0] = cell[0], 0
            _release_at_owner(ref.route, ref.oid, count)
            released += 1
    return released


def lean_proxy(data: tuple[Any, ...]) -> Any:
    """Make the proxy a lean call brings, from (*route, oid, module, qualname).

    The reference counts nothing here: the caller holds it for the call.  The C switch
    drops the proxy after the call if nothing kept it, else calls settle_lean.
    """
    cls = _lean_classes.get(data[5:])
    if cls is None:
        cls = _lean_classes[data[5:]] = _proxy_type(data[5], data[6], True)  # local: lean
    ref = _new_tuple(RemoteRef, (_new_tuple(Route, data[:4]), data[4], data[5], data[6]))
    key = (data[0], data[4])
    with _proxies_lock:
        proxy = _live(key)  # another thread made one meanwhile
        if proxy is None:
            proxy = _new_proxy(ref, cls, key, False)
    return proxy


# (module, qualname) -> proxy type, for lean_proxy (lean calls are native: no route in the key).
_lean_classes: dict[tuple[str, str], type] = {}
_new_tuple = tuple.__new__


def settle_lean(kept: list[Any]) -> None:
    """Count the new proxies a lean call kept at their owners, and give them finalizers.

    Runs before the call returns: the caller still holds the reference it counted for
    the call, so the object cannot be released in between.
    """
    for proxy in kept:
        cell: list[Any] | None = proxy.__dict__.get(_CELL)
        if cell is not None and cell[1]:
            continue  # a generic call counted it meanwhile: its finalizer releases those
        ref: RemoteRef = proxy.__dict__[REF]
        _core.call(ref.route, OP + "incref", ref.oid)
        with _proxies_lock:
            _count(proxy)


def live_proxies() -> int:
    """Return how many proxies to remote objects this domain holds."""
    entries = list(_proxies.values())
    return sum(1 for entry in entries if type(entry) is not _Entry or entry() is not None)
