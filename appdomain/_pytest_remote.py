"""Run one test function inside the current domain, the way pytest would run it.

Everything here executes inside the fresh domain of an isolated test (called through
``do_callback`` from ``appdomain.pytest_plugin``).  The test module is imported here with
pytest's assertion rewriting, the function is called with the fixture values that crossed,
and the outcome goes back as ``(outcome, exception, longrepr)``: the exception crosses by
type so pytest's skip/xfail/raises logic works unchanged in the main process, and the
failure report is rendered here (where the frames are) in pytest's serialized form.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from ._runtime import exec_module_from_file

__all__ = ["prepare", "run_test"]

# Messages CPython gives for its subinterpreter limits, and what to tell the user about them.
_LIMITS = (
    (
        "does not support loading in subinterpreters",
        "this C extension refuses to load in a subinterpreter, so tests that import it "
        "cannot run isolated; run this test without isolation",
    ),
    (
        "daemon threads",
        "subinterpreters created by PEP 734 do not allow daemon threads; use a "
        "non-daemon thread that the test joins, or run this test without isolation",
    ),
    (
        "not supported in subinterpreters",
        "this feature is not available in a subinterpreter; run this test without isolation",
    ),
)


class _Config:
    """Answer the few Config questions pytest's assertion helpers ask, from copied values."""

    def __init__(self, verbosity: dict[str, int], ini: dict[str, Any], assertmode: str) -> None:
        self._verbosity = verbosity
        self._ini = ini
        self._assertmode = assertmode
        self.pluginmanager = self  # only has_plugin() is asked of it

    def get_verbosity(self, verbosity_type: str | None = None) -> int:
        return self._verbosity.get(verbosity_type or "", self._verbosity.get("", 0))

    def getini(self, name: str) -> Any:
        return self._ini.get(name)

    def getvalue(self, name: str) -> Any:
        return self._assertmode if name == "assertmode" else None

    def has_plugin(self, name: str) -> bool:
        return False  # plain text: the report is rendered (with colours) in the main process


class _RewritingLoader(importlib.machinery.SourceFileLoader):
    """Load a test module with its asserts rewritten, reusing pytest's cached pyc."""

    def get_code(self, fullname: str) -> types.CodeType:
        from _pytest.assertion import rewrite

        fn = Path(self.path)
        pyc = fn.parent / "__pycache__" / (fn.name[:-3] + rewrite.PYC_TAIL)
        code = rewrite._read_pyc(fn, pyc)
        if code is None:
            code = rewrite._rewrite_test(fn, None)[1]  # type: ignore[arg-type]
        return code


_config: _Config | None = None


def prepare(spec: dict[str, Any]) -> None:
    """Get this domain ready for a test: pytest's assertion helpers, then the test module."""
    _setup_assertions(spec)
    _import_test_module(spec["module"], spec["path"], spec["assertmode"] == "rewrite")


def _setup_assertions(spec: dict[str, Any]) -> None:
    global _config
    if _config is not None:
        return
    import _pytest.assertion
    from _pytest.assertion import truncate, util

    config = _Config(spec["verbosity"], spec["ini"], spec["assertmode"])

    def callbinrepr(op: str, left: object, right: object) -> str | None:
        # What pytest's assertion plugin installs for each test (see pytest_runtest_protocol).
        lines = _pytest.assertion.pytest_assertrepr_compare(
            config=config,  # type: ignore[arg-type]
            op=op,
            left=left,
            right=right,
        )
        if not lines:
            return None
        lines = truncate.materialize_with_truncation(lines, config)  # type: ignore[arg-type]
        if not lines:
            return None
        res = "\n~".join(line.replace("\n", "\\n") for line in lines)
        return res.replace("%", "%%") if spec["assertmode"] == "rewrite" else res

    util._reprcompare = callbinrepr
    util._config = config  # type: ignore[assignment]
    _config = config


def _import_test_module(name: str, path: str, rewrite: bool) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    parent = name.rpartition(".")[0]
    if parent:
        # Relative imports in the test module need its package.
        try:
            importlib.import_module(parent)
        except ImportError:
            pass
    loader = _RewritingLoader(name, path) if rewrite else None
    return exec_module_from_file(name, path, loader)


def run_test(spec: dict[str, Any], funcargs: dict[str, Any]) -> tuple[str, Any, Any]:
    """Run the test function named by spec; return (outcome, exception, longrepr)."""
    try:
        try:
            prepare(spec)
            func = _resolve(spec)
            func(**funcargs)
        finally:
            _flush()
    except BaseException as exc:
        outcome = _outcome(exc)
        if outcome is not None:
            return ("outcome", outcome, _longrepr(exc, spec))
        _explain_limits(exc)
        return ("raised", exc, _longrepr(exc, spec))
    return ("passed", None, None)


def _outcome(exc: BaseException) -> tuple[str, dict[str, Any]] | None:
    """Describe pytest's skip/xfail/fail/exit exceptions, which cannot cross by type.

    pytest sets their ``__module__`` to "builtins" (for shorter reports), so they cannot
    be imported back by name; they go as (class name, attributes) instead.
    """
    from _pytest.outcomes import OutcomeException

    if not isinstance(exc, OutcomeException):
        return None
    state = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, bool, type(None)))}
    return (type(exc).__name__, state)


def _resolve(spec: dict[str, Any]) -> Any:
    module = sys.modules[spec["module"]]
    if spec["cls"] is None:
        return getattr(module, spec["function"])
    owner: Any = module
    for part in spec["cls"].split("."):
        owner = getattr(owner, part)
    # pytest makes a fresh instance of the test class for every test.
    return getattr(owner(), spec["function"])


def _flush() -> None:
    # Output must reach the file descriptors while pytest still captures this test.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def _explain_limits(exc: BaseException) -> None:
    text = str(exc)
    for needle, why in _LIMITS:
        if needle in text:
            exc.add_note(f"appdomain: isolated test hit a subinterpreter limit: {why}")
            return


def _longrepr(exc: BaseException, spec: dict[str, Any]) -> Any:
    """Render the failure as pytest would, in its serialized (xdist) form; None for outcomes."""
    from _pytest._code import ExceptionInfo
    from _pytest._code.code import Traceback
    from _pytest.outcomes import Failed, OutcomeException
    from _pytest.reports import _report_to_json

    if isinstance(exc, OutcomeException) and not (isinstance(exc, Failed) and exc.pytrace):
        return None  # skip, xfail, exit, fail(pytrace=False): pytest reports these itself
    # Drop run_test's own frame: the report starts at the test function, as pytest's does.
    if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
        exc = exc.with_traceback(exc.__traceback__.tb_next)
    try:
        excinfo = ExceptionInfo.from_exception(exc)
        style = spec["tbstyle"]
        auto = style == "auto"
        if auto:
            style = "long"
        elif style not in ("long", "short", "native", "value"):
            style = "short"

        def tbfilter(info: ExceptionInfo[BaseException]) -> Traceback:
            # As pytest does: hide __tracebackhide__ frames; "auto" shortens middle frames.
            tb = info.traceback.filter(info)
            if auto and len(tb) > 2:
                tb = Traceback((tb[0], *(t.with_repr_style("short") for t in tb[1:-1]), tb[-1]))
            return tb

        longrepr = excinfo.getrepr(
            funcargs=True,
            showlocals=spec["showlocals"],
            style=style,
            tbfilter=tbfilter,
            truncate_locals=spec["verbosity"].get("", 0) <= 1,
            truncate_args=spec["verbosity"].get("", 0) <= 2,
        )
        report = types.SimpleNamespace(longrepr=longrepr)
        return _report_to_json(report)["longrepr"]  # type: ignore[arg-type]
    except Exception:
        return None
