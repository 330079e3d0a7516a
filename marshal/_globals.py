"""Send modules, classes and module-level functions by name, and partials of them.

Such an object crosses as its kind and its module + qualname, and the receiving domain
looks the name up (as pickle does for globals): both domains run the same code, so the
name stands for the same object there.  The sender checks that the name leads back to
the object itself (a lambda, a closure, a function-local class or a function shadowed in
its module does not), and the receiver that it leads to an object of the same kind.

The receiver's bound on what the data may make it do (``resolve_global``): trusted data
(every in-process crossing, ``loads(trusted=True)``) may import the module it names,
untrusted data only finds modules already imported; either way the walk from the module
goes through classes only (never into an instance, so no property runs) and never
through a dunder name (``__globals__``, ``__builtins__``, ``__class__``, ...).
"""

from __future__ import annotations

import types

from .._errors import SerializationException
from . import _tags as tg
from ._core import (
    Ctx,
    Refusal,
    add_builtin,
    add_decoder,
    add_lazy_builtin,
    add_rule,
    decode,
    decode_on_first_use,
    encode,
)
from ._registry import find_module, local_module, wire_module

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    import functools

    from ._tags import Node, Shareable

__all__ = ["KINDS", "kind_of", "resolve_global"]

# The kinds a GLOBAL node names, and how the receiver checks what it found.
MODULE = "module"
CLASS = "class"
FUNCTION = "function"
BUILTIN = "builtin"
KINDS = (MODULE, CLASS, FUNCTION, BUILTIN)
# Longest qualname walked (parts): a nested class of a nested class is ~3.
MAX_PARTS = 32


def kind_of(obj: object) -> str | None:
    """Name the by-name kind of obj, or None if it is none of them."""
    if isinstance(obj, type):
        return CLASS
    if isinstance(obj, types.ModuleType):
        return MODULE
    if type(obj) is types.FunctionType:
        return FUNCTION
    if type(obj) is types.BuiltinFunctionType:
        return BUILTIN
    return None


def resolve_global(kind: str, module: str, qualname: str, trusted: bool) -> object:
    """Find the object a GLOBAL node names; raise LookupError saying why it is not there.

    Trusted lookups import the module; untrusted ones only look at modules already
    imported.  The qualname is walked through classes only, never through a dunder name.
    """
    local = local_module(module)
    found: object = find_module(module, trusted)
    if kind != MODULE:
        parts = qualname.split(".")
        if len(parts) > MAX_PARTS:
            raise LookupError(f"{qualname!r} has more than {MAX_PARTS} parts")
        for n, part in enumerate(parts):
            if not part.isidentifier():
                raise LookupError(f"{qualname!r} is not a plain dotted name")
            if part.startswith("__") and part.endswith("__"):
                raise LookupError(f"{qualname!r} names a dunder attribute")
            if n and not isinstance(found, type):
                raise LookupError(f"{qualname!r} goes through a {type(found).__name__}")
            try:
                found = getattr(found, part)
            except Exception:  # AttributeError, or whatever a module __getattr__ raises
                raise LookupError(f"module {local!r} has no {qualname!r}") from None
    got = kind_of(found)
    if got != kind:
        what = f"a {got}" if got is not None else f"a {type(found).__name__} object"
        raise LookupError(f"it is {what} here, not a {kind}")
    return found


def _name(obj: object, kind: str) -> tuple[str, str]:
    """Return (wire module, qualname) of obj, refusing what its name does not lead back to."""
    module: object
    qualname: object = ""
    if kind == MODULE:
        module = getattr(obj, "__name__", None)
    else:
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if kind == BUILTIN:
            owner = getattr(obj, "__self__", None)
            if owner is not None and not isinstance(owner, types.ModuleType):
                raise Refusal(obj, "is a method bound to an object, so it cannot cross by name")
            if module is None and owner is not None:
                module = owner.__name__
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise Refusal(obj, f"is a {kind} without a module and name, so it cannot cross by name")
    if "<lambda>" in qualname:
        raise Refusal(obj, "is a lambda, so it cannot be found by name in another domain")
    if "<locals>" in qualname:
        raise Refusal(
            obj,
            f"is defined inside a function (qualname {qualname!r}), so it cannot be found "
            "by name in another domain",
        )
    try:
        same = resolve_global(kind, module, qualname, trusted=True) is obj
    except LookupError:
        same = False
    if not same:
        where = f"module {module!r}" if kind == MODULE else f"{module}.{qualname}"
        raise Refusal(
            obj,
            f"is not what {where} names in this domain, so it cannot cross by name",
        )
    return wire_module(module), qualname


def _encode_global(obj: object, ctx: Ctx) -> Node:
    kind = kind_of(obj)
    assert kind is not None  # registered for these kinds only
    module, qualname = _name(obj, kind)
    return (tg.GLOBAL, kind, module, qualname)


def _decode_global(x: tuple[int, Shareable, Shareable, Shareable], trusted: bool) -> object:
    if len(x) != 4:
        raise SerializationException(f"GLOBAL node has {len(x) - 1} children, not 3")
    _, kind, module, qualname = x
    if kind not in KINDS or type(module) is not str or type(qualname) is not str or not module:
        raise SerializationException(f"bad GLOBAL node {kind!r}, {module!r}, {qualname!r}")
    if (kind == MODULE) != (not qualname):
        raise SerializationException(f"bad GLOBAL node {kind!r}, {module!r}, {qualname!r}")
    name = module if kind == MODULE else f"{module}.{qualname}"
    try:
        return resolve_global(kind, module, qualname, trusted)
    except LookupError as exc:
        raise SerializationException(f"cannot find {kind} {name} in this domain: {exc}") from None


def _encode_partial(obj: functools.partial[object], ctx: Ctx) -> Node:
    key = ctx.enter(obj)
    try:
        step = ".func"
        func = encode(obj.func, ctx)
        step = ".args"
        args = encode(obj.args, ctx)
        step = ".keywords"
        keywords = encode(obj.keywords, ctx)
        step = ".__dict__"  # what functools.update_wrapper set on it
        # 3.14's update_wrapper copies the wrapped function's __annotate__, a function that
        # no name reaches: the receiver gets it back from __wrapped__ instead.
        attrs = {k: v for k, v in vars(obj).items() if k != "__annotate__"}
        state = encode(attrs, ctx) if attrs else None
    except Refusal as refusal:
        refusal.path.append(step)
        raise
    finally:
        ctx.active.discard(key)
    return (tg.PARTIAL, func, args, keywords, state)


def _load_functools() -> None:
    global functools
    import functools


def _decode_partial(
    x: tuple[int, Shareable, Shareable, Shareable, Shareable], trusted: bool
) -> functools.partial[object]:
    if len(x) != 5:
        raise SerializationException(f"PARTIAL node has {len(x) - 1} children, not 4")
    func = decode(x[1], trusted)
    args = decode(x[2], trusted)
    keywords = decode(x[3], trusted)
    state = decode(x[4], trusted)
    if not callable(func):
        raise SerializationException(f"PARTIAL func must be callable (got {type(func).__name__})")
    if type(args) is not tuple:
        raise SerializationException(f"PARTIAL args must be a tuple (got {type(args).__name__})")
    keywords = _str_keys(keywords, "keywords")
    out = functools.partial(func, *args, **keywords)
    if state is not None:
        vars(out).update(_str_keys(state, "state"))
        wrapped = vars(out).get("__wrapped__")
        if "__annotate__" in getattr(functools, "WRAPPER_ASSIGNMENTS", ()) and wrapped is not None:
            annotate = getattr(wrapped, "__annotate__", None)
            if annotate is not None:
                vars(out)["__annotate__"] = annotate
    return out


def _str_keys(mapping: object, label: str) -> dict[str, object]:
    if type(mapping) is not dict or not all(type(k) is str for k in mapping):
        raise SerializationException(f"PARTIAL {label} must be a dict with str keys")
    checked: dict[str, object] = mapping
    return checked


add_builtin(types.FunctionType, _encode_global)
add_builtin(types.BuiltinFunctionType, _encode_global)
add_builtin(types.ModuleType, _encode_global)
add_builtin(type, _encode_global)
# Metaclasses (ABCMeta, EnumMeta, ...) and module subclasses: tried after every other rule.
add_rule(lambda t: issubclass(t, type | types.ModuleType), _encode_global)
add_lazy_builtin("functools", "partial", _encode_partial)
add_decoder(tg.GLOBAL, _decode_global)
decode_on_first_use(tg.PARTIAL, _load_functools, _decode_partial)
