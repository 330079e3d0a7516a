"""Frame the messages two processes' runtimes exchange over a link (marshal/FORMAT.md, "Links").

A frame is ``MAGIC | VERSION | kind | body``, the body CPython's ``marshal`` of one tuple
whose shape the kind fixes (the table below, one place for both ends).  Payloads inside are
the call path's shareable trees, which marshal keeps as they are (a memoryview becomes
bytes, which every buffer decoder accepts).  Both ends run the same appdomain and Python,
as a process host's child always does; a frame that is not what its kind says is a broken
link, never a value.

    kind     body                                                     from
    HELLO    (process key, pid, node, default route)                  the host, once, first
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
    from .._core._wire import Shareable

    type RouteTuple = tuple[int, int, str, int]

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

HELLO = 1
CALL = 2
POST = 3
REPLY = 4
RELEASE = 5
BYE = 6

# kind -> (name, the body's length, the types of its fields; None: any shareable)
_SHAPES: dict[int, tuple[str, tuple[type | None, ...]]] = {
    HELLO: ("HELLO", (str, int, str, tuple)),
    CALL: ("CALL", (int, str, tuple, str, None, None)),
    POST: ("POST", (str, tuple, str, None, None)),
    REPLY: ("REPLY", (int, bool, None, None)),
    RELEASE: ("RELEASE", (str, tuple, int, int)),
    BYE: ("BYE", (str,)),
}


class FrameError(RemotingException):
    """A frame from the other process is not what the link format says (a broken link)."""


def encode(kind: int, body: tuple[Shareable, ...]) -> bytes:
    """Return the bytes of one frame of kind."""
    return bytes((MAGIC, VERSION, kind)) + marshal.dumps(body)


def decode(data: bytes) -> tuple[int, tuple[Shareable, ...]]:
    """Return (kind, body) of one frame; raise FrameError naming what is wrong with it."""
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
    try:
        body = marshal.loads(memoryview(data)[3:])
    except (ValueError, EOFError, TypeError) as exc:
        raise FrameError(f"{name} frame body is not readable: {exc}") from None
    if type(body) is not tuple or len(body) != len(fields):
        raise FrameError(f"{name} frame body must be a tuple of {len(fields)} (got {body!r:.80})")
    for index, (value, want) in enumerate(zip(body, fields, strict=True)):
        if want is not None and type(value) is not want:
            raise FrameError(
                f"{name} frame field {index} must be {want.__name__} "
                f"(got {value!r:.80} that is a {type(value).__name__})"
            )
    return kind, body


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
