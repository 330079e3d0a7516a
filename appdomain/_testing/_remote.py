"""Run one test function inside the current domain, the way pytest would run it.

Everything here executes inside the fresh domain of an isolated test (called through
``do_callback`` from ``appdomain.pytest_plugin``).  The test module arrives compiled, its
asserts already rewritten by the main process, and is executed here; the function is
called with the fixture values that crossed, and the outcome goes back as
``(outcome, exception, longrepr, compiled, quiet)``: the exception crosses by type so
pytest's skip/xfail/raises logic works unchanged in the main process, and the failure
report is rendered here (where the frames are) in pytest's serialized form.

A passing test imports nothing of pytest here: the rewritten asserts reach pytest's
helpers through ``appdomain._testing._ar`` only to explain a failure, ``import pytest``
gives a light stand-in (``appdomain._testing._standin``), and the other modules load from
code compiled or read once where they can (``appdomain._testing._loaders``).
"""

from __future__ import annotations

import _thread
import gc
import importlib
import marshal as _stdlib_marshal
import os
import sys
import types

from . import _loaders, _remade, _standin
from ._loaders import Stamp, take_compiled

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    from collections.abc import Callable, Generator
    from typing import Any, Literal, TypedDict

    from _pytest.monkeypatch import MonkeyPatch

    from .._core._wire import Shareable

    class TestSpec(TypedDict, total=False):
        """What the main process tells a test's domain about one test (it crosses packed)."""

        module: str
        path: str
        cls: str | None  # the qualname of the test's class, if it has one
        function: str
        assertmode: str
        verbosity: dict[str, int]
        ini: dict[str, object]
        unittest: bool
        tbstyle: Literal["long", "short", "line", "no", "native", "value", "auto"]
        showlocals: bool
        code: bytes | None  # the test module's code, compiled (asserts rewritten) by pytest
        cache: dict[str, tuple[Stamp, bytes]]
        made_here: tuple[str, ...]
        funcargs: dict[str, object]  # builtin values only (packed with the spec)
        remade: dict[str, Remake]  # builtin values only (packed with the spec)
        remade_args: tuple[str, ...]  # the test's fixtures this domain makes again
        imports: bool  # prepare names the modules it imported from files (see _loaders)

    # A fixture to make here: module, qualname of its function, the values of the fixtures
    # it asks for that crossed, and the names of those this domain has itself (the test's
    # values, _remade.MADE_IN_DOMAIN's, fixtures made before it).
    Remake = tuple[str, str, dict[str, object], tuple[str, ...]]
    # What undoes a remade fixture: its generator, or a request.addfinalizer function.
    Teardown = Generator[object] | Callable[[], object]


__all__ = [
    "AR_ALIAS",
    "PACKED",
    "assertion_helpers",
    "light_call",
    "light_run_encoded",
    "pack",
    "prepare",
    "run_test",
]

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
# The same, in a few words, for the summary of the tests that ran unisolated.
_SHORT = (
    "imports {name}, a C extension that refuses to load in a subinterpreter",
    "starts a daemon thread, which a subinterpreter refuses",
    "uses a feature a subinterpreter does not have",
)

# What test modules sent here import instead of _pytest.assertion.rewrite: a name with as
# many parts, found in sys.modules (see appdomain._pytest_code).
AR_ALIAS = "@appdomain.assertion.rewrite"
# This module's operations (light_call), named as the call path names operations.
PREPARE = f"{__name__}:prepare"
RUN = f"{__name__}:run"
# The key, in the state of an outcome exception sent back, of where the test raised it.
SKIP_WHERE = "_appdomain_raised_at"


class _Config:
    """Answer the few Config questions pytest's assertion helpers ask, from copied values."""

    def __init__(self, verbosity: dict[str, int], ini: dict[str, object], assertmode: str) -> None:
        self._verbosity = verbosity
        self._ini = ini
        self._assertmode = assertmode
        self.pluginmanager = self  # only has_plugin() is asked of it

    def get_verbosity(self, verbosity_type: str | None = None) -> int:
        return self._verbosity.get(verbosity_type or "", self._verbosity.get("", 0))

    def getini(self, name: str) -> object:
        return self._ini.get(name)

    def getvalue(self, name: str) -> str | None:
        return self._assertmode if name == "assertmode" else None

    def has_plugin(self, name: str) -> bool:
        return False  # plain text: the report is rendered (with colours) in the main process


# The spec of the test this domain runs (set by prepare; read when an assert fails).
_spec: TestSpec | None = None
_config: _Config | None = None
# The threads alive before the test module was imported: the domain's own (None: not yet
# prepared); and how many threads _thread counted then.
_first_threads: frozenset[int | None] | None = None
_first_count = 0


def prepare(
    spec: TestSpec,
) -> tuple[dict[str, tuple[Stamp, bytes]], bool, tuple[str, ...]]:
    """Get this domain ready for a test: import the test module; return the code compiled,
    whether no thread the import started still runs (then a domain its test never uses
    is simply destroyed), and, if spec asks (``imports``), the modules imported from files."""
    _prepare(spec)
    return take_compiled(), _quiet(), _loaders.imported_files() if spec.get("imports") else ()


def _prepare(spec: TestSpec) -> None:
    global _spec, _first_threads, _first_count
    _spec = spec
    if _first_threads is None:
        # threading is not loaded in a test's interpreter that is not a domain (_light):
        # then no thread was started through it yet.
        threading = sys.modules.get("threading")
        _first_threads = frozenset(
            () if threading is None else (t.ident for t in threading.enumerate())
        )
        _first_count = _thread._count()
    cache = spec.get("cache")
    if cache:
        _loaders.cache(cache)
    _loaders.install_finder()
    _install_ar_alias()
    _standin.install()
    # Importing makes next to no garbage cycles, but enough objects to trigger a handful of
    # collections (~1 ms for a module importing toolz); the test then runs with it on.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _import_test_module(spec)
    finally:
        _loaders.stop_serving()
        if collecting:
            gc.enable()


def _install_ar_alias() -> None:
    if AR_ALIAS in sys.modules:
        return
    from . import _ar

    _ar.load_helpers = assertion_helpers
    top, assertion, _ = AR_ALIAS.split(".")
    sys.modules[top] = types.SimpleNamespace(  # type: ignore[assignment]
        **{assertion: types.SimpleNamespace(rewrite=_ar)}
    )
    sys.modules[AR_ALIAS] = _ar


def assertion_helpers() -> types.ModuleType:
    """Return pytest's assertion helpers, set up to explain comparisons (first call imports)."""
    _setup_assertions(_spec)
    from _pytest.assertion import rewrite

    return rewrite


def _setup_assertions(spec: TestSpec | None) -> None:
    global _config
    if _config is not None:
        return
    import _pytest.assertion
    from _pytest.assertion import truncate, util

    if spec is None:
        spec = {"verbosity": {}, "ini": {}, "assertmode": "rewrite"}
    config = _Config(spec["verbosity"], spec["ini"], spec["assertmode"])
    rewriting = spec["assertmode"] == "rewrite"

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
        return res.replace("%", "%%") if rewriting else res

    util._reprcompare = callbinrepr
    util._config = config  # type: ignore[assignment]
    _config = config


def _import_test_module(spec: TestSpec) -> types.ModuleType:
    name = spec["module"]
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
    code = spec.get("code")
    loader = None if code is None else _loaders.TestModuleLoader(name, spec["path"], code)
    return _loaders.exec_module_from_file(name, spec["path"], loader)


def run_test(
    spec: TestSpec,
    funcargs: dict[str, object],
    made_here: tuple[str, ...] = (),
    remade: dict[str, Remake] | None = None,
) -> tuple[object, ...]:
    """Run the test function named by spec.

    made_here names the fixtures to make in this domain (see _remade.MADE_IN_DOMAIN) rather than
    receive; remade the fixtures whose functions run here again (their values could not
    cross), in order: name -> (module, qualname, their fixtures' values, the names of those
    this domain has), spec["remade_args"] the test's among them.  Returns
    (outcome, exception, longrepr, compiled, quiet, limit, subtests); quiet tells that no thread the
    test module or function started is still alive, so unloading cannot fail on one;
    limit is (why, whether the test module's import hit it, the refusing module's name or None)
    when the test failed or skipped on a subinterpreter limit, else None.
    """
    global _spec
    _subtests.clear()
    _subtest_errors.clear()
    made: dict[str, MonkeyPatch] = {}
    teardowns: list[tuple[str, Teardown]] = []
    try:
        try:
            if spec["module"] in sys.modules:
                _spec = spec
            else:
                _prepare(spec)
            if spec.get("unittest"):
                from ._unittest import run_case

                run_case(_owner(spec), spec["function"], _report_subtest)
            else:
                func = _resolve(spec)
                remade = remade or {}
                local = {n for r in remade.values() for n in r[3]}
                wanted = {*made_here, *(n for n in local if n in _remade.MADE_IN_DOMAIN)}
                made = {name: _remade.MADE_IN_DOMAIN[name]() for name in wanted}
                values = _remade.remake(remade, {**funcargs, **made}, teardowns)
                mine = {n: values[n] for n in spec.get("remade_args", ())}
                func(**funcargs, **{n: made[n] for n in made_here}, **mine)
        finally:
            try:
                _remade.teardown(teardowns)
            finally:
                for fixture in made.values():
                    fixture.undo()
                _flush()
    except BaseException as exc:
        limit = _limit_of(exc, spec)
        outcome = _outcome(exc)
        if outcome is not None:
            return (
                "outcome",
                outcome,
                _longrepr(exc, spec),
                take_compiled(),
                _quiet(),
                limit,
                _take_subtests(spec),
            )
        _explain_limits(exc)
        return (
            "raised",
            exc,
            _longrepr(exc, spec),
            take_compiled(),
            _quiet(),
            limit,
            _take_subtests(spec),
        )
    return ("passed", None, None, take_compiled(), _quiet(), None, _take_subtests(spec))


# The subtests of the unittest test this domain runs (see _unittest.run_case): message,
# params' reprs, outcome, skip reason, failure report (pytest's serialized longrepr).
_subtests: list[tuple[object, ...]] = []
_subtest_errors: list[BaseException | None] = []


def _report_subtest(subtest: tuple[object, ...], error: BaseException | None) -> None:
    _subtests.append(subtest)
    _subtest_errors.append(error)


def _take_subtests(spec: TestSpec) -> list[tuple[object, ...]]:
    """Return the subtests run, each with its failure rendered here, where its frames are."""
    taken = [
        (*subtest, None if error is None else _longrepr(error, spec))
        for subtest, error in zip(_subtests, _subtest_errors, strict=True)
    ]
    _subtests.clear()
    _subtest_errors.clear()
    return taken


def _limit_of(exc: BaseException, spec: TestSpec) -> tuple[str, bool, str | None] | None:
    """Return (why, the test module's import hit it, the refusing module's name if one did)
    if exc comes from a subinterpreter limit."""
    found = _limit_exception(exc)
    if found is None:
        return None
    hit, index = found
    # CPython's message: "module NAME does not support loading in subinterpreters".
    words = str(hit).split()
    name = words[1] if index == 0 and len(words) > 2 and words[0] == "module" else None
    short = _SHORT[index].format(name=name or "a module")
    return (short, spec["module"] not in sys.modules, name)


def _quiet() -> bool:
    """Tell whether every thread the test module or function started has ended."""
    if _first_threads is None:
        return False
    threading = sys.modules.get("threading")
    if threading is None:  # nothing started a thread through it: count _thread's
        return _thread._count() <= _first_count
    me = threading.current_thread()
    # Neither the thread that first imported threading here (its "main" thread, a
    # creator's thread) nor a foreign thread that entered (a dummy) is the test's.
    others = (threading._MainThread, threading._DummyThread)
    return all(
        t is me or t.ident in _first_threads or type(t) in others for t in threading.enumerate()
    )


def _outcome(exc: BaseException) -> tuple[str, dict[str, object]] | None:
    """Describe pytest's skip/xfail/fail/exit exceptions, which cannot cross by type.

    pytest sets their ``__module__`` to "builtins" (for shorter reports), so they cannot
    be imported back by name; they go as (class name, attributes) instead.
    """
    if "_pytest.outcomes" not in sys.modules:
        return None  # nothing imported pytest's outcomes, so exc is none of them
    from _pytest.outcomes import OutcomeException

    if not isinstance(exc, OutcomeException):
        return None
    state: dict[str, object] = {
        k: v for k, v in vars(exc).items() if isinstance(v, (str, int, bool, type(None)))
    }
    where = _raised_at(exc)
    if where is not None:
        state[SKIP_WHERE] = where
    why = _limit_behind(exc)
    msg = state.get("msg")
    if why is not None and isinstance(msg, str):
        # A test that skips on a failed import would hide that only the domain refused it.
        state["msg"] = f"{msg} (appdomain: isolated test hit a subinterpreter limit: {why})"
    return (type(exc).__name__, state)


def _raised_at(exc: BaseException) -> tuple[str, int] | None:
    """Return (file, line) of the last traceback frame not hidden by ``__tracebackhide__``.

    That is where pytest reports a skip: the line that called ``pytest.skip()``.
    """
    where = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        hidden = frame.f_locals.get("__tracebackhide__") or frame.f_globals.get("__tracebackhide__")
        if not hidden and not frame.f_code.co_filename.startswith(_OWN_FOLDER):
            where = (frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return where


# appdomain's own code: a skip raised there (for a unittest skip) is reported at the test.
_OWN_FOLDER = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _resolve(spec: TestSpec) -> Any:
    if spec["cls"] is None:
        return getattr(sys.modules[spec["module"]], spec["function"])
    # pytest makes a fresh instance of the test class for every test.
    return getattr(_owner(spec)(), spec["function"])


def _owner(spec: TestSpec) -> Any:
    """Return the class that holds the test (spec["cls"] names it in its module)."""
    owner: Any = sys.modules[spec["module"]]
    for part in (spec["cls"] or "").split("."):
        owner = getattr(owner, part)
    return owner


def _flush() -> None:
    # Output must reach the file descriptors while pytest still captures this test.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def _explain_limits(exc: BaseException) -> None:
    why = _limit_behind(exc)
    if why is not None:
        exc.add_note(f"appdomain: isolated test hit a subinterpreter limit: {why}")


def _limit_behind(exc: BaseException) -> str | None:
    """Explain the subinterpreter limit that exc, or an exception it was raised from, hit."""
    found = _limit_exception(exc)
    return None if found is None else _LIMITS[found[1]][1]


def _limit_exception(exc: BaseException) -> tuple[BaseException, int] | None:
    """Find the exception in exc's chain that names a subinterpreter limit, and which one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        for index, (needle, _) in enumerate(_LIMITS):
            if needle in text:
                return current, index
        current = current.__cause__ or current.__context__
    return None


def _longrepr(exc: BaseException, spec: TestSpec) -> Any:
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
            if spec.get("unittest"):  # as pytest does for TestCase tests: no unittest frames
                tb = tb.filter(lambda entry: not entry.frame.f_globals.get("__unittest"))
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


# -- packed calls --------------------------------------------------------------------------
#
# The main process runs the PREPARE and RUN operations in the test's interpreter
# (light_call, see _light) with a spec packed by CPython's marshal (a spec holds only
# builtin values), and gets the outcome back the same way unless it holds an exception
# object.  A test that passes, skips or fails an assert so never imports appdomain.marshal
# there: ~2 ms less for every isolated test.

# The reply's first item: the outcome packed by CPython's marshal, or encoded by appdomain's.
PACKED = 0
ENCODED = 1


def pack(value: Any) -> bytes:  # Any: whatever marshal.dumps takes
    """Pack a spec (or an outcome) for the other side; ValueError if it holds other types."""
    return _stdlib_marshal.dumps(value)


def _reply(result: object) -> tuple[int, Shareable]:
    try:
        return (PACKED, pack(result))
    except ValueError:  # an exception object: it crosses by appdomain's marshalling
        from .. import marshal

        return (ENCODED, marshal.to_shareable(result, name="outcome"))


def _op_prepare(packed: bytes) -> tuple[int, Shareable]:
    return _reply(prepare(_stdlib_marshal.loads(packed)))


def _op_run(packed: bytes) -> tuple[int, Shareable]:
    spec = _stdlib_marshal.loads(packed)
    made_here = tuple(spec.get("made_here", ()))
    return _reply(run_test(spec, spec.get("funcargs", {}), made_here, spec.get("remade")))


def light_call(op: str, packed: bytes, reply: int) -> None:
    """Run op (PREPARE or RUN) with its packed spec; put the reply on the queue reply.

    The test's creator runs this in the test's interpreter on its own thread (see _light),
    whether that interpreter is a domain or not yet.
    """
    _put_reply(reply, _op_prepare(packed) if op == PREPARE else _op_run(packed))


def light_run_encoded(wire: Shareable, reply: int) -> None:
    """Run run_test with arguments encoded by appdomain's marshalling (values that cross by
    name, copies of other objects, references: those need this interpreter to be a domain,
    see _light); put the reply on the queue reply."""
    from .. import marshal

    args, _ = marshal.decode_call(wire)
    run: Any = run_test  # its arguments, as _light encoded them
    _put_reply(reply, _reply(run(*args)))


def _put_reply(reply: int, result: tuple[int, Shareable]) -> None:
    import _interpqueues

    # 1: the item goes with the interpreter that put it (_core._compat's _UNBOUND_REMOVE);
    # the queue module's arguments changed order in 3.14.
    put: Any = _interpqueues.put
    if sys.version_info >= (3, 14):
        put(reply, result, 1, 0)
    else:
        put(reply, result, 0, 1)
