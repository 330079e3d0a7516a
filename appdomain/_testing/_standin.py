"""A light ``pytest`` module for the domain of an isolated test, loading the real one on demand.

``import pytest`` costs a fresh domain over 100 ms, and most test modules import it only
to decorate their functions (``@pytest.mark...``, ``@pytest.fixture``).  Those decorators
have already done their work in the main process, where pytest collected the module and
computed the fixture values; the domain only calls the test function.  So, until a test
module asks for something else, the domain's ``pytest`` is this stand-in:

- ``pytest.mark.<name>`` and ``pytest.fixture`` leave what they decorate as it is;
- ``skip``, ``fail``, ``xfail``, ``exit`` and ``importorskip`` come from ``_pytest.outcomes``
  (a few ms), so the main process gets pytest's own outcome exceptions;
- any other name imports the real pytest (which then also serves later ``import pytest``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PARAMS", "install"]

# What pytest re-exports from _pytest.outcomes, which imports next to nothing.
_OUTCOMES = frozenset({"skip", "fail", "xfail", "exit", "importorskip"})


def _is_decorated(value: object) -> bool:
    # pytest's rule (istestfunc): a lone named callable is decorated, anything else is an
    # argument of the mark.
    return callable(value) and getattr(value, "__name__", "<lambda>") != "<lambda>"


class _Mark:
    """A ``pytest.mark.<name>`` that decorates without marking: pytest read the marks already."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and _is_decorated(args[0]):
            return args[0]
        return self

    def with_args(self, *args: Any, **kwargs: Any) -> _Mark:
        return self


class _MarkGenerator:
    def __getattr__(self, name: str) -> _Mark:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Mark()


def _fixture(fixture_function: Any = None, **options: Any) -> Any:
    """``pytest.fixture``: the main process computed the fixture values this test gets.

    A fixture made again in the domain (see ``_remote._remake``) may need its params: they
    stay on the function, under ``PARAMS``.
    """
    if fixture_function is not None:
        return fixture_function
    params = options.get("params")

    def mark(function: Any) -> Any:
        if params is not None:
            try:
                setattr(function, PARAMS, tuple(params))
            except (AttributeError, TypeError):
                pass  # not a function: it cannot be made again, so its params are not needed
        return function

    return mark


# Where the stand-in's fixture decorator keeps a fixture function's params.
PARAMS = "_appdomain_fixture_params"


def install() -> None:
    """Make ``import pytest`` in this domain give the stand-in, unless pytest is loaded."""
    if "pytest" in sys.modules:
        return
    standin = types.ModuleType("pytest", __doc__)
    standin.__spec__ = importlib.machinery.ModuleSpec("pytest", None)

    def real() -> types.ModuleType:
        if sys.modules.get("pytest") is standin:
            del sys.modules["pytest"]
        try:
            return importlib.import_module("pytest")
        finally:
            sys.modules.setdefault("pytest", standin)

    def __getattr__(name: str) -> Any:  # the module's own __getattr__ (PEP 562)
        if name in _OUTCOMES:
            value = getattr(importlib.import_module("_pytest.outcomes"), name)
        elif name.startswith("__") and name not in ("__version__", "__file__"):
            raise AttributeError(f"module 'pytest' has no attribute {name!r}")
        else:
            value = getattr(real(), name)
        setattr(standin, name, value)  # later uses skip this function
        return value

    vars(standin).update(mark=_MarkGenerator(), fixture=_fixture, __getattr__=__getattr__)
    sys.modules["pytest"] = standin
