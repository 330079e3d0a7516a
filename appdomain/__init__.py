"""appdomain: .NET's AppDomains for Python, on PEP 734 subinterpreters.

Each AppDomain is a subinterpreter with its own GIL, modules and sys.path.  Objects
deriving from MarshalByRefObject are used across domains through transparent proxies;
other values cross by Mono's four marshalling tiers (``appdomain.marshal``).
"""

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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import marshal
    from ._channel import Channel
    from ._context import CallContext
    from ._domain import AppDomain, AppDomainSetup
    from ._events import Event, EventArgs, UnhandledExceptionEventArgs
    from ._remoting import Lease, MarshalByRefObject, RemoteMethod, is_transparent_proxy, one_way
    from ._socket import Socket, SocketInformation, SocketInformationOptions, duplicate_and_close
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

# Everything below loads on first use, so that a new domain pays only for what it uses:
# the marshalling tiers, remoting and channels cost a domain ~10 ms to import, and even
# AppDomain itself ~1 ms, which the domain of an isolated test rarely needs.  The main
# interpreter imports marshal (and msgpack with it) before it creates any domain (_domain).
_LAZY = {
    "AppDomain": "._domain",
    "AppDomainSetup": "._domain",
    "CallContext": "._context",
    "Event": "._events",
    "EventArgs": "._events",
    "UnhandledExceptionEventArgs": "._events",
    "marshal": ".marshal",
    "Out": ".marshal",
    "Ref": ".marshal",
    "serializable": ".marshal",
    "Channel": "._channel",
    "Lease": "._remoting",
    "MarshalByRefObject": "._remoting",
    "RemoteMethod": "._remoting",
    "is_transparent_proxy": "._remoting",
    "one_way": "._remoting",
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

    loaded = importlib.import_module(module, __name__)
    value = loaded if name == "marshal" else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
