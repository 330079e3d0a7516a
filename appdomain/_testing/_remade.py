"""Make a test's fixtures inside its domain, as pytest would: those pytest cannot send.

Runs inside the domain of an isolated test.  ``monkeypatch`` is always made here (a copy of
the main process's would patch the wrong interpreter: ``MADE_IN_DOMAIN``); a fixture whose
value cannot cross is made here again from its function, when the main process found it can
be (``appdomain._testing._fixtures``): ``remake`` calls the functions in order, with a
stand-in for ``request`` (``_Request``), and ``teardown`` finishes them after the test.
"""

from __future__ import annotations

import importlib
import sys

from . import _standin

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from collections.abc import Callable, Generator
    from typing import Any

    from _pytest.monkeypatch import MonkeyPatch

    # A fixture to make here: module, qualname of its function, the values of the fixtures
    # it asks for that crossed, and the names of those this domain has itself (the test's
    # values, MADE_IN_DOMAIN's, fixtures made before it).
    Remake = tuple[str, str, dict[str, object], tuple[str, ...]]
    # What undoes a remade fixture: its generator, or a request.addfinalizer function.
    Teardown = Generator[object] | Callable[[], object]

__all__ = [
    "MADE_IN_DOMAIN",
    "REQUEST",
    "REQUEST_PARAM",
    "REQUEST_PARAM_INDEX",
    "remake",
    "teardown",
]


# CO_GENERATOR (inspect's name for it: importing inspect costs a domain ~5 ms).
_GENERATOR = 0x20


def remake(
    remade: dict[str, Remake],
    available: dict[str, object],
    teardowns: list[tuple[str, Teardown]],
) -> dict[str, object]:
    """Run the fixture functions named in remade, in order, as pytest would.

    available holds the values the domain has (the test's, those it made); each fixture
    made joins them.  Returns them all.
    """
    values = dict(available)
    for name, (module, qualname, args, local) in remade.items():
        fixture: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            fixture = getattr(fixture, part)
        # With the real pytest loaded here, the module holds pytest's wrapper of it.
        unwrap = getattr(fixture, "_get_wrapped_function", None)
        function: Any = unwrap() if unwrap is not None else fixture
        kwargs = {**args, **{n: values[n] for n in local}}
        if REQUEST in kwargs:
            if REQUEST_PARAM_INDEX in kwargs:
                kwargs[REQUEST_PARAM] = _param(fixture, function, kwargs.pop(REQUEST_PARAM_INDEX))
            kwargs["request"] = _Request(str(kwargs.pop(REQUEST)), kwargs, teardowns)
        if function.__code__.co_flags & _GENERATOR:
            generator = function(**kwargs)
            values[name] = next(generator)
            teardowns.append((name, generator))
        else:
            values[name] = function(**kwargs)
    return values


# Keys, in a remade fixture's values, of its request's stand-in: the fixture's name, and
# its param when it has one (or the param's index in the fixture's params).
REQUEST = "@request"
REQUEST_PARAM = "@request.param"
REQUEST_PARAM_INDEX = "@request.param_index"


def _param(fixture: Any, function: Any, index: object) -> object:
    """Return the fixture's param at index, from its params as this domain defined them."""
    marker = getattr(fixture, "_fixture_function_marker", None)  # the real pytest's
    params = marker.params if marker is not None else getattr(function, _standin.PARAMS, None)
    if params is None or type(index) is not int:
        raise LookupError(f"fixture {function.__name__!r} has no params here")
    param = params[index]
    # pytest.param(value, id=...): the request gets the value.
    return param.values[0] if type(param).__name__ == "ParameterSet" else param


class _Request:
    """What a fixture made again in this domain gets as ``request`` (see _isolation)."""

    scope = "function"

    def __init__(
        self, name: str, kwargs: dict[str, object], teardowns: list[tuple[str, Teardown]]
    ) -> None:
        self.fixturename = name
        if REQUEST_PARAM in kwargs:
            self.param = kwargs.pop(REQUEST_PARAM)
        self._teardowns = teardowns

    def addfinalizer(self, finalizer: Callable[[], object]) -> None:
        self._teardowns.append((self.fixturename, finalizer))


def teardown(teardowns: list[tuple[str, Teardown]]) -> None:
    """Finish the remade fixtures, last made first, as pytest does."""
    while teardowns:
        name, teardown = teardowns.pop()
        if callable(teardown):
            teardown()
            continue
        try:
            next(teardown)
        except StopIteration:
            continue
        raise ValueError(f"fixture {name!r}: its function has more than one 'yield'")


def _monkeypatch() -> MonkeyPatch:
    """Make pytest's own MonkeyPatch, loading as little of pytest as it can."""
    module = _standin.import_without_fixtures("_pytest.monkeypatch")
    patcher: MonkeyPatch = module.MonkeyPatch()
    return patcher


# Fixtures an isolated test gets made afresh inside its domain, by name: their value acts on
# the interpreter that holds it (monkeypatch patches this domain's modules), so a copy of
# the main process's value would patch the wrong interpreter.  Each is undone after the test,
# which matters for what is process-wide (environment variables, the working directory).
MADE_IN_DOMAIN = {"monkeypatch": _monkeypatch}
