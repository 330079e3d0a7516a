"""appdomain: .NET's AppDomains for Python, on PEP 734 subinterpreters.

Each AppDomain is a subinterpreter with its own GIL, modules and sys.path.  Objects
deriving from MarshalByRefObject are used across domains through transparent proxies;
other values cross by Mono's four marshalling tiers (``appdomain.marshal``).
"""

# The layers, lowest first.  A module imports only from its own layer and those below it,
# never from above, not even lazily inside a function (tests/test_layout.py checks it):
#
#   _errors        the exception types, under AppDomainError; imports nothing
#   _aliases       module names known by another name on the wire (the main script's)
#   _native/       the optional C switch (_ext, typed by _ext.pyi); imports no Python
#   marshal/       the four marshalling tiers (the repository's top-level marshal/ folder)
#   _core/         the call path: compat, wake, context, wire types, serve, pool, routes, client
#   _channels/     Channel, between domains
#   _sockets/      Socket and SocketInformation: duplicate_and_close, same process or not
#   _domains/      AppDomain and AppDomainSetup: boot, events, the domain.* ops, unload
#   _remoting/     MarshalByRefObject, proxies, leases, distributed reference counts
#   _hosts/        domains in other processes: links, ProcessHost, RayHost
#   _plugins/      PluginHost: a folder's plugins in a domain, reloaded when they change
#   _testing/      the pytest plugin (behind the pytest_plugin entry-point shim)
#   _info          what ``appdomain info`` reports (versions, routes, a self-check)
#   _cli           the ``appdomain`` command
#
# docs/DESIGN.md has the same table with each module.

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import marshal
    from ._channels._channel import Channel
    from ._core._context import CallContext
    from ._domains._assemblies import (
        AssemblyInfo,
        AssemblyLoadEventArgs,
        FirstChanceExceptionEventArgs,
        ResolveEventArgs,
    )
    from ._domains._domain import AppDomain
    from ._domains._events import Event, EventArgs, UnhandledExceptionEventArgs
    from ._domains._hosting import HostExitedEventArgs, SubinterpreterHost
    from ._domains._monitoring import DomainStatistics
    from ._domains._setup import AppDomainSetup
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
    from ._hosts._process import ProcessHost
    from ._hosts._ray import RayHost
    from ._plugins._host import PluginEventArgs, PluginHost
    from ._remoting import (
        Lease,
        MarshalByRefObject,
        RemoteMethod,
        is_transparent_proxy,
        one_way,
        set_async_workers,
    )
    from ._sockets._socket import (
        Socket,
        SocketInformation,
        SocketInformationOptions,
        duplicate_and_close,
    )
    from .marshal import Out, Ref, serializable

__all__ = [
    "AppDomain",
    "AppDomainError",
    "AppDomainSetup",
    "AppDomainUnloadedException",
    "AssemblyInfo",
    "AssemblyLoadEventArgs",
    "CallContext",
    "CannotUnloadAppDomainException",
    "Channel",
    "ChannelClosedError",
    "DomainStatistics",
    "Event",
    "EventArgs",
    "FirstChanceExceptionEventArgs",
    "HostExitedEventArgs",
    "Lease",
    "MarshalByRefObject",
    "Out",
    "PluginEventArgs",
    "PluginHost",
    "ProcessHost",
    "RayHost",
    "Ref",
    "RemoteException",
    "RemoteMethod",
    "RemotingException",
    "ResolveEventArgs",
    "SerializationException",
    "Socket",
    "SocketHandoffError",
    "SocketInformation",
    "SocketInformationOptions",
    "SubinterpreterHost",
    "ThreadAbortException",
    "UnhandledExceptionEventArgs",
    "duplicate_and_close",
    "is_transparent_proxy",
    "marshal",
    "one_way",
    "serializable",
    "set_async_workers",
]

__version__ = "0.1.0"

# Everything below loads on first use, so that a new domain pays only for what it uses:
# the marshalling tiers, remoting and channels cost a domain ~10 ms to import, and even
# AppDomain itself ~1 ms, which the domain of an isolated test rarely needs.  The main
# interpreter imports marshal (and msgpack with it) before it creates any domain (_domains).
# The errors too: every pytest run imports this package for the plugin, through pytest's
# assertion rewriter (see pytest_plugin), which would compile _errors again each time.
_LAZY = {
    "AppDomainError": "._errors",
    "AppDomainUnloadedException": "._errors",
    "CannotUnloadAppDomainException": "._errors",
    "ChannelClosedError": "._errors",
    "RemoteException": "._errors",
    "RemotingException": "._errors",
    "SerializationException": "._errors",
    "SocketHandoffError": "._errors",
    "ThreadAbortException": "._errors",
    "AppDomain": "._domains._domain",
    "AppDomainSetup": "._domains._setup",
    "AssemblyInfo": "._domains._assemblies",
    "AssemblyLoadEventArgs": "._domains._assemblies",
    "FirstChanceExceptionEventArgs": "._domains._assemblies",
    "ResolveEventArgs": "._domains._assemblies",
    "CallContext": "._core._context",
    "DomainStatistics": "._domains._monitoring",
    "PluginEventArgs": "._plugins._host",
    "PluginHost": "._plugins._host",
    "Event": "._domains._events",
    "EventArgs": "._domains._events",
    "UnhandledExceptionEventArgs": "._domains._events",
    "HostExitedEventArgs": "._domains._hosting",
    "SubinterpreterHost": "._domains._hosting",
    "ProcessHost": "._hosts._process",
    "RayHost": "._hosts._ray",
    "marshal": ".marshal",
    "Out": ".marshal",
    "Ref": ".marshal",
    "serializable": ".marshal",
    "Channel": "._channels._channel",
    "Lease": "._remoting",
    "MarshalByRefObject": "._remoting",
    "RemoteMethod": "._remoting",
    "is_transparent_proxy": "._remoting",
    "one_way": "._remoting",
    "set_async_workers": "._remoting",
    "Socket": "._sockets._socket",
    "SocketInformation": "._sockets._socket",
    "SocketInformationOptions": "._sockets._socket",
    "duplicate_and_close": "._sockets._socket",
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
