"""See and load a domain's modules ("assemblies"), and raise the import and exception events.

The ops below are served inside the domain they concern, named ``"module:op"`` so that a
domain loads this module only when it is first asked (``_core/_serve.py``).  The three
events install their hook when their first handler subscribes and remove it with the
last one, so a domain nobody watches pays nothing:

- ``assembly_load``: a meta path finder, first on ``sys.meta_path``, that finds the spec
  with the finders after it and wraps its loader, to fire once the module has run;
- ``assembly_resolve``: a finder last on ``sys.meta_path``, asked only when every other
  finder failed, as .NET raises AssemblyResolve only when loading failed;
- ``first_chance_exception``: ``sys.monitoring``'s RAISE event (per interpreter), which
  costs nothing until an exception is raised.
"""

from __future__ import annotations

import os
import sys
import threading

from .._core import register_op
from .._errors import AppDomainError
from . import _runtime
from ._events import Event, EventArgs

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    import importlib.machinery
    import types
    from collections.abc import Mapping, Sequence

    from .._core import Route

    # The wire shape of an AssemblyInfo: (name, file, version).
    type WireAssembly = tuple[str, str | None, str | None]

__all__ = [
    "AssemblyInfo",
    "AssemblyLoadEventArgs",
    "FirstChanceExceptionEventArgs",
    "ResolveEventArgs",
    "assembly_load",
    "assembly_resolve",
    "first_chance_exception",
    "get_assemblies",
    "load",
]

_OP = "appdomain._domains._assemblies:"


class AssemblyInfo:
    """A module loaded in a domain: its name, its file (None if built in), its version.

    The version is the one its distribution's metadata gives (``importlib.metadata``),
    None for a module that belongs to no installed distribution.
    """

    __slots__ = ("file", "name", "version")
    name: str
    file: str | None
    version: str | None

    def __init__(self, name: str, file: str | None, version: str | None) -> None:
        self.name = name
        self.file = file
        self.version = version

    def __repr__(self) -> str:
        return f"AssemblyInfo(name={self.name!r}, file={self.file!r}, version={self.version!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AssemblyInfo):
            return NotImplemented
        return (self.name, self.file, self.version) == (other.name, other.file, other.version)

    def __hash__(self) -> int:
        return hash((self.name, self.file, self.version))

    @property
    def FullName(self) -> str:
        return self.name if self.version is None else f"{self.name}, Version={self.version}"

    @property
    def Location(self) -> str | None:
        return self.file


class AssemblyLoadEventArgs(EventArgs):
    """What assembly_load reports: the module just imported, its name and file."""

    __slots__ = ("file", "module", "name")
    module: types.ModuleType
    name: str
    file: str | None

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        self.name = module.__name__
        self.file = getattr(module, "__file__", None)

    def __repr__(self) -> str:
        return f"AssemblyLoadEventArgs(name={self.name!r}, file={self.file!r})"

    @property
    def LoadedAssembly(self) -> types.ModuleType:
        return self.module


class ResolveEventArgs(EventArgs):
    """What assembly_resolve asks for: the module no finder found, and the package's path."""

    __slots__ = ("name", "path")
    name: str
    path: list[str] | None

    def __init__(self, name: str, path: Sequence[str] | None) -> None:
        self.name = name
        # Where the import looked: the parent package's __path__ for a submodule, else None.
        self.path = None if path is None else list(path)

    def __repr__(self) -> str:
        return f"ResolveEventArgs(name={self.name!r})"

    @property
    def Name(self) -> str:
        return self.name


class FirstChanceExceptionEventArgs(EventArgs):
    """What first_chance_exception reports: the exception, just raised, before any handler."""

    __slots__ = ("exception",)
    exception: BaseException

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception

    def __repr__(self) -> str:
        return f"FirstChanceExceptionEventArgs(exception={self.exception!r})"

    @property
    def Exception(self) -> BaseException:
        return self.exception


# -- get_assemblies / load -------------------------------------------------------------------


def get_assemblies(route: Route) -> list[AssemblyInfo]:
    """Return the modules loaded in the domain at route, by name."""
    from .. import _core

    wire: tuple[WireAssembly, ...] = _core.call(route, _OP + "get_assemblies", None)
    return [AssemblyInfo(*item) for item in wire]


def load(route: Route, module_name: object) -> AssemblyInfo:
    """Import module_name in the domain at route and return its AssemblyInfo."""
    from .. import _core

    if not isinstance(module_name, str) or not module_name:
        raise TypeError(
            f"'module_name' must be a non-empty str (got {module_name!r} that is a "
            f"{type(module_name).__name__})"
        )
    wire: WireAssembly = _core.call(route, _OP + "load", module_name)
    return AssemblyInfo(*wire)


# Top-level module -> distribution names, read once per domain: building it reads every
# installed distribution's metadata (tens of milliseconds in a large environment).
_distributions: Mapping[str, list[str]] | None = None


# Only modules installed by a distribution have metadata: others (the standard library, a
# plugin folder) are not looked up, which would cost a full scan each time.
_INSTALLED = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def _version(name: str, file: str | None) -> str | None:
    global _distributions
    if file is None or not any(part in file for part in _INSTALLED):
        return None
    from importlib import metadata

    top = name.partition(".")[0]
    try:
        return metadata.version(top)  # most distributions are named as their module
    except metadata.PackageNotFoundError:
        pass
    if _distributions is None:
        _distributions = metadata.packages_distributions()
    for dist in _distributions.get(top, ()):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _describe(name: str, module: object) -> WireAssembly:
    file = getattr(module, "__file__", None)
    file = file if isinstance(file, str) else None
    return (name, file, _version(name, file))


def _op_get_assemblies(_: None) -> tuple[WireAssembly, ...]:
    loaded = [(name, module) for name, module in list(sys.modules.items()) if module is not None]
    return tuple(_describe(name, module) for name, module in sorted(loaded, key=_first))


def _first(item: tuple[str, object]) -> str:
    return item[0]


def _op_load(module_name: str) -> WireAssembly:
    module = _runtime.load_module(module_name)
    return _describe(module.__name__, module)


register_op(_OP + "get_assemblies", _op_get_assemblies)
register_op(_OP + "load", _op_load)


# -- assembly_load ---------------------------------------------------------------------------

_finding = threading.local()  # set while a finder here asks the others (no recursion)


def _others_find(
    me: object, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None
) -> importlib.machinery.ModuleSpec | None:
    if getattr(_finding, "active", False):
        return None
    _finding.active = True
    try:
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is me or isinstance(finder, _Resolver) or find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                return spec
        return None
    finally:
        _finding.active = False


class _LoadWatcher:  # a meta path finder; importlib.abc would cost every domain ~4 ms
    """Find a module with the finders after this one and wrap its loader to report it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        spec = _others_find(self, fullname, path, target)
        # Only modules with a location: built-in and frozen loaders are checked by identity.
        if spec is None or not spec.has_location or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ReportingLoader(spec.loader)  # type: ignore[assignment]
        return spec


class _ReportingLoader:
    """The real loader, which fires assembly_load once the module has run."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> object:
        if name == "_loader":  # not set yet (a copy being made): no endless lookup
            raise AttributeError(name)
        return getattr(self._loader, name)

    def exec_module(self, module: types.ModuleType) -> None:
        # The module sees its real loader, as it would without the event.
        module.__loader__ = self._loader  # type: ignore[assignment]
        spec = module.__spec__
        if spec is not None:
            spec.loader = self._loader  # type: ignore[assignment]
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        assembly_load.fire(_runtime._sender(), AssemblyLoadEventArgs(module))


_watcher = _LoadWatcher()


def _install_watcher() -> None:
    if _watcher not in sys.meta_path:
        sys.meta_path.insert(0, _watcher)


def _remove_watcher() -> None:
    while _watcher in sys.meta_path:
        sys.meta_path.remove(_watcher)


assembly_load = Event(
    "assembly_load", on_first_subscribe=_install_watcher, on_last_unsubscribe=_remove_watcher
)


# -- assembly_resolve ------------------------------------------------------------------------


class _Resolver:
    """Last on sys.meta_path: ask assembly_resolve's handlers for a module nothing found."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if getattr(_finding, "active", False):
            return None
        args = ResolveEventArgs(fullname, path)
        sender = _runtime._sender()
        for handler in assembly_resolve.handlers:
            answer = handler(sender, args)
            if answer is not None:
                return _spec_from(fullname, answer)
        return None


def _spec_from(fullname: str, answer: object) -> importlib.machinery.ModuleSpec:
    """Turn a resolve handler's answer (a spec, a file, or a folder to look in) into a spec."""
    import importlib.machinery
    import importlib.util

    if isinstance(answer, importlib.machinery.ModuleSpec):
        return answer
    if not isinstance(answer, (str, os.PathLike)):
        raise TypeError(
            f"an assembly_resolve handler must return a path, a ModuleSpec or None "
            f"(got {answer!r} that is a {type(answer).__name__}) for {fullname!r}"
        )
    where = os.path.abspath(os.fspath(answer))
    candidates = [where]
    if os.path.isdir(where):
        leaf = fullname.rpartition(".")[2]
        candidates = [
            os.path.join(where, "__init__.py"),
            os.path.join(where, leaf, "__init__.py"),
            os.path.join(where, leaf + ".py"),
        ]
    for candidate in candidates:
        if os.path.isfile(candidate):
            package = os.path.basename(candidate) == "__init__.py"
            spec = importlib.util.spec_from_file_location(
                fullname,
                candidate,
                submodule_search_locations=[os.path.dirname(candidate)] if package else None,
            )
            if spec is not None:
                return spec
    raise ImportError(
        f"an assembly_resolve handler answered {os.fspath(answer)!r} for {fullname!r}, "
        f"but no module is there (looked for {', '.join(map(repr, candidates))})",
        name=fullname,
    )


_resolver = _Resolver()


def _install_resolver() -> None:
    if _resolver not in sys.meta_path:
        sys.meta_path.append(_resolver)


def _remove_resolver() -> None:
    while _resolver in sys.meta_path:
        sys.meta_path.remove(_resolver)


assembly_resolve = Event(
    "assembly_resolve", on_first_subscribe=_install_resolver, on_last_unsubscribe=_remove_resolver
)


# -- first_chance_exception ----------------------------------------------------------------

# appdomain's own code raises and catches by design (an empty queue's get raises): those are
# no news to a user, so raises in its files do not fire the event.
_OWN_FILES = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_tool: int | None = None
# Thread ident -> (id of the exception last seen, id of its traceback then): RAISE fires
# again in every frame the exception unwinds through, each adding a traceback entry
# before the last one.
_last_raise: dict[int, tuple[int, int]] = {}
_in_handler = threading.local()


def _on_raise(code: types.CodeType, offset: int, exc: BaseException) -> None:
    ident = threading.get_ident()
    tb = exc.__traceback__
    tb_id = id(tb)
    seen = _last_raise.get(ident)
    _last_raise[ident] = (id(exc), tb_id)
    if seen is not None and seen[0] == id(exc) and tb is not None and id(tb.tb_next) == seen[1]:
        return  # the same exception unwinding one frame further
    if code.co_filename.startswith(_OWN_FILES) or getattr(_in_handler, "active", False):
        return
    _in_handler.active = True  # a handler's own raises do not fire it again
    try:
        first_chance_exception.fire(_runtime._sender(), FirstChanceExceptionEventArgs(exc))
    finally:
        _in_handler.active = False


def _start_monitoring() -> None:
    global _tool
    monitoring = sys.monitoring
    for tool in (3, 4):  # the ids sys.monitoring leaves free (0-2 and 5 are named)
        if monitoring.get_tool(tool) is None:
            monitoring.use_tool_id(tool, "appdomain first_chance_exception")
            break
    else:
        raise AppDomainError(
            "first_chance_exception needs a free sys.monitoring tool id (3 or 4), and both "
            f"are taken ({monitoring.get_tool(3)!r}, {monitoring.get_tool(4)!r})"
        )
    monitoring.register_callback(tool, monitoring.events.RAISE, _on_raise)
    monitoring.set_events(tool, monitoring.events.RAISE)
    _tool = tool


def _stop_monitoring() -> None:
    global _tool
    if _tool is None:
        return
    monitoring = sys.monitoring
    monitoring.set_events(_tool, 0)
    monitoring.register_callback(_tool, monitoring.events.RAISE, None)
    monitoring.free_tool_id(_tool)
    _tool = None
    _last_raise.clear()


first_chance_exception = Event(
    "first_chance_exception",
    on_first_subscribe=_start_monitoring,
    on_last_unsubscribe=_stop_monitoring,
)
