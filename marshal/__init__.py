"""Marshal values across AppDomains: the four tiers of Mono's cross-domain wrappers.

1. primitives (None, bool, int, float) pass as they are;
2. str, bytes, bytearray, memoryview and array.array are copied by the runtime;
3. ``Out[...]`` parameters and ``Ref`` boxes are copied back after the call;
4. everything else crossing by value is encoded (shareable tagged tuples in-process,
   msgpack with ExtType codes for bytes): containers, dataclasses, enums, datetimes,
   Decimal, UUID, paths, exceptions and @serializable classes.

See FORMAT.md for the wire format.
"""

from __future__ import annotations

from . import _exc as _exc  # registers exception encoding
from . import _types as _types  # registers the value types
from ._bytes import dumps, loads
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
from ._markers import Out, Ref, is_serializable, serializable
from ._plan import CallPlan, plan_for
from ._registry import register_reference_type, set_module_alias

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
