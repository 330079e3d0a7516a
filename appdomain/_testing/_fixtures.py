"""Tell which fixture values of an isolated test cross into its domain, and plan the rest.

A value crosses by appdomain's marshalling; ``monkeypatch`` is made in the domain; a
function-scoped fixture whose value cannot cross is made again there from its function
(``appdomain._testing._remade`` runs the plan) when its function is at the top level of a
module and the fixtures it asks for cross or can be made there too.
"""

from __future__ import annotations

import inspect
import types

import pytest

from . import _remade

__all__ = ["Remake", "crossing_funcargs"]


# A fixture to make again inside the test's domain: (module, qualname of its function, the
# values of the fixtures it asks for that cross, the names of those the domain has itself:
# the test's own values, the fixtures it makes (monkeypatch) or made again before this one).
Remake = tuple[str, str, dict[str, object], tuple[str, ...]]


def crossing_funcargs(
    item: pytest.Function, auto: bool
) -> tuple[dict[str, object], tuple[str, ...], dict[str, Remake], tuple[str, ...]] | str:
    """Collect the values the test function asks for, checking that each can cross.

    Also returns the names of the fixtures its domain makes itself (pytest's own
    ``monkeypatch``): those values stay here; the fixtures whose values cannot cross but
    whose functions the domain can run again itself, with those they need, in the order to
    make them (``_plan_remake``); and the names of the test's among them.  For a test isolated
    by the option, a value that can do neither makes this return why, to run it here.
    """
    values = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
    made_here = tuple(name for name, value in values.items() if _made_in_domain(name, value))
    for name in made_here:
        del values[name]
    refused = {
        name: why
        for name, value in values.items()
        if (why := _refusal(value, f"fixture {name!r}")) is not None
    }
    shared = {name for name in values if name not in refused}
    remade: dict[str, Remake] = {}
    for name, why in refused.items():
        remake = _plan_remake(item, name, remade, shared)
        if remake is None:
            continue
        value = values[name]
        if auto:
            return (
                f"fixture {name!r} holds {_short(value)}, which cannot cross, and cannot be "
                f"made in the domain: {remake}"
            )
        pytest.fail(
            f"isolated test {item.nodeid}: fixture {name!r} cannot cross into the test's "
            f"AppDomain: {why}\n"
            "Fixture values reach an isolated test by copy (by reference for a "
            "MarshalByRefObject), or the domain runs a function-scoped fixture's function "
            f"again itself; here it cannot: {remake}.  Use a value that can be copied, or "
            "drop the isolated marker for this test.",
            pytrace=False,
        )
    for name in refused:
        del values[name]
    return values, made_here, remade, tuple(refused)


def _made_in_domain(name: str, value: object) -> bool:
    return name in _remade.MADE_IN_DOMAIN and type(value) is pytest.MonkeyPatch


def _refusal(value: object, name: str) -> str | None:
    """Say why value cannot cross into a domain; None if it can."""
    from .. import marshal
    from .._errors import SerializationException

    try:
        marshal.to_shareable(value, name=name)
    except SerializationException as exc:
        return str(exc)
    return None


def _short(value: object) -> str:
    from ..marshal._core import short_repr

    text = short_repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plan_remake(
    item: pytest.Function, name: str, plan: dict[str, Remake], shared: set[str], depth: int = 0
) -> str | None:
    """Add to plan how the test's domain can run fixture name's function itself; else say why.

    It can for a function-scoped fixture defined at the top level of a module, not async,
    whose own fixtures' values cross, are made there (``monkeypatch``), or are fixtures it
    can make the same way (planned first).  A fixture the test gets too (shared) is passed
    as the test's own value, so both see one object, as under pytest.
    """
    if name in plan:
        return None
    if depth > _MAX_REMAKE_DEPTH:
        return f"its fixtures nest more than {_MAX_REMAKE_DEPTH} deep"
    defs = item._fixtureinfo.name2fixturedefs.get(name)
    if not defs:
        return "it is a parameter, not a fixture"
    fixturedef = defs[-1]
    func = fixturedef.func
    if getattr(func, "__module__", "").startswith("_pytest."):
        # pytest's own: they act on this process's pytest (recwarn, capsys, ...), or stand
        # for a @pytest.mark.parametrize argument, whose values the domain does not have.
        if getattr(func, "__name__", "") == "get_direct_param_fixture_func":
            return "it is a parameter of the test"
        return "it is one of pytest's own fixtures"
    if fixturedef.scope != "function":
        return f"it is {fixturedef.scope}-scoped"
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    code = getattr(func, "__code__", None)
    if not isinstance(module, str) or not isinstance(code, types.CodeType):
        return "its function is not a plain function"
    if "." in qualname or "<" in qualname:
        return "its function is not at the top level of its module"
    if code.co_flags & (inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        return "it is async"
    args: dict[str, object] = {}
    local: list[str] = []
    for arg in fixturedef.argnames:
        if arg == "request":
            why = _request_stand_in(item, name, code, args)
            if why is not None:
                return why
            continue
        value = item._request.getfixturevalue(arg)
        if arg in shared or _made_in_domain(arg, value):
            local.append(arg)
        elif _refusal(value, arg) is None:
            args[arg] = value
        else:
            why = _plan_remake(item, arg, plan, shared, depth + 1)
            if why is not None:
                return f"it asks for fixture {arg!r}, which cannot cross, and {why}"
            local.append(arg)
    plan[name] = (module, qualname, args, tuple(local))
    return None


def _request_stand_in(
    item: pytest.Function, name: str, code: types.CodeType, args: dict[str, object]
) -> str | None:
    """Plan the domain's stand-in for a fixture's ``request``, or say why it would not do.

    It has ``param`` (crossing, or by its index in the fixture's params as the domain
    defines them), ``fixturename``, ``scope`` and ``addfinalizer``:
    a fixture whose code names any other attribute of pytest's request is not made there.
    """
    other = _REQUEST_NAMES.intersection(code.co_names)
    if other:
        return f"it asks for 'request' and uses request.{sorted(other)[0]}"
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if name in params:
        if _refusal(params[name], "param") is None:
            args[_remade.REQUEST_PARAM] = params[name]
        else:
            # A lambda, say: the domain takes it from the fixture's own params, by index.
            args[_remade.REQUEST_PARAM_INDEX] = item.callspec.indices[name]
    args[_remade.REQUEST] = name
    return None


# What pytest's FixtureRequest offers beyond the domain's stand-in (see _remade._Request).
_REQUEST_NAMES = frozenset(
    {
        "applymarker",
        "cls",
        "config",
        "fixturenames",
        "function",
        "getfixturevalue",
        "instance",
        "keywords",
        "module",
        "node",
        "param_index",
        "path",
        "raiseerror",
        "session",
    }
)
# How deep a chain of fixtures made again in a domain may go (pytest's rarely pass 5).
_MAX_REMAKE_DEPTH = 16
