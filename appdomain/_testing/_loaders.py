"""Load modules in a test's interpreter: the test module as the main process compiled it,
the others from code compiled once (by an earlier test's interpreter, or read by the main
process).

Runs inside the interpreter of an isolated test (see ``_remote``).  A test module arrives
compiled, its asserts rewritten (``TestModuleLoader``).  A module the test imports from a
source file without a usable pyc is compiled by the first interpreter that imports it; the
code goes back to the main process (``take_compiled``) and on to the next interpreters
(``cache``), which would otherwise compile it again each.

The modules a test module's import loads from files are named to the main process once per
test module (``imported_files``): it then reads them once and serves them to the next
tests' interpreters, as it serves their boot modules (``_domains._preload``, ``_light``).
That serving ends once the test module is imported (``stop_serving``): what the test
function imports later, the import system finds as usual.
"""

from __future__ import annotations

import importlib.machinery
import marshal as _stdlib_marshal
import os
import sys
import types
from importlib._bootstrap import module_from_spec  # importlib.util: ~0.5 ms a domain more
from importlib._bootstrap_external import spec_from_file_location

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "TestModuleLoader",
    "cache",
    "exec_module_from_file",
    "imported_files",
    "install_finder",
    "stop_serving",
    "take_compiled",
]

# A source file's identity for a cached compilation: (st_mtime_ns, st_size).
Stamp = tuple[int, int]
# The module that serves a new interpreter's first modules (its finder's __module__ there).
_PRELOAD = "appdomain._domains._preload"

# Code compiled by earlier domains, by source path; and what this domain compiled itself.
_cache: dict[str, tuple[Stamp, bytes]] = {}
_compiled: dict[str, tuple[Stamp, bytes]] = {}


class TestModuleLoader(importlib.machinery.SourceFileLoader):
    """Load the test module from the code the main process compiled (asserts rewritten)."""

    def __init__(self, fullname: str, path: str, code: bytes) -> None:
        super().__init__(fullname, path)
        self._code = code

    def get_code(self, fullname: str) -> types.CodeType:
        code: types.CodeType = _stdlib_marshal.loads(self._code)
        return code


class _CachedLoader(importlib.machinery.SourceFileLoader):
    """Load a source module from code an earlier domain compiled, else compile and note it."""

    def get_code(self, fullname: str) -> types.CodeType | None:
        path = self.path
        hit = _cache.get(path)
        if hit is not None and hit[0] == _stamp(path):
            code: types.CodeType = _stdlib_marshal.loads(hit[1])
            return code
        # Most modules have a usable pyc: no stat of their own then, only the loader's.
        self._source_stamp: Stamp | None = None
        found = super().get_code(fullname)
        if self._source_stamp is not None and found is not None:
            _compiled[path] = (self._source_stamp, _stdlib_marshal.dumps(found))
        return found

    def source_to_code(  # type: ignore[override]
        self, data: bytes, path: str, *, _optimize: int = -1
    ) -> types.CodeType:
        # Called only when no valid pyc exists: the code is worth sharing, stamped as the
        # file is now (it was just read).
        self._source_stamp = _stamp(path)
        return super().source_to_code(data, path, _optimize=_optimize)


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class _CachedCodeFinder:  # a meta path finder; importlib.abc would cost every domain ~15 ms
    """Find modules as the path finder does, loading plain source modules with _CachedLoader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _CachedLoader(spec.loader.name, spec.loader.path)
        return spec


def install_finder() -> None:
    if any(type(finder) is _CachedCodeFinder for finder in sys.meta_path):
        return
    try:
        at = sys.meta_path.index(importlib.machinery.PathFinder)
    except ValueError:
        return  # an unusual import system: leave it alone
    sys.meta_path.insert(at, _CachedCodeFinder())


def exec_module_from_file(
    name: str, path: str, loader: importlib.machinery.SourceFileLoader | None
) -> types.ModuleType:
    """Import the file at path as module name (as _runtime's, without loading _runtime: a
    test's interpreter becomes a domain only when the test needs one, see _light)."""
    spec = spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import module {name!r} from {path!r}", name=name)
    module = module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def take_compiled() -> dict[str, tuple[Stamp, bytes]]:
    compiled = dict(_compiled)
    _compiled.clear()
    return compiled


def cache(compiled: dict[str, tuple[Stamp, bytes]]) -> None:
    """Keep the code earlier domains compiled, by source path, for this one's imports."""
    _cache.update(compiled)


def imported_files() -> tuple[str, ...]:
    """Name the modules this interpreter imported from files, in the order it did."""
    names = []
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if spec is not None and getattr(spec, "has_location", False):
            names.append(name)
    return tuple(names)


def stop_serving() -> None:
    """Let the import system find the modules imported from now on (see the module's text)."""
    for finder in list(sys.meta_path):
        kind = type(finder)
        if kind.__name__ == "CodeFinder" and kind.__module__ == _PRELOAD:
            sys.meta_path.remove(finder)
