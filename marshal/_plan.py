"""Build (once per function) the plan of a call: Out parameters and tier per parameter."""

from __future__ import annotations

import sys

from ._markers import OUT_MARKER, Ref

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing loads only when a signature is planned
    import re
    import weakref
    from collections.abc import Callable

    from ._callplan import CallPlan

__all__ = ["CallPlan", "plan_for"]

TIER_PRIMITIVE, TIER_COPY, TIER_COPY_BACK, TIER_SERIALIZE = 1, 2, 3, 4
_PRIMITIVES: frozenset[object] = frozenset({int, float, bool, None, type(None)})
_COPIED: frozenset[object] = frozenset({str, bytes, bytearray, memoryview})  # and array.array
_NAMES = {
    **{t.__name__: TIER_PRIMITIVE for t in (int, float, bool)},
    "None": TIER_PRIMITIVE,
    **{n: TIER_COPY for n in ("str", "bytes", "bytearray", "memoryview", "array", "array.array")},
}
# Compiled on first use (a new domain must not pay for re, weakref, dataclasses, inspect).
_OUT_TEXT: re.Pattern[str] | None = None
_REF_TEXT: re.Pattern[str] | None = None
_plans: weakref.WeakKeyDictionary[object, dict[bool, CallPlan]] | None = None


def __getattr__(name: str) -> object:
    if name == "CallPlan":  # defined with @dataclass, so imported only when asked for
        from ._callplan import CallPlan

        return CallPlan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def plan_for(func: Callable[..., object]) -> CallPlan:
    """Return the (cached) plan of ``func``; bound methods leave out ``self``."""
    global _plans
    target = getattr(func, "__func__", func)
    bound = target is not func
    if _plans is None:
        import weakref

        _plans = weakref.WeakKeyDictionary()
    try:
        cached = _plans.get(target)
    except TypeError:  # not weak-referenceable: plan without caching
        return _build(func, target)
    if cached is not None and bound in cached:
        return cached[bound]
    plan = _build(func, target)
    _plans.setdefault(target, {})[bound] = plan
    return plan


# A parameter as planning sees it: its name, whether it can be passed by position, and its
# annotation (an object, or text still to be read).
_Param = tuple[str, bool, object]

_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08


def _build(func: Callable[..., object], target: object) -> CallPlan:
    from ._callplan import CallPlan

    name = getattr(func, "__qualname__", repr(func))
    shape = _code_shape(func, target)
    if shape is None:
        shape = _inspect_shape(func, target)
    if shape is None:
        return CallPlan(name, (), frozenset(), frozenset(), (), TIER_SERIALIZE)
    parameters, result = shape
    params: list[str] = []
    out_positions: set[int] = set()
    out_names: set[str] = set()
    tiers: list[tuple[str, int]] = []
    for index, (param, positional, annotation) in enumerate(parameters):
        tier = tier_of(annotation)
        tiers.append((param, tier))
        if positional:
            params.append(param)
        if tier == TIER_COPY_BACK and is_out(annotation):
            out_names.add(param)
            if positional:
                out_positions.add(index)
    return CallPlan(
        name,
        tuple(params),
        frozenset(out_positions),
        frozenset(out_names),
        tuple(tiers),
        tier_of(result),
    )


def _code_shape(func: object, target: object) -> tuple[list[_Param], object] | None:
    """Read a plain function's parameters from its code object; None for anything else.

    inspect.signature would do, but importing inspect costs a new domain ~14 ms.  What the
    code object cannot say (a __signature__, a __wrapped__ chain, partials, builtins) is
    left to inspect.
    """
    import types

    if type(target) is not types.FunctionType:
        return None
    if hasattr(target, "__signature__") or hasattr(target, "__wrapped__"):
        return None
    try:
        annotations = dict(target.__annotations__)  # 3.14 evaluates them here: may raise
    except Exception:
        return None
    code = target.__code__
    positional = code.co_argcount
    names = code.co_varnames[: positional + code.co_kwonlyargcount]
    parameters: list[_Param] = [
        (name, index < positional, annotations.get(name, _EMPTY))
        for index, name in enumerate(names)
    ]
    extra = positional + code.co_kwonlyargcount
    for flag in (_CO_VARARGS, _CO_VARKEYWORDS):
        if code.co_flags & flag:
            name = code.co_varnames[extra]
            parameters.append((name, False, annotations.get(name, _EMPTY)))
            extra += 1
    if func is not target:  # bound: the first parameter is self (or cls)
        if positional == 0:
            return None
        del parameters[0]
    namespace = target.__globals__
    parameters = [(n, p, _evaluate(a, namespace)) for n, p, a in parameters]
    return parameters, _evaluate(annotations.get("return", _EMPTY), namespace)


class _Empty:
    """No annotation (what inspect calls Parameter.empty)."""


_EMPTY = _Empty()


def _evaluate(annotation: object, namespace: dict[str, object]) -> object:
    """Turn an annotation written as text into its object where it evaluates; else keep it."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)  # as typing.get_type_hints does
    except Exception:  # unresolvable here: read as text by tier_of
        return annotation


def _inspect_shape(
    func: Callable[..., object], target: object
) -> tuple[list[_Param], object] | None:
    """Read any other callable's parameters with inspect (and typing for the hints)."""
    import inspect
    import typing

    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable string annotations: read them as text below
        hints = {}
    parameters: list[_Param] = [
        (
            param.name,
            param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD),
            hints.get(param.name, param.annotation),
        )
        for param in signature.parameters.values()
    ]
    return parameters, hints.get("return", signature.return_annotation)


def is_out(annotation: object) -> bool:
    """Tell whether an annotation is ``Out[...]`` (as an object or as text)."""
    if isinstance(annotation, str):
        return bool(_patterns()[0].match(_unquote(annotation)))
    return OUT_MARKER in getattr(annotation, "__metadata__", ())


def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Return the (Out, Ref) patterns for annotations written as text."""
    global _OUT_TEXT, _REF_TEXT
    if _OUT_TEXT is None or _REF_TEXT is None:
        import re

        _OUT_TEXT = re.compile(r"^\s*(?:[\w.]+\.)?Out\s*\[")
        _REF_TEXT = re.compile(r"^\s*(?:[\w.]+\.)?Ref\b")
    return _OUT_TEXT, _REF_TEXT


def _unquote(text: str) -> str:
    """Strip a doubly quoted annotation ("'Out[bytes]'" under PEP 563) down to its text."""
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


def tier_of(annotation: object) -> int:
    """Return the marshalling tier an annotation implies (4 when unknown)."""
    if is_out(annotation):
        return TIER_COPY_BACK
    if isinstance(annotation, str):
        text = _unquote(annotation)
        if _patterns()[1].match(text):
            return TIER_COPY_BACK
        return _NAMES.get(text, TIER_SERIALIZE)
    if annotation is Ref or getattr(annotation, "__origin__", None) is Ref:
        return TIER_COPY_BACK
    try:
        if annotation in _PRIMITIVES:
            return TIER_PRIMITIVE
        if annotation in _COPIED:
            return TIER_COPY
        array = sys.modules.get("array")  # not imported for this: it costs a domain ~1.5 ms
        if array is not None and annotation is array.array:
            return TIER_COPY
    except TypeError:  # unhashable annotation objects
        pass
    return TIER_SERIALIZE
