"""Marshal values across AppDomains: the four tiers of Mono's cross-domain wrappers.

1. primitives (None, bool, int, float) pass as they are;
2. str, bytes, bytearray, memoryview and array.array are copied by the runtime;
3. ``Out[...]`` parameters and ``Ref`` boxes are copied back after the call;
4. everything else crossing by value is encoded (shareable tagged tuples in-process,
   msgpack with ExtType codes for bytes): containers, dataclasses, enums, datetimes,
   Decimal, UUID, paths, exceptions and @serializable classes.

See FORMAT.md for the wire format.

Every new domain imports this package, so it imports no more than it must: the modules of
the value types (datetime, decimal, uuid, ...) are imported when a value needs them; in a
subinterpreter, dumps/loads (and msgpack) on first use, and CallPlan (a dataclass) when
first asked for.
"""

from __future__ import annotations

import _interpreters
import importlib

from . import _exc as _exc  # registers exception encoding
from . import _globals as _globals  # registers by-name crossing (its rule comes last)
from . import _types as _types  # registers the value types
from ._calls import (
    copy_back,
    decode_call,
    decode_exception,
    decode_reply,
    encode_call,
    encode_exception,
    encode_reply,
    from_shareable,
    to_shareable,
    wire_from_bytes,
    wire_to_bytes,
)
from ._markers import Ref, is_serializable, serializable
from ._plan import plan_for
from ._registry import register_reference_type, set_module_alias

TYPE_CHECKING = False
if TYPE_CHECKING or _interpreters.get_current()[0] == _interpreters.get_main()[0]:
    # The main interpreter must import msgpack before any subinterpreter does.
    from ._bytes import dumps, loads
if TYPE_CHECKING:
    from ._callplan import CallPlan
    from ._markers import Out

    # Types only (no run-time object, so not in __all__): what crosses interpreters.
    from ._tags import Node as Node
    from ._tags import Shareable as Shareable

# Names imported on first access (module __getattr__), by the module that defines them.
_LAZY = {"CallPlan": "_callplan", "Out": "_markers", "dumps": "_bytes", "loads": "_bytes"}

__all__ = [
    "CallPlan",
    "Out",
    "Ref",
    "copy_back",
    "decode_call",
    "decode_exception",
    "decode_reply",
    "dumps",
    "encode_call",
    "encode_exception",
    "encode_reply",
    "from_shareable",
    "is_serializable",
    "loads",
    "plan_for",
    "register_reference_type",
    "serializable",
    "set_module_alias",
    "to_shareable",
    "wire_from_bytes",
    "wire_to_bytes",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
