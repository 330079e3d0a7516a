"""Stand in for a remote object's members on its proxy: what a proxy refers to, its methods
and its fields.

A proxy's reference (``RemoteRef``: route, object id, type) is an ordinary instance
attribute.  A remote method is a ``RemoteMethod`` bound to its proxy (in C where the switch
was built: plain arguments then take the lean route, _native/method.c); the generic route
(``generic_call``) sends a wire message through the call path.  Fields forward each read and write.
``_proxy`` builds the proxy types from these members.
"""

from __future__ import annotations

from .. import _core
from .._core import Route
from .._core._foreign import is_foreign
from ..marshal import decode_reply, encode_call, from_shareable, to_shareable
from . import _async

TYPE_CHECKING = False
if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable
    from typing import Any, Protocol

    from ..marshal import CallPlan

    class MethodMember(Protocol):
        """What stands for a remote method on a proxy type (C's, or _PyMethodMember)."""

        def __get__(self, proxy: object, owner: type | None = None, /) -> Any: ...


__all__ = [
    "FieldMember",
    "MethodSpec",
    "RemoteMethod",
    "RemoteRef",
    "generic_call",
    "method_member",
    "ref_of",
    "remote_getattr",
    "remote_setattr",
]

# Remoting's operations are named "package:op": a domain that receives one before it has
# loaded remoting imports the package then (see _core._serve).
OP = f"{__package__}:"
_INVOKE = OP + "invoke"


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


REF = "_appdomain_ref"


def ref_of(proxy: object) -> RemoteRef:
    """Return the reference a proxy stands for."""
    ref: RemoteRef = proxy.__dict__[REF]
    return ref


# -- calling -------------------------------------------------------------------------------


# The route at import decides how proxy methods bind (in C, or in Python); the route when a
# proxy type is built decides whether its methods may take the lean route (a test can switch
# routes: _core.use_native_route).
native_ext = _core.native_module()
# Plain arguments (None, bool, float, 64-bit int, str, bytes) take the lean route: the C
# bound method (_native/method.c) calls the native invoke, which checks them; anything
# else takes the generic route (generic_call).


class MethodSpec:
    """What a proxy type knows of one remote method: its name, plan and route."""

    __slots__ = ("lean_ok", "name", "one_way", "plan")
    name: str
    plan: CallPlan | None
    one_way: bool
    lean_ok: bool

    def __init__(self, name: str, plan: CallPlan | None, one_way: bool, local: bool) -> None:
        self.name = name
        self.plan = plan
        self.one_way = one_way
        # The lean route knows nothing of Out parameters: only planned methods without any;
        # and it switches into an interpreter of this process (local), never through a link.
        native = local and _core.native_module() is not None
        self.lean_ok = native and not one_way and plan is not None and not plan.has_out


def generic_call(proxy: object, spec: MethodSpec, *args: object, **kwargs: object) -> Any:
    """Call the remote method by the generic route: a wire message through the call path."""
    ref: RemoteRef = proxy.__dict__[REF]
    wire = encode_call(args, kwargs, spec.plan)
    if spec.one_way:
        _core.post(ref.route, _INVOKE, (ref.oid, spec.name, wire))
        return None
    reply = _core.call(ref.route, _INVOKE, (ref.oid, spec.name, wire))
    return decode_reply(reply, args, kwargs)


class _PyBoundMethod:
    """A remote method bound to its proxy, for the pure-Python call path."""

    __slots__ = ("proxy", "spec")
    proxy: object
    spec: MethodSpec

    def __init__(self, proxy: object, spec: MethodSpec) -> None:
        self.proxy = proxy
        self.spec = spec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return generic_call(self.proxy, self.spec, *args, **kwargs)


# With the native module, binding and lean calls run in C (_native/method.c), the
# slow cases coming back to generic_call and _proxy._lean_outcome (set_method_hooks).
if TYPE_CHECKING or native_ext is None:
    _BoundBase = _PyBoundMethod
else:
    _BoundBase = native_ext.BoundMethod  # its hooks: generic_call, and _proxy's _lean_outcome


class _RemoteMethod(_BoundBase):
    """A method of a remote object, bound to its proxy: call it, or begin_invoke it."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """The method's name."""
        return self.spec.name

    def begin_invoke(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Start the call on a worker thread and return a Future of its result (BeginInvoke).

        Up to 32 such calls run at once in each domain (set_async_workers changes it).
        """
        return _async.submit(self, *args, **kwargs)

    async def invoke_async(self, *args: Any, **kwargs: Any) -> Any:
        """Await the call from asyncio code without blocking the event loop.

        The call runs on one of the domain's begin_invoke worker threads: up to 32 overlap
        (set_async_workers changes it), the rest wait for a free thread.
        """
        import asyncio

        return await asyncio.wrap_future(self.begin_invoke(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<remote method {self.name} of {self.proxy!r}>"


def _of(method: object) -> object:
    """Return method, a proxy's method, typed as the RemoteMethod it is (else TypeError)."""
    if not isinstance(method, RemoteMethod):
        raise TypeError(
            f"'method' must be a method of a transparent proxy (got {method!r} that is a "
            f"{type(method).__name__})"
        )
    return method


# What type checkers see: a RemoteMethod generic in the method's parameters and result, so
# that begin_invoke and invoke_async are typed.  A generic class at run time would import
# typing into every domain (~3 ms of its start), so the run-time class is the plain one.
if TYPE_CHECKING:

    class RemoteMethod[**P, R](_RemoteMethod):
        """A method of a remote object, bound to its proxy: call it, or begin_invoke it."""

        __slots__ = ()

        @classmethod
        def of[**Q, S](cls, method: Callable[Q, S], /) -> RemoteMethod[Q, S]:
            """Return method, a proxy's method, typed as the RemoteMethod it is."""
            ...

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
        def begin_invoke(
            self, *args: P.args, **kwargs: P.kwargs
        ) -> concurrent.futures.Future[R]: ...
        async def invoke_async(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

        BeginInvoke = begin_invoke

else:

    class RemoteMethod(_RemoteMethod):
        """A method of a remote object, bound to its proxy: call it, or begin_invoke it.

        A typed proxy's method is a plain method to type checkers: ``RemoteMethod.of(m)``
        (m itself, checked) gives them the RemoteMethod it is, with begin_invoke and
        invoke_async typed after m's parameters and result.
        """

        __slots__ = ()
        of = staticmethod(_of)
        BeginInvoke = _RemoteMethod.begin_invoke


class _PyMethodMember:
    """Class member of a proxy type that stands for a remote method (pure-Python path)."""

    __slots__ = ("spec",)

    def __init__(self, spec: MethodSpec) -> None:
        self.spec = spec

    def __get__(self, proxy: object, owner: type | None = None) -> object:
        if proxy is None:
            return self
        return RemoteMethod(proxy, self.spec)


def method_member(name: str, plan: CallPlan | None, one_way: bool, local: bool) -> MethodMember:
    """Return the proxy-type member for a remote method: reading it binds a RemoteMethod."""
    spec = MethodSpec(name, plan, one_way, local)
    if native_ext is None:
        return _PyMethodMember(spec)
    member: MethodMember = native_ext.method_member(spec, RemoteMethod)
    return member


class FieldMember:
    """Class member of a proxy type that reads and writes a remote attribute (Field{G,S}etter)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, proxy: object, owner: type | None = None) -> Any:
        if proxy is None:
            return self
        return remote_getattr(proxy, self.name)

    def __set__(self, proxy: object, value: object) -> None:
        remote_setattr(proxy, self.name, value)

    def __delete__(self, proxy: object) -> None:
        ref = ref_of(proxy)
        _core.call(ref.route, OP + "delattr", (ref.oid, self.name))


def remote_getattr(proxy: object, name: str) -> Any:
    ref = ref_of(proxy)
    kind, value = _core.call(ref.route, OP + "getattr", (ref.oid, name))
    if kind == "method":
        local = not is_foreign(ref.route.interp_id)
        return method_member(name, None, bool(value), local).__get__(proxy)
    return from_shareable(value)


def remote_setattr(proxy: object, name: str, value: object) -> None:
    ref = ref_of(proxy)
    wire = to_shareable(value, name=f"value for attribute {name!r}")
    _core.call(ref.route, OP + "setattr", (ref.oid, name, wire))
