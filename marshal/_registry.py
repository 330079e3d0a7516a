"""Keep the per-interpreter tables: reference types, module aliases, resolved classes."""

from __future__ import annotations

import importlib
import sys

from .._aliases import local_to_wire as _alias_out
from .._aliases import wire_to_local as _alias_in

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "ReferenceType",
    "find_module",
    "find_reference_type",
    "local_module",
    "reference_by_key",
    "register_reference_type",
    "reference_types",
    "resolve",
    "set_module_alias",
    "type_key",
    "wire_module",
]

if TYPE_CHECKING:
    from ._tags import Shareable

    # Each takes the one class it is registered for (or the tuple it was reduced to).
    Reduce = Callable[[Any], tuple[Shareable, ...]]
    Rebuild = Callable[[Any], object]


class ReferenceType:
    """One registered reference type: how its instances are reduced and rebuilt."""

    __slots__ = ("cls", "key", "rebuild", "reduce")

    def __init__(self, cls: type, key: str, reduce: Reduce, rebuild: Rebuild) -> None:
        self.cls = cls
        self.key = key
        self.reduce = reduce
        self.rebuild = rebuild


# Insertion ordered: the first registered base that matches wins.
_references: dict[str, ReferenceType] = {}
_listeners: list[Callable[[], None]] = []
_resolved: dict[tuple[str, str], type] = {}


def type_key(cls: type) -> str:
    """Name a class as ``module:qualname`` (the module as it travels on the wire)."""
    return f"{wire_module(cls.__module__)}:{cls.__qualname__}"


def register_reference_type(cls: type, reduce: Reduce, rebuild: Rebuild) -> None:
    """Make every instance of ``cls`` (subclasses too) cross as ``reduce(obj)``.

    ``reduce`` returns a tuple of shareables; the receiving interpreter, which must have
    registered the same class, calls ``rebuild(that_tuple)``. This rule is checked before
    every other one (except exact builtin scalars, which are never reference types).
    """
    if not isinstance(cls, type):
        raise TypeError(f"'cls' must be a class (got {cls!r} that is a {type(cls).__name__})")
    for name, fn in (("reduce", reduce), ("rebuild", rebuild)):
        if not callable(fn):
            raise TypeError(f"{name!r} must be callable (got {fn!r} that is a {type(fn).__name__})")
    key = f"{cls.__module__}:{cls.__qualname__}"
    _references[key] = ReferenceType(cls, key, reduce, rebuild)
    for listener in _listeners:
        listener()


def on_registry_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever a reference type is registered (to drop caches)."""
    _listeners.append(listener)


def reference_types() -> tuple[ReferenceType, ...]:
    """Return the registered reference types, in registration order."""
    return tuple(_references.values())


def find_reference_type(cls: type) -> ReferenceType | None:
    """Return the reference type ``cls`` falls under, if any."""
    for ref in _references.values():
        if issubclass(cls, ref.cls):
            return ref
    return None


def reference_by_key(key: str, trusted: bool = True) -> ReferenceType | None:
    """Return the reference type registered under ``key`` in this interpreter.

    Untrusted lookups never import (as ``resolve``): the data names the module.
    """
    ref = _references.get(key)
    if ref is None and trusted and key.startswith("appdomain."):
        # appdomain's own reference types (proxies, channels) register when their module
        # loads, which a domain does on first use: the first one to arrive loads it.
        importlib.import_module(key.partition(":")[0])
        ref = _references.get(key)
    return ref


def set_module_alias(local_name: str, wire_name: str) -> None:
    """Send types of module ``local_name`` as ``wire_name`` and resolve them back here.

    A worker domain that imported the caller's main script as ``__appdomain_main__`` calls
    ``set_module_alias("__appdomain_main__", "__main__")``.
    """
    for name, value in (("local_name", local_name), ("wire_name", wire_name)):
        if not isinstance(value, str) or not value:
            raise TypeError(
                f"{name!r} must be a non-empty str (got {value!r} that is a {type(value).__name__})"
            )
    _alias_out[local_name] = wire_name
    _alias_in[wire_name] = local_name
    _resolved.clear()


def wire_module(name: str) -> str:
    """Return the module name a local module travels under."""
    return _alias_out.get(name, name)


def local_module(name: str) -> str:
    """Return the local module a wire module name stands for."""
    return _alias_in.get(name, name)


def find_module(module: str, trusted: bool) -> object:
    """Return the module a wire name names here; import it only for trusted data."""
    local = local_module(module)
    mod = sys.modules.get(local)
    if mod is None:
        if not trusted:
            raise LookupError(f"module {local!r} is not imported (untrusted data cannot import)")
        try:
            mod = importlib.import_module(local)
        except Exception as exc:  # any import failure means "not resolvable here"
            raise LookupError(f"cannot import module {local!r}: {exc}") from None
    return mod


def resolve(module: str, qualname: str, trusted: bool) -> type:
    """Find a class by wire module name and qualname; raise LookupError if it is not there.

    Trusted lookups import the module; untrusted ones only look at modules already imported.
    """
    key = (module, qualname)
    cls = _resolved.get(key)
    if cls is not None:
        return cls
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise LookupError(f"bad type name {module!r}:{qualname!r}")
    if "<locals>" in qualname or not qualname:
        raise LookupError(f"{qualname!r} is local to a function and cannot be found by name")
    local = local_module(module)
    obj: object = find_module(module, trusted)
    for part in qualname.split("."):
        if part.startswith("__") and part.endswith("__"):
            raise LookupError(f"{qualname!r} names a dunder attribute")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LookupError(f"module {local!r} has no {qualname!r}") from None
    if not isinstance(obj, type):
        raise LookupError(f"{local}.{qualname} is not a class (it is a {type(obj).__name__})")
    _resolved[key] = obj
    return obj
