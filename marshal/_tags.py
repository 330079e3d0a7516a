"""Number the node tags (shared by the shareable tree and the msgpack ExtType codes)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    # What crosses interpreters: the values a cross-interpreter queue shares as they are
    # (exact types only) and tuples of them.  to_shareable's output, from_shareable's input,
    # and every message of the call path (appdomain._core._wire names their shapes).
    type Shareable = bool | int | float | str | bytes | memoryview | tuple[Shareable, ...] | None
    # A node of a shareable tree: a tuple whose first item is a tag below, then its children.
    type Node = tuple[Shareable, ...]

# A node is a tuple whose first item is one of these tags. In dumps() output the same
# numbers are the msgpack ExtType codes. Never renumber: FORMAT.md pins them.
BIGINT = 1
TUPLE = 2
LIST = 3
DICT = 4
SET = 5
FROZENSET = 6
BYTEARRAY = 7
MEMORYVIEW = 8
ARRAY = 9
COMPLEX = 10
DATETIME = 11
DATE = 12
TIME = 13
TIMEDELTA = 14
TIMEZONE = 15
ZONEINFO = 16
DECIMAL = 17
UUID = 18
PATH = 19
ENUM = 20
DATACLASS = 21
OBJECT = 22
EXCEPTION = 23
REFERENCE = 24
REFBOX = 25
NAMEDTUPLE = 26
# In-process only: a builtin-only container packed by CPython's marshal module. Never
# written by dumps() and refused by loads().
MARSHAL = 27
# In-process only: a large bytes object crossing as a view of the sender's memory (one copy,
# made by the receiver). Never written by dumps() and refused by loads().
BYTES_VIEW = 28
# By name (module + qualname, looked up by the receiver): modules, classes, functions.
GLOBAL = 29
# functools.partial of a by-name callable: func, args, keywords, __dict__ (or None).
PARTIAL = 30

NAMES = {v: k for k, v in dict(globals()).items() if isinstance(v, int) and k.isupper()}

# Wire headers: version in the high byte, message kind in the low byte.
WIRE_VERSION = 1
CALL = (WIRE_VERSION << 8) | 1
CALL_KW = (WIRE_VERSION << 8) | 2
REPLY = (WIRE_VERSION << 8) | 3
REPLY_OUT = (WIRE_VERSION << 8) | 4
FAULT = (WIRE_VERSION << 8) | 5
