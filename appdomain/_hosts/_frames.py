"""Frame the messages two processes' runtimes exchange over a link (marshal/FORMAT.md, "Links").

A frame is ``MAGIC | VERSION | kind | body``, the body CPython's ``marshal`` of one tuple
whose shape the kind fixes (the table below, one place for both ends).  Payloads inside are
the call path's shareable trees, which marshal keeps as they are (a memoryview becomes
bytes, which every buffer decoder accepts).  Both ends run the same appdomain and Python,
as a process host's child always does; a frame that is not what its kind says is a broken
link, never a value.

    kind     body                                                     from
    HELLO    (process key, pid, node, default route, lane address)    the host, once, first
    CALL     (call id, target key, target route, op, payload, ctx)    either end
    POST     (target key, target route, op, payload, ctx)             either end (one-way)
    REPLY    (call id, ok, value, ctx)                                either end
    RELEASE  (target key, target route, object id, count)             either end
    BYE      (reason,)                                                either end, last
"""

from __future__ import annotations

import marshal

from .._errors import RemotingException

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Buffer, Callable

    from .._core._wire import Shareable

    type Problem = Callable[[Buffer, int, bool, bool], tuple[str, int, bool] | None]
    type RouteTuple = tuple[int, int, str, int]

    type Decoder = Callable[
        [Buffer, int, int, dict[int, tuple[int, tuple[tuple[int, type], ...]]]],
        tuple[int, tuple[Shareable, ...]] | None,
    ]

_native_problem: Problem | None
_native_decode: Decoder | None
try:  # the C walk of marshal bytes (~30x the Python one), when the C switch was built
    from .._native import _ext

    _native_problem = _ext.marshal_problem
    _native_decode = _ext.decode_frame
except ImportError:
    _native_problem = _native_decode = None

__all__ = [
    "BYE",
    "CALL",
    "HELLO",
    "POST",
    "RELEASE",
    "REPLY",
    "FrameError",
    "decode",
    "encode",
]

MAGIC = 0xA7
VERSION = 1
# The version of CPython's marshal format the bodies use: 2, the newest whose bytes depend
# on the values alone (3 and later mark objects that are referenced twice: a refcount).
MARSHAL_VERSION = 2

HELLO = 1
CALL = 2
POST = 3
REPLY = 4
RELEASE = 5
BYE = 6

# kind -> (name, the body's length, the types of its fields; None: any shareable)
_SHAPES: dict[int, tuple[str, tuple[type | None, ...]]] = {
    HELLO: ("HELLO", (str, int, str, tuple, str)),
    CALL: ("CALL", (int, str, tuple, str, None, None)),
    POST: ("POST", (str, tuple, str, None, None)),
    REPLY: ("REPLY", (int, bool, None, None)),
    RELEASE: ("RELEASE", (str, tuple, int, int)),
    BYE: ("BYE", (str,)),
}


# kind -> (index, type) of each field whose type is fixed
_TYPED = {
    kind: tuple((index, want) for index, want in enumerate(fields) if want is not None)
    for kind, (_, fields) in _SHAPES.items()
}


# kind -> the first bytes of its frames
_PREFIXES = {kind: bytes((MAGIC, VERSION, kind)) for kind in _SHAPES}
# The same, as decode_frame() in C reads it: kind -> (field count, typed fields)
_C_SHAPES = {kind: (len(fields), _TYPED[kind]) for kind, (_, fields) in _SHAPES.items()}


class FrameError(RemotingException):
    """A frame from the other process is not what the link format says (a broken link)."""


def encode(kind: int, body: tuple[Shareable, ...]) -> bytes:
    """Return the bytes of one frame of kind."""
    # The format named, so that the bytes stay the same on every Python that writes it.
    return _PREFIXES[kind] + marshal.dumps(body, MARSHAL_VERSION)


def decode(data: bytes) -> tuple[int, tuple[Shareable, ...]]:
    """Return (kind, body) of one frame; raise FrameError naming what is wrong with it."""
    fast = _native_decode
    if fast is not None:
        # Every check below in one C call for a valid frame; any other is looked at again
        # here, which says what is wrong with it.
        decoded = fast(data, MAGIC, VERSION, _C_SHAPES)
        if decoded is not None:
            return decoded
    if len(data) < 4:
        raise FrameError(f"link frame must be at least 4 bytes (got {len(data)})")
    if data[0] != MAGIC:
        raise FrameError(f"link frame must start with 0x{MAGIC:02x} (got 0x{data[0]:02x})")
    if data[1] != VERSION:
        raise FrameError(
            f"link frame is of version {data[1]}; this appdomain speaks version {VERSION}"
        )
    kind = data[2]
    shape = _SHAPES.get(kind)
    if shape is None:
        raise FrameError(f"link frame kind must be one of {sorted(_SHAPES)} (got {kind})")
    name, fields = shape
    raw = memoryview(data)[3:]
    what = f"{name} frame body"
    native = _native_problem
    if native is not None:  # the body and the MARSHAL nodes in it, in one walk
        found = native(data, 3, False, True)
        if found is not None:
            reason, pos, in_node = found
            where = "a MARSHAL node in a frame" if in_node else what
            raise FrameError(f"{where} is not valid marshal data: {reason} (at byte {pos})")
    elif len(raw) > QUICK_CHECK_BYTES or not _counts_fit(data):
        check_marshal(raw, what, containers=False)
    try:
        body = marshal.loads(raw)
    except (ValueError, EOFError, TypeError) as exc:
        raise FrameError(f"{name} frame body is not readable: {exc}") from None
    if type(body) is not tuple or len(body) != len(fields):
        raise FrameError(f"{name} frame body must be a tuple of {len(fields)} (got {body!r:.80})")
    for index, want in _TYPED[kind]:
        value = body[index]
        if type(value) is not want:
            raise FrameError(
                f"{name} frame field {index} must be {want.__name__} "
                f"(got {value!r:.80} that is a {type(value).__name__})"
            )
    if native is None:
        _check_nested(body)
    return kind, body


def _check_nested(body: tuple[Shareable, ...]) -> None:
    """Check the stdlib-marshal bytes that MARSHAL nodes (tag 27) of the payloads carry."""
    stack: list[Shareable] = [body]
    while stack:
        item = stack.pop()
        if type(item) is not tuple:
            continue
        if len(item) == 2 and item[0] == _MARSHAL_TAG and type(item[1]) is bytes:
            if len(item[1]) > QUICK_CHECK_BYTES or not _counts_fit(item[1], 0):
                check_marshal(item[1], "a MARSHAL node in a frame", containers=True)
            continue
        stack.extend(item)


# appdomain.marshal's MARSHAL tag (FORMAT.md): a builtin container as CPython marshal bytes.
_MARSHAL_TAG = 27

# CPython marshal's type codes (Python/marshal.c), as far as the link's values use them.
_FIXED = {ord("N"): 0, ord("T"): 0, ord("F"): 0, ord("."): 0, ord("i"): 4, ord("g"): 8,
          ord("y"): 16}  # fmt: skip
_SIZED = {ord(c) for c in "suatA"}  # an int32 length, then that many bytes
_SHORT = {ord("z"), ord("Z")}  # a one-byte length, then that many bytes
_SEQUENCES = {ord("(")}  # an int32 count, then the items
_CONTAINERS = {ord("["), ord("<"), ord(">")}  # lists, sets, frozensets: in MARSHAL nodes only
_DICT = -1  # a dict's level: key, value pairs until a NULL
MAX_MARSHAL_DEPTH = 1000


# Frames up to this size are checked the quick way (_counts_fit), larger ones item by item.
QUICK_CHECK_BYTES = 4096
# The codes after which CPython's marshal allocates what a count says before reading it: a
# tuple, a list, a long's digits (with and without the reference flag).
_ALLOCATING = tuple(b"([l") + tuple(code | 0x80 for code in b"([l")


def _counts_fit(data: bytes, start: int = 3) -> bool:
    """Tell whether no count in data could make marshal allocate past its size.

    Looks at every byte that could start a tuple, list or long, wherever it is (a string's
    content too: a false alarm costs only the full check), and at the count after it.
    """
    end = len(data)
    for code in _ALLOCATING:
        at = data.find(code, start)
        while at >= 0:
            if at + 5 <= end:
                count = int.from_bytes(data[at + 1 : at + 5], "little", signed=True)
                if abs(count) > end:
                    return False
            at = data.find(code, at + 1)
    return True


def check_marshal(data: bytes | memoryview, what: str, *, containers: bool) -> None:
    """Refuse marshal bytes that are not plain values held within their own size.

    CPython's marshal trusts the lengths it reads: a tuple declaring 2**31 items makes it
    allocate 16 GiB before it looks for them.  This walks the bytes first, without building
    anything, and checks every declared length against the bytes that remain.
    """
    view = memoryview(data).cast("B")
    end = len(view)
    pos = 0
    refs = 0
    levels = [1]  # items still to read at each open level (_DICT: until NULL)

    def fail(reason: str) -> FrameError:
        return FrameError(f"{what} is not valid marshal data: {reason} (at byte {pos})")

    def int32() -> int:
        nonlocal pos
        if end - pos < 4:
            raise fail("it ends inside a length")
        value = int.from_bytes(view[pos : pos + 4], "little", signed=True)
        pos += 4
        return value

    while levels:
        if levels[-1] == 0:
            levels.pop()
            continue
        if pos >= end:
            raise fail("it ends inside a value")
        code = view[pos] & 0x7F
        if view[pos] & 0x80:
            refs += 1
        pos += 1
        if levels[-1] == _DICT:
            if code == ord("0"):
                levels.pop()
                continue
        else:
            levels[-1] -= 1
        if code in _FIXED:
            size = _FIXED[code]
        elif code in _SIZED:
            size = int32()
        elif code in _SHORT:
            if pos >= end:
                raise fail("it ends inside a length")
            size = view[pos]
            pos += 1
        elif code == ord("l"):
            digits = int32()
            size = 2 * abs(digits)
        elif code == ord("r"):
            index = int32()
            if not 0 <= index < refs:
                raise fail(f"a back-reference to object {index} of {refs}")
            continue
        elif code == ord(")") or code in _SEQUENCES or (containers and code in _CONTAINERS):
            if code == ord(")"):
                if pos >= end:
                    raise fail("it ends inside a length")
                count = view[pos]
                pos += 1
            else:
                count = int32()
            if not 0 <= count <= end - pos:
                raise fail(f"a container of {count} items in {end - pos} bytes")
            levels.append(count)
            size = 0
        elif containers and code == ord("{"):
            levels.append(_DICT)
            size = 0
        else:
            raise fail(f"type code {code!r} ({chr(code)!r}) is not one a link carries")
        if not 0 <= size <= end - pos:
            raise fail(f"a value of {size} bytes in {end - pos}")
        pos += size
        if len(levels) > MAX_MARSHAL_DEPTH:
            raise fail(f"it nests more than {MAX_MARSHAL_DEPTH} levels")
    if pos != end:
        raise fail(f"{end - pos} bytes follow the value")


def route_field(name: str, value: object) -> RouteTuple:
    """Check a route inside a frame: (interp id, inbox queue, wake address, release queue)."""
    if (
        type(value) is tuple
        and len(value) == 4
        and type(value[0]) is int
        and type(value[1]) is int
        and type(value[2]) is str
        and type(value[3]) is int
    ):
        return (value[0], value[1], value[2], value[3])
    raise FrameError(f"{name} frame route must be (int, int, str, int) (got {value!r:.80})")
