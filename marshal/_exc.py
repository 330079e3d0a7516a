"""Encode exceptions by type name, args, state, traceback text and cause chain."""

from __future__ import annotations

from .._errors import RemoteException, SerializationException
from . import _tags as tg
from ._core import Ctx, Refusal, add_decoder, add_rule, decode, encode, short_repr
from ._types import class_name, resolve_kind

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from ._tags import Node, Shareable

    # (EXCEPTION, module, qualname, message, args, state, traceback, cause, context,
    #  suppress_context): args, state, cause and context are trees or None.
    type ExceptionNode = tuple[
        int, str, str, str, Shareable, Shareable, str, Shareable, Shareable, bool
    ]

__all__ = ["STACK_NOTE", "encode_exception_node", "rebuild_exception"]

STACK_NOTE = "Server stack trace:\n"


def _try_encode(value: object, ctx: Ctx) -> Shareable:
    """Encode value, or return None when some part of it cannot cross."""
    try:
        return encode(value, ctx)
    except Refusal:
        return None


def encode_exception_node(exc: BaseException, ctx: Ctx) -> Node:
    """Encode an exception node; parts that cannot cross are dropped, never refused."""
    key = ctx.enter(exc)
    try:
        try:
            module, qualname = class_name(type(exc))
        except Refusal:
            module, qualname = type(exc).__module__, type(exc).__qualname__
        try:
            message = str(exc)
        except Exception:
            message = short_repr(exc)
        import traceback  # only now: a new domain must not pay for it

        tb = "".join(traceback.format_exception(exc, chain=False))
        args = _try_encode(exc.args, ctx)
        state = {k: v for k, v in vars(exc).items() if k != "remote_traceback"}
        encoded_state = _try_encode(state, ctx) if state else None
        if state and encoded_state is None:
            # Keep what can cross; drop attributes that cannot (e.g. a socket).
            kept = {k: v for k, v in state.items() if _try_encode(v, ctx) is not None}
            encoded_state = _try_encode(kept, ctx)
        cause = _chained(exc.__cause__, ctx)
        context = None if exc.__context__ is exc.__cause__ else _chained(exc.__context__, ctx)
        return (
            tg.EXCEPTION,
            module,
            qualname,
            message,
            args,
            encoded_state,
            tb,
            cause,
            context,
            exc.__suppress_context__,
        )
    finally:
        ctx.active.discard(key)


def _chained(exc: BaseException | None, ctx: Ctx) -> Shareable:
    if exc is None or id(exc) in ctx.active:
        return None
    return _try_encode(exc, ctx)


def rebuild_exception(x: ExceptionNode, trusted: bool) -> BaseException:
    """Rebuild an exception node: its own type when importable, else RemoteException."""
    _, module, qualname, message, args, state, tb, cause, context, suppress = x
    exc: BaseException
    try:
        cls = resolve_kind(module, qualname, trusted, "exception")
        exc = _instantiate(cls, decode(args, trusted) if args is not None else (message,))
        if state is not None:
            values = decode(state, trusted)
            if type(values) is not dict:
                raise SerializationException("exception state must be a dict")
            exc.__dict__.update(values)
    except SerializationException:
        exc = RemoteException(f"{module}.{qualname}", str(message), str(tb))
    exc.remote_traceback = str(tb)  # type: ignore[attr-defined]
    if cause is not None:
        exc.__cause__ = _as_exception(decode(cause, trusted))
    if context is not None:
        exc.__context__ = _as_exception(decode(context, trusted))
    exc.__suppress_context__ = bool(suppress)
    return exc


def _instantiate(cls: type[BaseException], args: object) -> BaseException:
    """Create the exception without running __init__ (its signature may differ from args)."""
    if type(args) is not tuple:
        raise SerializationException("exception args must be a tuple")
    try:
        exc = cls.__new__(cls, *args)
        exc.args = args
    except Exception:
        try:
            exc = cls(*args)
        except Exception as error:
            raise SerializationException(f"cannot rebuild {cls.__qualname__}: {error}") from None
    return exc


def _as_exception(value: object) -> BaseException | None:
    return value if isinstance(value, BaseException) else None


add_rule(lambda c: issubclass(c, BaseException), encode_exception_node)
add_decoder(tg.EXCEPTION, rebuild_exception)
