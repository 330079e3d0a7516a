"""Pass objects between domains by reference: MarshalByRefObject and transparent proxies."""

from ._async import async_workers, set_async_workers
from ._base import Lease, MarshalByRefObject, is_one_way, one_way
from ._methods import RemoteMethod
from ._proxy import is_transparent_proxy, live_proxies
from ._server import install, live_count

# Loaded on first use (appdomain's facade, an incoming "appdomain._remoting:..." operation
# or reference): register the operations and the by-reference marshalling right away.
install()

__all__ = [
    "Lease",
    "MarshalByRefObject",
    "RemoteMethod",
    "async_workers",
    "install",
    "is_one_way",
    "is_transparent_proxy",
    "live_count",
    "live_proxies",
    "one_way",
    "set_async_workers",
]
