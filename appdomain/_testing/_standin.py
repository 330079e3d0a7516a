"""A light ``pytest`` module for the domain of an isolated test, loading the real one on demand.

``import pytest`` costs a fresh domain over 100 ms, and most test modules import it only
to decorate their functions (``@pytest.mark...``, ``@pytest.fixture``).  Those decorators
have already done their work in the main process, where pytest collected the module and
computed the fixture values; the domain only calls the test function.  So, until a test
module asks for something else, the domain's ``pytest`` is this stand-in:

- ``pytest.mark.<name>`` and ``pytest.fixture`` leave what they decorate as it is, and
  ``pytest.param`` holds its parts (the marks were read where pytest collected the module);
- ``skip``, ``fail``, ``xfail``, ``exit`` and ``importorskip`` come from ``_pytest.outcomes``
  (a few ms), so the main process gets pytest's own outcome exceptions; ``warns`` and
  ``deprecated_call`` from ``_pytest.recwarn`` (pytest's own, without most of pytest);
- ``raises`` decides the plain cases itself (the expected exception raised, ``match``
  matching) and hands the others to the real one with the same exception;
- any other name imports the real pytest (which then also serves later ``import pytest``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Any

__all__ = ["PARAMS", "ParameterSet", "fixture_decorator", "import_without_fixtures", "install"]

# What pytest re-exports from _pytest.outcomes, which imports next to nothing.
_OUTCOMES = frozenset({"skip", "fail", "xfail", "exit", "importorskip"})
# What it re-exports from _pytest.recwarn, which needs little more (import_without_fixtures).
_RECWARN = frozenset({"warns", "deprecated_call"})


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

    A fixture made again in the domain (see ``_remade.remake``) may need its params: they
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


fixture_decorator = _fixture  # for a pytest module imported without _pytest.fixtures

# Where the stand-in's fixture decorator keeps a fixture function's params.
PARAMS = "_appdomain_fixture_params"


class ParameterSet:
    """What ``pytest.param(*values, marks=..., id=...)`` gives here: its parts, as pytest's."""

    __slots__ = ("id", "marks", "values")

    def __init__(self, values: tuple[object, ...], marks: object, id: object) -> None:
        self.values = values
        self.marks = marks
        self.id = id


def _param(*values: object, marks: object = (), id: object = None) -> ParameterSet:
    """``pytest.param``: in a parametrize mark (already read) or a fixture's params."""
    return ParameterSet(values, marks, id)


# --- pytest.raises -------------------------------------------------------------------------
#
# The real one loads most of pytest (~100 ms in a fresh domain) and many tests use it.  The
# stand-in decides the plain cases itself: an exception of the expected type raised, its
# message matching ``match`` if given, exactly as pytest's RaisesExc checks them.  Any
# other case (no exception, another type, no match, other arguments) goes to pytest's own,
# given the same exception, so failures read as pytest words them.


def _raises(*args: Any, **kwargs: Any) -> Any:
    """``pytest.raises``: the plain forms here, the others by pytest's own."""
    __tracebackhide__ = True
    expected: Any = args[0] if args else None
    if not _exception_types(expected) or not set(kwargs) <= {"match"} or len(args) > 1:
        if len(args) > 1 and _exception_types(expected):
            return _raises_call(*args, **kwargs)
        return _real().raises(*args, **kwargs)
    match = kwargs.get("match")
    pattern = None
    if match is not None:
        import re  # not before: a fresh domain has not imported it (~1 ms)

        if match == "" or not isinstance(match, (str, re.Pattern)):
            return _real().raises(*args, **kwargs)  # pytest warns about "", or refuses
        try:
            pattern = re.compile(match)
        except re.error:
            return _real().raises(*args, **kwargs)  # pytest fails the test, saying why
    return _Raises(expected, pattern, args, kwargs)


def _raises_call(expected: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
    """``pytest.raises(expected, func, *args, **kwargs)``."""
    __tracebackhide__ = True
    if not callable(func):
        return _real().raises(expected, func, *args, **kwargs)
    try:
        func(*args, **kwargs)
    except expected as exc:
        return _ExceptionInfo(type(exc), exc, exc.__traceback__)
    with _real().raises(expected):
        pass  # fails the test: DID NOT RAISE
    raise AssertionError("unreachable")


def _exception_types(expected: object) -> bool:
    if isinstance(expected, tuple):
        return bool(expected) and all(_exception_types(e) for e in expected)
    return isinstance(expected, type) and issubclass(expected, BaseException)


def _stringify(exc: BaseException) -> str:
    # As pytest's stringify_exception(exc, include_subexception_msg=False).
    message = exc.message if isinstance(exc, BaseExceptionGroup) else str(exc)
    return "\n".join([message, *getattr(exc, "__notes__", [])])


class _Raises:
    """The context manager of ``pytest.raises(expected, match=...)``."""

    def __init__(
        self,
        expected: type[BaseException] | tuple[type[BaseException], ...],
        pattern: re.Pattern[str] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._expected = expected
        self._pattern = pattern
        self._call = (args, kwargs)
        self._info = _ExceptionInfo(None, None, None)

    def __enter__(self) -> _ExceptionInfo:
        return self._info

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> bool:
        __tracebackhide__ = True
        if (
            exc_type is not None
            and isinstance(exc, self._expected)
            and (self._pattern is None or self._pattern.search(_stringify(exc)))
        ):
            self._info._fill(exc_type, exc, tb)
            return True
        # Not the plain case: pytest's own decides, and words the failure.
        args, kwargs = self._call
        real = _real().raises(*args, **kwargs)
        self._info._real = real.__enter__()
        return bool(real.__exit__(exc_type, exc, tb))


class _ExceptionInfo:
    """What ``pytest.raises`` gives: value, type, tb and typename here, the rest from
    pytest's own ExceptionInfo (made on first use of another attribute)."""

    def __init__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._real: Any = None
        self._fill(exc_type, exc, tb)

    def _fill(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.type = exc_type
        self.value = exc
        self.tb = tb

    @property
    def typename(self) -> str:
        return self.type.__name__ if self.type is not None else ""

    def _pytest(self) -> Any:
        if self._real is None:
            from _pytest._code import ExceptionInfo

            filled: Any = (self.type, self.value, self.tb)  # filled: the test raised it
            self._real = ExceptionInfo.from_exc_info(filled)
        return self._real

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._pytest(), name)

    def __repr__(self) -> str:
        return repr(self._pytest()) if self.type is not None else "<ExceptionInfo for raises>"

    def __str__(self) -> str:
        return str(self._pytest()) if self.type is not None else repr(self)


def import_without_fixtures(name: str) -> types.ModuleType:
    """Import one of pytest's modules that imports _pytest.fixtures only for its decorator.

    _pytest.fixtures loads most of pytest (~55 of its ~75 ms in a fresh domain): while
    name imports, it gets a module holding the stand-in's decorator; the real one stays
    importable, and pytest's own functions are what name defines.
    """
    module = sys.modules.get(name)
    if module is None and "_pytest.fixtures" not in sys.modules:
        stand_in = types.ModuleType("_pytest.fixtures")
        vars(stand_in).update(fixture=fixture_decorator)
        sys.modules["_pytest.fixtures"] = stand_in
        try:
            module = importlib.import_module(name)
        finally:
            if sys.modules.get("_pytest.fixtures") is stand_in:
                del sys.modules["_pytest.fixtures"]
    return module if module is not None else importlib.import_module(name)


_standin: types.ModuleType | None = None


def _real() -> types.ModuleType:
    """Import the real pytest (which then serves every ``import pytest`` here)."""
    if _standin is not None and sys.modules.get("pytest") is _standin:
        del sys.modules["pytest"]
    try:
        return importlib.import_module("pytest")
    finally:
        if _standin is not None:
            sys.modules.setdefault("pytest", _standin)


def install() -> None:
    """Make ``import pytest`` in this domain give the stand-in, unless pytest is loaded."""
    global _standin
    if "pytest" in sys.modules:
        return
    standin = types.ModuleType("pytest", __doc__)
    standin.__spec__ = importlib.machinery.ModuleSpec("pytest", None)
    _standin = standin
    real = _real

    def __getattr__(name: str) -> Any:  # the module's own __getattr__ (PEP 562)
        if name in _OUTCOMES:
            value = getattr(importlib.import_module("_pytest.outcomes"), name)
        elif name in _RECWARN:
            value = getattr(import_without_fixtures("_pytest.recwarn"), name)
        elif name.startswith("__") and name not in ("__version__", "__file__"):
            raise AttributeError(f"module 'pytest' has no attribute {name!r}")
        else:
            value = getattr(real(), name)
        setattr(standin, name, value)  # later uses skip this function
        return value

    vars(standin).update(
        mark=_MarkGenerator(),
        fixture=_fixture,
        param=_param,
        raises=_raises,
        __getattr__=__getattr__,
    )
    sys.modules["pytest"] = standin
