"""Carry .NET's logical call context into cross-domain calls and back."""

from __future__ import annotations

import _contextvars as contextvars  # what contextvars re-exports, without its module

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from typing import Any

    from ._wire import WireContext

__all__ = ["CallContext", "capture", "install", "collect", "uninstall", "merge"]

# None means "no logical data": the common case costs one lookup per call.
_data: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "appdomain_logical_call_context", default=None
)


class CallContext:
    """Named values that flow with a call into other domains, and back (LogicalCallContext)."""

    @staticmethod
    def logical_set_data(name: str, value: object) -> None:
        """Store value under name; it travels with every cross-domain call from here."""
        if not isinstance(name, str):
            raise TypeError(f"'name' must be str (got {name!r} that is a {type(name).__name__})")
        current = _data.get()
        updated = dict(current) if current else {}
        updated[name] = value
        _data.set(updated)

    @staticmethod
    def logical_get_data(name: str) -> Any:
        """Return the value stored under name, or None."""
        current = _data.get()
        return None if current is None else current.get(name)

    @staticmethod
    def free_named_data_slot(name: str) -> None:
        """Forget the value stored under name."""
        current = _data.get()
        if current and name in current:
            updated = dict(current)
            del updated[name]
            # None, not {}: an empty context must not keep calls off the lean route.
            _data.set(updated or None)

    LogicalSetData = logical_set_data
    LogicalGetData = logical_get_data
    FreeNamedDataSlot = free_named_data_slot


def has_data() -> bool:
    """Tell whether this context carries logical data (the fast paths skip it when not)."""
    return _data.get() is not None


def clear() -> None:
    """Forget this context's logical data."""
    _data.set(None)


def capture() -> WireContext:
    """Encode the caller's logical data for a request (None when there is none)."""
    current = _data.get()
    if current is None:
        return None
    from ..marshal import to_shareable

    wire: WireContext = to_shareable(current, name="CallContext")
    return wire


def install(ctx: WireContext) -> contextvars.Token[dict[str, object] | None] | None:
    """Make the request's logical data current in the callee (a clean context if None)."""
    if ctx is None:
        if _data.get() is None:
            return None  # already clean: nothing to restore afterwards
        return _data.set(None)
    from ..marshal import from_shareable

    logical: Any = from_shareable(ctx)  # the dict capture() encoded
    return _data.set(dict(logical))


def collect() -> WireContext:
    """Encode the callee's logical data for the reply, so changes flow back."""
    return capture()


def uninstall(token: contextvars.Token[dict[str, object] | None] | None) -> None:
    """Restore the logical data that was current before install()."""
    if token is None:
        if _data.get() is not None:
            _data.set(None)
        return
    try:
        _data.reset(token)
    except ValueError:  # token made in another context (thread switched contexts)
        _data.set(None)


def merge(ctx_back: WireContext) -> None:
    """Adopt the logical data the callee returned."""
    from ..marshal import from_shareable

    logical: Any = from_shareable(ctx_back)  # the dict collect() encoded
    _data.set(dict(logical))
