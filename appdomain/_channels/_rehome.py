"""Keep the values a domain sent to channels alive past its unload: note them, re-send them.

A queued value belongs to the interpreter that sent it and vanishes when that domain is
unloaded.  So each non-default domain notes the channels it sent to (``sent_to``), and its
unloader re-sends what is still queued there (``rehome``) before destroying it.  Apart from
``_channel`` so that the domain boot can read ``sent_to`` without loading channels (and
the marshalling tiers with them).
"""

from __future__ import annotations

from .._core import _compat

__all__ = ["rehome", "sent_to"]

# The items queues of the channels this domain sent values to.
sent_to: set[int] = set()


def rehome(items_queues: tuple[int, ...]) -> None:
    """Take and re-send every value queued on these channels, so this domain owns them."""
    for queue_id in items_queues:
        try:
            pending = [_compat.queue_get(queue_id) for _ in range(_compat.queue_count(queue_id))]
        except (_compat.QueueEmpty, _compat.QueueNotFoundError):
            continue  # drained by a receiver meanwhile, or the channel is gone
        for item in pending:
            try:
                _compat.queue_put(queue_id, item)
            except (_compat.QueueFull, _compat.QueueNotFoundError):
                break
