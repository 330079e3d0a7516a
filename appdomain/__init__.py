"""appdomain: .NET's AppDomains for Python, on PEP 734 subinterpreters.

Each AppDomain is a subinterpreter with its own GIL, modules and sys.path.  Objects
deriving from MarshalByRefObject are used across domains through transparent proxies;
other values cross by Mono's four marshalling tiers (``appdomain.marshal``).
"""

from typing import TYPE_CHECKING

# marshal comes first: it imports msgpack, which must be loaded by the main
# interpreter before any subinterpreter imports it (CPython 3.13 aborts at exit otherwise).
from . import marshal
from ._channel import Channel
from ._channel import register as _register_channel
from ._context import CallContext
from ._domain import AppDomain, AppDomainSetup
from ._errors import (
    AppDomainError,
    AppDomainUnloadedException,
    CannotUnloadAppDomainException,
    ChannelClosedError,
    RemoteException,
    RemotingException,
    SerializationException,
    SocketHandoffError,
    ThreadAbortException,
)
from ._events import Event, EventArgs, UnhandledExceptionEventArgs
from ._remoting import (
    Lease,
    MarshalByRefObject,
    RemoteMethod,
    is_transparent_proxy,
    one_way,
)
from ._remoting import install as _install_remoting
from .marshal import Out, Ref, serializable

__all__ = [
    "AppDomain",
    "AppDomainError",
    "AppDomainSetup",
    "AppDomainUnloadedException",
    "CallContext",
    "CannotUnloadAppDomainException",
    "Channel",
    "ChannelClosedError",
    "Event",
    "EventArgs",
    "Lease",
    "MarshalByRefObject",
    "Out",
    "Ref",
    "RemoteException",
    "RemoteMethod",
    "RemotingException",
    "SerializationException",
    "Socket",
    "SocketHandoffError",
    "SocketInformation",
    "SocketInformationOptions",
    "ThreadAbortException",
    "UnhandledExceptionEventArgs",
    "duplicate_and_close",
    "is_transparent_proxy",
    "marshal",
    "one_way",
    "serializable",
]

__version__ = "0.1.0"

# Sockets load on first use: a new domain should not pay for the handoff machinery.
_LAZY = {
    "Socket": "._socket",
    "SocketInformation": "._socket",
    "SocketInformationOptions": "._socket",
    "duplicate_and_close": "._socket",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'appdomain' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from ._socket import Socket, SocketInformation, SocketInformationOptions, duplicate_and_close

_register_channel()
_install_remoting()
