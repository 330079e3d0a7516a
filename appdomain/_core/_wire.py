"""Name the messages of the call path, so both ends of every route agree on their shapes.

Messages travel on cross-interpreter queues, which share only exact tuples of shareable
values (None, bool, int, float, str, bytes, memoryview and tuples of them): a tuple
subclass is refused, and converting one at each queue costs ~0.4 µs, four times a call.
So at run time every message is a plain tuple, built in one place per kind, and the
names below are its type for the checker.  The table (one place, so both sides agree):

    kind        shape                                                    travels on
    Request     (op, payload, seq, ctx)                                  the caller's mailbox
    Dispatched  (op, payload, seq, ctx, reply_queue, reply_address)      the target's inbox
    Reply       (seq, ok, value, ctx)                                    the caller's mailbox
    NativeReply (done, value, ctx)                                       returned by invoke

``ok`` is True when ``value`` is the op's result, False when it is an encoded exception.
``ctx`` carries the logical call context both ways (``_context``); None when empty.  A
Dispatched request with ``reply_queue`` < 0 is a one-way post: nobody waits for a reply.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    # A value the queues share (marshal's to_shareable makes one of anything that crosses);
    # marshal, the layer below, defines it.
    from ..marshal import Shareable as Shareable

    # The logical call context as it crosses: None, or marshal's shareable tree of it.
    type WireContext = Shareable
    type Request = tuple[str, Shareable, int, WireContext]
    type Dispatched = tuple[str, Shareable, int, WireContext, int, str]
    type Reply = tuple[int, bool, Shareable, WireContext]
    type NativeReply = tuple[
        bool | int, Shareable, WireContext
    ]  # done: True, False or 2 (a reference)

__all__ = ["ONE_WAY", "Route", "is_request"]

# The reply queue of a one-way post.
ONE_WAY = -1


class Route(tuple[int, int, str, int]):  # a NamedTuple would import typing into every domain
    """Where a domain can be reached: its interpreter, dispatcher inbox and release queue.

    The release queue carries remote-object releases posted by other domains' finalizers,
    drained before each call.  A route crosses domains as a plain tuple (``tuple(route)``).
    """

    __slots__ = ()

    def __new__(
        cls, interp_id: int, inbox_queue: int, inbox_address: str, release_queue: int
    ) -> Route:
        return tuple.__new__(cls, (interp_id, inbox_queue, inbox_address, release_queue))

    @property
    def interp_id(self) -> int:
        return self[0]

    @property
    def inbox_queue(self) -> int:
        return self[1]

    @property
    def inbox_address(self) -> str:
        return self[2]

    @property
    def release_queue(self) -> int:
        return self[3]

    def __repr__(self) -> str:
        return f"Route(interp_id={self[0]}, inbox_queue={self[1]}, release_queue={self[3]})"


def is_request(message: tuple[object, ...]) -> bool:
    """Tell a Request left on a mailbox from the Reply that replaced it (op str vs seq int)."""
    return type(message[0]) is str
