"""Build transparent proxies: local stand-ins whose members run on the remote object.

A proxy of ``T`` is an instance of a generated subclass of ``T`` (so ``isinstance``
holds) whose every member forwards to the remote object: methods become RemoteMethod
callables, other class attributes become forwarding data descriptors (Mono's
FieldGetter/FieldSetter), and plain ``__getattr__``/``__setattr__`` catch instance
attributes.  No ``__getattribute__`` magic: the proxy's own bookkeeping is an ordinary
instance attribute.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections.abc import Callable, Iterator

from .. import _core
from .._core import Route, _context
from .._domains import _runtime
from ..marshal import (
    decode_reply,
    encode_call,
    from_shareable,
    plan_for,
    to_shareable,
)
from . import _async
from ._base import MarshalByRefObject, is_one_way
from ._release import release as _release_at_owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    import concurrent.futures
    from types import NotImplementedType
    from typing import Any, NoReturn, Protocol

    from .._core._wire import NativeReply
    from ..marshal import CallPlan

    class MethodMember(Protocol):
        """What stands for a remote method on a proxy type (C's, or _PyMethodMember)."""

        def __get__(self, proxy: object, owner: type | None = None, /) -> Any: ...


__all__ = ["RemoteRef", "RemoteMethod", "proxy_for", "is_transparent_proxy", "ref_of"]

# Remoting's operations are named "package:op": a domain that receives one before it has
# loaded remoting imports the package then (see _core._serve).
_OP = f"{__package__}:"
_INVOKE = _OP + "invoke"

# How many items one round trip of a remote iteration brings back.
ITER_CHUNK = 256


class RemoteRef(tuple[Route, int, str, str]):  # a NamedTuple would import typing (see Route)
    """What identifies a remote object: its domain's route, its id there, and its type."""

    __slots__ = ()

    def __new__(cls, route: Route, oid: int, module: str, qualname: str) -> RemoteRef:
        return tuple.__new__(cls, (route, oid, module, qualname))

    @property
    def route(self) -> Route:
        return self[0]

    @property
    def oid(self) -> int:
        return self[1]

    @property
    def module(self) -> str:
        return self[2]

    @property
    def qualname(self) -> str:
        return self[3]


_REF = "_appdomain_ref"

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


def ref_of(proxy: object) -> RemoteRef:
    """Return the reference a proxy stands for."""
    ref: RemoteRef = proxy.__dict__[_REF]
    return ref


def is_transparent_proxy(obj: object) -> bool:
    """Tell a proxy to a remote object from a local object."""
    return getattr(type(obj), "__appdomain_proxy__", False) is True


# -- calling -------------------------------------------------------------------------------


# The route at import decides how proxy methods bind (in C, or in Python); the route when a
# proxy type is built decides whether its methods may take the lean route (a test can switch
# routes: _core.use_native_route).
_native = _core.native_module()
# Plain arguments (None, bool, float, 64-bit int, str, bytes) take the lean route: the C
# bound method (_native/method.c) calls the native invoke, which checks them; anything
# else takes the generic route (_call).


class _MethodSpec:
    """What a proxy type knows of one remote method: its name, plan and route."""

    __slots__ = ("lean_ok", "name", "one_way", "plan")

    def __init__(self, name: str, plan: CallPlan | None, one_way: bool) -> None:
        self.name = name
        self.plan = plan
        self.one_way = one_way
        # The lean route knows nothing of Out parameters: only planned methods without any.
        native = _core.native_module() is not None
        self.lean_ok = native and not one_way and plan is not None and not plan.has_out


def _call(proxy: object, spec: _MethodSpec, *args: object, **kwargs: object) -> Any:
    """Call the remote method by the generic route: a wire message through the call path."""
    ref: RemoteRef = proxy.__dict__[_REF]
    wire = encode_call(args, kwargs, spec.plan)
    if spec.one_way:
        _core.post(ref.route, _INVOKE, (ref.oid, spec.name, wire))
        return None
    reply = _core.call(ref.route, _INVOKE, (ref.oid, spec.name, wire))
    return decode_reply(reply, args, kwargs)


def _lean_outcome(
    proxy: object,
    spec: _MethodSpec,
    args: tuple[object, ...],
    reply: NativeReply | NotImplementedType | None,
    error: BaseException | None,
) -> Any:
    """Finish a lean call (native invoke) that did not come back as a plain value."""
    if error is not None:
        native = _core.native_module()
        assert native is not None  # lean calls run only on the native route
        unloaded = native.refusal(error, proxy.__dict__[_REF].route.interp_id)
        if unloaded is not None:
            raise unloaded from None
        return _call(proxy, spec, *args)  # the target takes no native calls: the generic route
    if reply is None or reply is NotImplemented:  # an argument (or the call context) needs it
        return _call(proxy, spec, *args)
    done, value, ctx_back = reply
    if ctx_back is not None:
        _context.merge(ctx_back)
    if done is True:
        return value
    if done == _LEAN_REF:  # a reference to an object of the callee: (*route, oid, type)
        data: Any = value
        return proxy_for(RemoteRef(Route(*data[:4]), data[4], data[5], data[6]))
    return decode_reply(value, args, {})


# done in a lean reply whose value is a reference (remoting's _server._invoke_lean).
_LEAN_REF = 2


class _PyBoundMethod:
    """A remote method bound to its proxy, for the pure-Python call path."""

    __slots__ = ("proxy", "spec")

    def __init__(self, proxy: object, spec: _MethodSpec) -> None:
        self.proxy = proxy
        self.spec = spec

    def __call__(self, *args: object, **kwargs: object) -> Any:
        return _call(self.proxy, self.spec, *args, **kwargs)


# With the native module, binding and lean calls run in C (_native/method.c), the
# slow cases coming back to _call and _lean_outcome.
if TYPE_CHECKING or _native is None:
    _BoundBase = _PyBoundMethod
else:
    _BoundBase = _native.BoundMethod
    _native.set_method_hooks(_call, _lean_outcome)


class RemoteMethod(_BoundBase):
    """A method of a remote object, bound to its proxy: call it, or begin_invoke it."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """The method's name."""
        return self.spec.name

    def begin_invoke(self, *args: object, **kwargs: object) -> concurrent.futures.Future[Any]:
        """Start the call on a worker thread and return a Future of its result (BeginInvoke).

        Up to 32 such calls run at once in each domain (set_async_workers changes it).
        """
        return _async.submit(self, *args, **kwargs)

    async def invoke_async(self, *args: object, **kwargs: object) -> Any:
        """Await the call from asyncio code without blocking the event loop.

        The call runs on one of the domain's begin_invoke worker threads: up to 32 overlap
        (set_async_workers changes it), the rest wait for a free thread.
        """
        import asyncio

        return await asyncio.wrap_future(self.begin_invoke(*args, **kwargs))

    BeginInvoke = begin_invoke

    def __repr__(self) -> str:
        return f"<remote method {self.name} of {self.proxy!r}>"


class _PyMethodMember:
    """Class member of a proxy type that stands for a remote method (pure-Python path)."""

    __slots__ = ("spec",)

    def __init__(self, spec: _MethodSpec) -> None:
        self.spec = spec

    def __get__(self, proxy: object, owner: type | None = None) -> object:
        if proxy is None:
            return self
        return RemoteMethod(proxy, self.spec)


def _method_member(name: str, plan: CallPlan | None, one_way: bool) -> MethodMember:
    """Return the proxy-type member for a remote method: reading it binds a RemoteMethod."""
    spec = _MethodSpec(name, plan, one_way)
    if _native is None:
        return _PyMethodMember(spec)
    member: MethodMember = _native.method_member(spec, RemoteMethod)
    return member


class _FieldMember:
    """Class member of a proxy type that reads and writes a remote attribute (Field{G,S}etter)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, proxy: object, owner: type | None = None) -> Any:
        if proxy is None:
            return self
        return _remote_getattr(proxy, self.name)

    def __set__(self, proxy: object, value: object) -> None:
        _remote_setattr(proxy, self.name, value)

    def __delete__(self, proxy: object) -> None:
        ref = ref_of(proxy)
        _core.call(ref.route, _OP + "delattr", (ref.oid, self.name))


def _remote_getattr(proxy: object, name: str) -> Any:
    ref = ref_of(proxy)
    kind, value = _core.call(ref.route, _OP + "getattr", (ref.oid, name))
    if kind == "method":
        return _method_member(name, None, bool(value)).__get__(proxy)
    return from_shareable(value)


def _remote_setattr(proxy: object, name: str, value: object) -> None:
    ref = ref_of(proxy)
    wire = to_shareable(value, name=f"value for attribute {name!r}")
    _core.call(ref.route, _OP + "setattr", (ref.oid, name, wire))


# Forwarders for protocols whose shape differs from a plain method call.


def _proxy_iter(self: object) -> Iterator[Any]:
    ref = ref_of(self)
    iterator_id, items, done = _core.call(ref.route, _OP + "iter", (ref.oid, ITER_CHUNK))
    try:
        while True:
            chunk: Any = from_shareable(items)  # the list of items the server sent
            yield from chunk
            if done:
                return
            items, done = _core.call(ref.route, _OP + "iter_next", (iterator_id, ITER_CHUNK))
    finally:
        if not done:
            _core.post(ref.route, _OP + "iter_close", iterator_id)


def _proxy_exit(
    self: object, exc_type: object, exc: BaseException | None, tb: object
) -> bool | None:
    ref = ref_of(self)
    wire = to_shareable(exc, name="exception") if exc is not None else None
    suppress: bool | None = _core.call(ref.route, _OP + "exit", (ref.oid, wire))
    return suppress


_SPECIAL = {"__iter__": _proxy_iter, "__exit__": _proxy_exit}


class _ProxyBase:
    """Behaviour shared by every generated proxy type."""

    __appdomain_proxy__ = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _remote_getattr(self, name)

    def __setattr__(self, name: str, value: object) -> None:
        _remote_setattr(self, name, value)

    def __delattr__(self, name: str) -> None:
        ref = ref_of(self)
        _core.call(ref.route, _OP + "delattr", (ref.oid, name))

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


# (module, qualname, native route?) -> proxy type
_proxy_types: dict[tuple[str, str, bool], type] = {}
_proxy_types_lock = threading.Lock()


def _proxy_type(module: str, qualname: str) -> type:
    key = (module, qualname, _core.native_module() is not None)
    cls = _proxy_types.get(key)
    if cls is None:
        with _proxy_types_lock:
            cls = _proxy_types.get(key)
            if cls is None:
                cls = _proxy_types[key] = _build_proxy_type(_resolve(module, qualname))
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


def _build_proxy_type(real: type) -> type:
    members: dict[str, object] = {}
    seen: set[str] = set()
    for klass in real.__mro__:
        if klass in (object, MarshalByRefObject):
            continue
        for name, value in vars(klass).items():
            if name in seen or name in _LOCAL:
                continue
            seen.add(name)
            members[name] = _member(name, value)
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


def _member(name: str, value: object) -> object:
    if name in _SPECIAL:
        return _SPECIAL[name]
    if isinstance(value, staticmethod):
        func = value.__func__
        return _method_member(name, _plan(func, bound=False), is_one_way(func))
    if isinstance(value, classmethod):
        func = value.__func__
        return _method_member(name, _plan(func, bound=True), is_one_way(func))
    if isinstance(value, types.FunctionType):
        return _method_member(name, _plan(value, bound=True), is_one_way(value))
    if callable(value) and not isinstance(value, type):
        return _method_member(name, None, False)
    return _FieldMember(name)


def _plan(func: Callable[..., object], *, bound: bool) -> CallPlan | None:
    try:
        # Plan as a bound method would be called: without self.
        return plan_for(func.__get__(object()) if bound else func)
    except Exception:
        return None


# -- references in and out --------------------------------------------------------------------

_proxies: weakref.WeakValueDictionary[tuple[int, int], _ProxyBase] = weakref.WeakValueDictionary()
# Reentrant: a finalizer (_release) may run in a thread that holds it, whenever the garbage
# collector runs, and only ever removes its own cell.
_proxies_lock = threading.RLock()
# proxy identity -> [how many remote references it holds (released together when it dies),
# whether its finalizer is attached].  A proxy made for a lean call holds none while that
# call runs (the caller counts the reference for the call) and gets its finalizer only if
# it outlives the call (settle_lean).
_counts: dict[tuple[int, int], list[int]] = {}


def proxy_for(ref: RemoteRef) -> Any:
    """Return this domain's one proxy for ref, counting the reference it brings."""
    key = (ref.route.interp_id, ref.oid)
    with _proxies_lock:
        proxy = _proxies.get(key)
        if proxy is not None:
            cell = _counts[key]
            cell[0] += 1
            if not cell[1]:  # made by a lean call still running: it now holds a count
                _finalize(proxy, cell, key)
            return proxy
    # Outside the lock: building the type may import (and collect garbage, running other
    # proxies' finalizers, which take the lock).
    cls = _proxy_type(ref.module, ref.qualname)
    with _proxies_lock:
        proxy = _proxies.get(key)
        if proxy is not None:
            cell = _counts[key]
            cell[0] += 1
            if not cell[1]:
                _finalize(proxy, cell, key)
            return proxy
        proxy = object.__new__(cls)
        proxy.__dict__[_REF] = ref
        cell = [1, 0]
        _counts[key] = cell
        _proxies[key] = proxy
        _finalize(proxy, cell, key)
    return proxy


def _finalize(proxy: object, cell: list[int], key: tuple[int, int]) -> None:
    """Have proxy's death release the references its cell counts (lock held)."""
    cell[1] = 1
    ref: RemoteRef = proxy.__dict__[_REF]
    weakref.finalize(proxy, _release, ref.route, ref.oid, cell, key)


def lean_proxy(ref: RemoteRef) -> tuple[Any, bool]:
    """Return this domain's proxy for ref during a lean call, and whether it is new.

    The reference counts nothing here: the caller holds it for the call.  A new proxy
    must go through settle_lean once the call's own references to it are gone.
    """
    key = (ref.route.interp_id, ref.oid)
    proxy = _proxies.get(key)
    if proxy is not None:
        return proxy, False
    cls = _proxy_type(ref.module, ref.qualname)
    with _proxies_lock:
        proxy = _proxies.get(key)
        if proxy is not None:
            return proxy, False
        proxy = object.__new__(cls)
        proxy.__dict__[_REF] = ref
        _counts[key] = [0, 0]
        _proxies[key] = proxy
    return proxy, True


# References to a proxy settle_lean holds itself: its list's, its loop's, getrefcount's.
_SETTLE_REFS = 3


def settle_lean(made: list[Any]) -> None:
    """After a lean call: forget the new proxies nothing kept; count the ones kept.

    A kept proxy is counted at its owner (a nested call there: the caller is still
    waiting, so the object cannot be released in between) and gets its finalizer.
    """
    import sys

    kept = []
    for proxy in made:
        ref: RemoteRef = proxy.__dict__[_REF]
        key = (ref.route.interp_id, ref.oid)
        with _proxies_lock:
            cell = _counts.get(key)
            if cell is None or cell[1] or _proxies.get(key) is not proxy:
                continue  # another call counted it and gave it a finalizer
            if sys.getrefcount(proxy) <= _SETTLE_REFS:
                del _counts[key]  # only this call held it: it dies with no count to give
                del _proxies[key]
                continue
        kept.append(proxy)
    for proxy in kept:
        ref = proxy.__dict__[_REF]
        _core.call(ref.route, _OP + "incref", ref.oid)
        key = (ref.route.interp_id, ref.oid)
        with _proxies_lock:
            cell = _counts[key]
            cell[0] += 1
            if not cell[1]:  # else another call attached one meanwhile: it releases ours too
                _finalize(proxy, cell, key)


def _release(route: Route, oid: int, cell: list[int], key: tuple[int, int]) -> None:
    """Tell the owner this domain dropped its references (no waiting: finalizer context)."""
    with _proxies_lock:
        if _counts.get(key) is cell:
            del _counts[key]
    _release_at_owner(route, oid, cell[0])


def live_proxies() -> int:
    """Return how many proxies to remote objects this domain holds."""
    return len(_proxies)
