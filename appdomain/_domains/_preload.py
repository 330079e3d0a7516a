"""Hand a new domain the compiled modules its boot imports, read once by its creator.

A fresh interpreter pays for every module it imports: the path finder looks through
``sys.path`` (a listing of each folder on its first use, then a stat per candidate), opens
and reads the ``.pyc``, checks it against its source, then unmarshals and runs it:
~100-200 us a module, for the ~45 a domain imports to boot and serve its first call
(appdomain's own and the stdlib ones they need).  The creator reads those files once per
process (``bundle``: a file edited later is not read again, as this interpreter does not
import it again either) and gives each new domain their code in one bytes object (bytes
cross interpreters by one copy); a finder there (``install``, run before appdomain is importable)
serves each of them once, from the file the path finder would have found, with the spec
and loader it would have made, so the modules are what they would have been (``__file__``,
``__spec__``, tracebacks, ``importlib.resources``).  Only unmarshalling and running remain.

The creator checks that the domain's ``sys.path`` finds each top-level name in the file it
read; a submodule is served only under its package's ``__path__``.  Anything else, a
reload included, is left to the import system.  Extension modules are served their location
only (no code to carry): that spares their path scan.  This module's own code runs in the
new domain before ``site``'s work (``_site``), so it imports only what is built in or frozen
(not even ``__future__``: its annotations are strings).
"""

import _frozen_importlib  # the import system's own two: always loaded
import _frozen_importlib_external as _external
import _imp
import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec

    from ._site import SitePlan

    # One served module: (name, file, its .pyc or "", the folder of its submodules or "" (not
    # a package), the folder it is found in, start and end of its code in the blob (-1, -1:
    # an extension module)).
    type Entry = tuple[str, str, str, str, str, int, int]
    # What the creator read of one module: (file, .pyc or "", package?, code or None).
    type Read = tuple[str, str, bool, bytes | None]
    # What a new domain's boot receives: (this module's code, its marshalled entries, the
    # code of all of them).
    type Bundle = tuple[bytes, bytes, bytes]

__all__ = ["MODULES", "bundle", "compiled", "install"]

# What a domain's boot and first call import beside the modules the interpreter has frozen
# or built in, in the order they are first imported (extension modules too: where CPython
# builds them as files, finding one would list folders of sys.path).  A module missing here
# loads as usual, only slower; one the creator has not loaded itself is skipped.
MODULES = (
    "__future__",
    "appdomain",
    "appdomain._domains",
    "importlib",
    "warnings",
    "types",
    "_weakrefset",
    "threading",
    "appdomain._aliases",
    "weakref",
    "appdomain._errors",
    "_interpqueues",
    "_interpreters",
    "appdomain._core._compat",
    "_contextvars",
    "appdomain._core._context",
    "appdomain._core._wire",
    "_socket",
    "appdomain._core._foreign",
    "appdomain._core._serve",
    "appdomain._core._wake",
    "appdomain._native",
    "appdomain._native._ext",
    "appdomain._core._native_route",
    "appdomain._core._client",
    "appdomain._core._pool",
    "appdomain._core",
    "appdomain._domains._events",
    "appdomain._domains._runtime",
    # the first call: appdomain.marshal, remoting and monitoring
    "appdomain.marshal",
    "appdomain.marshal._tags",
    "appdomain.marshal._registry",
    "appdomain.marshal._core",
    "appdomain.marshal._markers",
    "appdomain.marshal._types",
    "appdomain.marshal._exc",
    "appdomain.marshal._globals",
    "appdomain.marshal._calls",
    "appdomain.marshal._plan",
    "appdomain.marshal._callplan",
    "appdomain._remoting",
    "appdomain._remoting._async",
    "appdomain._remoting._base",
    "_queue",
    "appdomain._remoting._release",
    "appdomain._remoting._methods",
    "appdomain._remoting._proxy",
    "appdomain._remoting._table",
    "appdomain._remoting._server",
    "appdomain._core._meter",
    "appdomain._domains._monitoring",
    # its unload
    "appdomain._channels",
    "appdomain._channels._rehome",
)


# -- in the new domain ---------------------------------------------------------------------


def install(entries: bytes, blob: bytes, sys_path: "Sequence[str] | None" = None) -> None:
    """Serve the modules of a creator's bundle, ahead of the path finder; with sys_path (the
    path the bundle was checked against), a top-level name only while sys.path is that."""
    finder = CodeFinder(marshal.loads(entries), blob, sys_path)
    at = len(sys.meta_path)
    for i, other in enumerate(sys.meta_path):
        if other is _external.PathFinder:
            at = i
            break
    sys.meta_path.insert(at, finder)


class CodeFinder:
    """Find each module of a bundle once, where and as the path finder would have."""

    def __init__(
        self, entries: "tuple[Entry, ...]", blob: bytes, sys_path: "Sequence[str] | None" = None
    ) -> None:
        self._entries = {entry[0]: entry for entry in entries}
        self._blob = memoryview(blob)
        self._sys_path = None if sys_path is None else list(sys_path)

    def find_spec(
        self, fullname: str, path: "Sequence[str] | None" = None, target: object = None
    ) -> "ModuleSpec | None":
        entry = self._entries.get(fullname)
        if entry is None:
            return None
        _, origin, cached, locations, where, start, end = entry
        if path is not None and where not in path:
            return None  # its package is not the one read: let the path finder look
        if path is None and self._sys_path is not None and sys.path != self._sys_path:
            return None  # the path changed since the creator checked it finds this file
        del self._entries[fullname]  # once: a reload reads the file again
        if not self._entries:
            self.remove()
        loader: _external.FileLoader
        if start < 0:
            loader = _external.ExtensionFileLoader(fullname, origin)
        else:
            loader = CodeLoader(fullname, origin, self._blob[start:end])
        # As spec_from_file_location makes it, with what the creator worked out already.
        spec = _frozen_importlib.ModuleSpec(fullname, loader, origin=origin)
        spec.has_location = True
        if locations:
            spec.submodule_search_locations = [locations]
        if cached:
            spec.cached = cached
        return spec

    def remove(self) -> None:
        """Leave the import system as it was (all served, or the domain gives up on them)."""
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


_fix_co_filename = getattr(_imp, "_fix_co_filename")  # noqa: B009 - no stub


class CodeLoader(_external.SourceFileLoader):
    """A source file's loader whose first code is the one the domain's creator read."""

    def __init__(self, fullname: str, path: str, code: memoryview) -> None:
        super().__init__(fullname, path)
        self._code: memoryview | None = code

    def get_code(self, fullname: str) -> "types.CodeType | None":
        code, self._code = self._code, None
        if code is None or fullname != self.name:
            return super().get_code(fullname)  # run again: read the file as usual
        loaded: types.CodeType = marshal.loads(code)
        _fix_co_filename(loaded, self.path)  # as the loader does: the .pyc's may be relative
        return loaded


# -- in the creator ------------------------------------------------------------------------


# Filled once per process; a race fills an entry twice with the same value.
_read: "dict[str, Read | None]" = {}  # by module name
# Every module read, with its code's place in one blob: the same for every domain.
# Per list of modules (a domain's MODULES, a test interpreter's own), what _read_all made;
# a few lists at a time (a test interpreter's list grows as tests import more modules).
_all: "dict[tuple[str, ...], tuple[dict[str, Entry], bytes]]" = {}
_MAX_LISTS = 4
# The entries for one sys.path and list (a few kB each; the blob stays in _all), a few at a
# time.
_bundles: "dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[bytes, bytes] | None]" = {}
_MAX_PATHS = 32
_compiled: dict[str, bytes] = {}


def compiled(source: str, filename: str) -> bytes:
    """Compile source once per process; return its code marshalled, for a domain to run."""
    code = _compiled.get(source)
    if code is None:
        code = _compiled[source] = marshal.dumps(compile(source, filename, "exec"))
    return code


def bundle(
    sys_path: "Sequence[str]", site_plan: "SitePlan | None", modules: "tuple[str, ...]" = MODULES
) -> "Bundle | None":
    """What a new interpreter with sys_path (and site_plan's editable finders) runs
    ``install`` from, ahead of its imports, to be served modules (a domain's boot, MODULES,
    by default); None when this module itself was not loaded from a file."""
    key = (modules, tuple(sys_path))
    try:
        made = _bundles[key]
    except KeyError:  # not made yet (or just cleared by another thread)
        made = _make_bundle(sys_path, site_plan, modules)
        if len(_bundles) >= _MAX_PATHS:
            _bundles.clear()
        _bundles[key] = made
    # The blob is the same for every path: kept once, in _all.
    return None if made is None else (made[0], made[1], _read_all(modules)[1])


def _make_bundle(
    sys_path: "Sequence[str]", site_plan: "SitePlan | None", modules: "tuple[str, ...]"
) -> "tuple[bytes, bytes] | None":
    own = _read_module(__name__)
    code = None if own is None else own[3]
    if code is None:
        return None
    entries, _ = _read_all(modules)
    chosen = tuple(
        entry
        for name, entry in entries.items()
        # A top-level name: the domain's path must find the file read, not another.
        if "." in name or _found_at(name, sys_path, site_plan) == entry[1]
    )
    return (code, marshal.dumps(chosen))


def _read_all(modules: "tuple[str, ...]") -> "tuple[dict[str, Entry], bytes]":
    made = _all.get(modules)
    if made is None:
        entries: dict[str, Entry] = {}
        parts: list[bytes] = []
        size = 0
        for name in modules:
            read = _read_module(name)
            if read is None:
                continue
            origin, cached, is_package, code = read
            folder = os.path.dirname(origin)
            where = os.path.dirname(folder) if is_package else folder
            start = end = -1
            if code is not None:
                start, end = size, size + len(code)
                parts.append(code)
                size = end
            entries[name] = (name, origin, cached, folder if is_package else "", where, start, end)
        made = (entries, b"".join(parts))
        if len(_all) >= _MAX_LISTS:
            _all.clear()
        _all[modules] = made
    return made


def _read_module(name: str) -> "Read | None":
    """What a domain needs of a module (see Read) loaded from a file, else None."""
    if name in _read:
        return _read[name]
    spec = _spec_of(name)
    loader = getattr(spec, "loader", None)
    origin = getattr(spec, "origin", None)
    read: Read | None = None
    if spec is not None and isinstance(origin, str) and os.path.isabs(origin):
        is_package = spec.submodule_search_locations is not None
        cached = spec.cached or ""
        if type(loader) is _external.ExtensionFileLoader:
            # Only one loaded here: some must be loaded by the main interpreter first (msgpack).
            if name in sys.modules:
                read = (origin, cached, is_package, None)
        elif type(loader) is _external.SourceFileLoader:
            code = _code_of(name, origin, cached, loader)
            if code is not None:
                read = (origin, cached, is_package, code)
    _read[name] = read
    return read


def _spec_of(name: str) -> "ModuleSpec | None":
    """The spec of a module loaded here, else of the file the path finder finds (not run)."""
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__spec__", None)
    parent, _, _ = name.rpartition(".")
    if not parent:
        return _external.PathFinder.find_spec(name)
    locations = getattr(_spec_of(parent), "submodule_search_locations", None)
    if locations is None:
        return None
    return _external.PathFinder.find_spec(name, list(locations))


def _code_of(
    name: str, origin: str, cached: str, loader: _external.SourceFileLoader
) -> bytes | None:
    """The marshalled code of a source module: its .pyc's when current, as the loader checks."""
    try:
        stat = os.stat(origin)
        with open(cached, "rb") as file:
            data = file.read()
    except OSError:
        data = b""
    else:
        header = data[:16]
        if (
            header[:4] == _external.MAGIC_NUMBER
            and int.from_bytes(header[4:8], "little") == 0  # checked by time and size
            and int.from_bytes(header[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == stat.st_size & 0xFFFFFFFF
        ):
            return data[16:]
    try:
        code = loader.get_code(name)  # no current .pyc: compiled here, once
    except (OSError, ImportError, SyntaxError, ValueError):
        return None
    return None if code is None else marshal.dumps(code)


def _found_at(name: str, sys_path: "Sequence[str]", site_plan: "SitePlan | None") -> str | None:
    """The file a domain with sys_path imports for top-level name (path, then editable finders)."""
    spec = _external.PathFinder.find_spec(name, list(sys_path))
    if spec is not None:
        return spec.origin
    for mapping in site_plan[1] if site_plan is not None else ():
        for package, folder in reversed(mapping):  # as _site's EditableFinder looks
            if package == name:
                init = os.path.join(folder, "__init__.py")
                return init if os.path.exists(init) else None
    return None
