"""Run what an AppDomain handle asks of its domain: data, callbacks, scripts, new instances.

``_domain``'s methods check nothing themselves and call these with the domain's route; each
checks its arguments (errors name the argument and what it got) and makes one call.  The
values cross by ``appdomain.marshal``, imported on first use: a domain that never calls
these never loads it.
"""

from __future__ import annotations

import os

from .. import _core
from . import _runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from .._core import Route

__all__ = [
    "create_instance",
    "create_instance_from",
    "do_callback",
    "execute_assembly",
    "get_data",
    "importable_name",
    "set_data",
    "type_name",
]

# Remoting's operations (a layer above this one, so named, not imported): the target domain
# imports remoting when the first one arrives.
_REMOTING = "appdomain._remoting:"


def set_data(route: Route, name: str, value: object) -> None:
    """Store a copy of value in the domain under name."""
    from .. import marshal

    _check_str("name", name)
    wire = marshal.to_shareable(value, name=f"value for key {name!r}")
    _core.call(route, "domain.set_data", (name, wire))


def get_data(route: Route, name: str, default: object) -> Any:
    """Return a copy of the value stored in the domain under name, or default."""
    from .. import marshal

    _check_str("name", name)
    found, wire = _core.call(route, "domain.get_data", name)
    return marshal.from_shareable(wire) if found else default


def do_callback(
    route: Route, callback: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, Any]
) -> object:
    """Run an importable function inside the domain; return (a copy of) its result."""
    from .. import marshal

    module, qualname = importable_name(callback)
    wire_args = marshal.encode_call(args, kwargs)
    return marshal.from_shareable(
        _core.call(route, "domain.callback", (module, qualname, wire_args))
    )


def execute_assembly(route: Route, path: str | os.PathLike[str], args: Sequence[str]) -> int:
    """Run a script as __main__ in the domain with its own sys.argv; return the exit code."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'path' must be str or os.PathLike (got {path!r})")
    full = os.path.abspath(os.fspath(path))
    if not os.path.isfile(full):
        raise FileNotFoundError(f"execute_assembly: no script at {os.fspath(path)!r} ({full})")
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise TypeError(f"'args' must be a sequence of str (got {args!r})")
    return int(_core.call(route, "domain.execute_assembly", (full, tuple(args))))


def create_instance(
    route: Route, module: object, type_: object, args: tuple[object, ...], kwargs: dict[str, object]
) -> Any:
    """Create module.type_(*args, **kwargs) in the domain; return a proxy to it (or a copy)."""
    from .. import marshal

    payload = (
        _name("module_name", module),
        _name("type_name", type_),
        marshal.encode_call(args, kwargs),
    )
    return marshal.from_shareable(_core.call(route, _REMOTING + "create", payload))


def create_instance_from(
    route: Route,
    path: str | os.PathLike[str],
    type_: str | type,
    args: tuple[object, ...],
    kwargs: dict[str, object],
) -> Any:
    """Like create_instance, loading the module from a file path."""
    from .. import marshal

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'path' must be str or os.PathLike (got {path!r})")
    full = os.path.abspath(os.fspath(path))
    if not os.path.isfile(full):
        raise FileNotFoundError(f"create_instance_from_and_unwrap: no file at {full!r}")
    name = _name("type_name", type_name(type_)[1] if isinstance(type_, type) else type_)
    wire_args = marshal.encode_call(args, kwargs)
    result = _core.call(route, _REMOTING + "create_from", (full, name, wire_args))
    return marshal.from_shareable(result)


def _check_str(label: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"'{label}' must be str (got {value!r} that is a {type(value).__name__})")


def _name(label: str, value: object) -> str:
    """Return value, a non-empty str, or raise naming label."""
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"'{label}' must be a non-empty str (got {value!r} that is a {type(value).__name__})"
        )
    return value


def type_name(cls: type) -> tuple[str, str]:
    """Return the (wire module, qualified name) that find cls in another domain."""
    qualname = cls.__qualname__
    if "<" in qualname:
        raise TypeError(
            f"'type_' must be a class importable by module and name (got {cls!r}): "
            "a class defined inside a function cannot be found in another domain"
        )
    return _runtime.wire_module(cls.__module__), qualname


def importable_name(func: Callable[..., object]) -> tuple[str, str]:
    """Return the (wire module, qualified name) other domains import func by."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not callable(func) or not module or not qualname or "<" in qualname:
        raise TypeError(
            f"'callback' must be a function importable by module and name "
            f"(got {func!r}); lambdas, closures and bound methods cannot cross domains"
        )
    return _runtime.wire_module(module), qualname
