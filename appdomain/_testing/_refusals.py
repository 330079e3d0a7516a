"""Know, before trying, which tests isolated by the option cannot run in a domain.

A test that needs what a subinterpreter refuses (a single-phase C extension such as
``_tkinter``, ``tracemalloc``) is tried in a domain, fails there on the limit, and runs
again in the main interpreter; the domain prepared for it (create, import its module,
destroy: ~40-60 ms of CPU) is wasted.  What one test of a module teaches is kept for the
module's next tests, so they skip the attempt and no domain is prepared for them:

- the test module's own import hit the limit: every test of the module;
- a test's body imported a refusing module: the module's tests whose parameters name it
  (``test_move_items[tkinter_dialog]`` after ``test_move_items[tkinter]`` met
  ``_tkinter``); a test that names it nowhere is still tried, as it may not import it.

Tests whose code names ``tracemalloc`` are known by name from the start.
"""

from __future__ import annotations

import types

import pytest

__all__ = ["known", "learn", "names_any", "function_code"]

# On the config: test modules whose import hit a subinterpreter limit, with why; per test
# module, the refusing modules its tests imported: stem (name without leading "_") ->
# (why, the test that met it).
_limited_key = pytest.StashKey[dict[str, str]]()
_refused_key = pytest.StashKey[dict[str, dict[str, tuple[str, str]]]]()
# Modules that refuse to load in a subinterpreter, known by name: a test isolated by the
# option that names one runs in the main interpreter without trying a domain first.
_REFUSING = frozenset({"tracemalloc"})


def learn(item: pytest.Function, why: str, module_wide: bool, refused: str | None) -> None:
    """Keep what item's failed attempt in a domain showed, for the next tests of its module."""
    module = item.module.__name__
    if module_wide:
        item.config.stash.setdefault(_limited_key, {})[module] = why
    elif refused is not None:
        learned = item.config.stash.setdefault(_refused_key, {}).setdefault(module, {})
        learned.setdefault(refused.lstrip("_") or refused, (why, item.name))


def known(item: pytest.Function) -> str | None:
    """Say why item cannot run in a domain, if that is known before trying."""
    module = item.module.__name__
    why = item.config.stash.get(_limited_key, {}).get(module)
    if why is not None:
        return why
    for stem, (why, first) in item.config.stash.get(_refused_key, {}).get(module, {}).items():
        if _params_name(item, stem):
            return f"{why}, as {first} did"
    code = function_code(item)
    if code is not None and names_any(code, _REFUSING):
        return "uses tracemalloc, which refuses to load in a subinterpreter"
    return None


def _params_name(item: pytest.Function, stem: str) -> bool:
    """Tell whether a parameter of item names the module stem (or one of its submodules):
    ``stem``, ``stem.x``, ``stem_x`` as a string, or a module of that name."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    for value in callspec.params.values():
        if isinstance(value, types.ModuleType):
            value = value.__name__.lstrip("_")
        if isinstance(value, str) and (value == stem or value.startswith((f"{stem}.", f"{stem}_"))):
            return True
    return False


def function_code(item: pytest.Function) -> types.CodeType | None:
    """Return the code of item's test function (unwrapped), if it has Python code."""
    function = getattr(item.obj, "__func__", item.obj)
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    code = getattr(function, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


def names_any(code: types.CodeType, names: frozenset[str]) -> bool:
    """Tell whether code, or code nested in it, names any of names."""
    if not names.isdisjoint(code.co_names):
        return True
    return any(isinstance(c, types.CodeType) and names_any(c, names) for c in code.co_consts)
