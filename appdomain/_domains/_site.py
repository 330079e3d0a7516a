"""Do site's work in a new domain, deferring the editable finders it would import.

A package installed in setuptools' default editable mode adds a ``.pth`` line that every
new interpreter's ``site`` runs: it imports that package's finder module, which imports
``pathlib`` and ``importlib.util`` (~8 ms a domain, measured by bench/bench_domains.py), to
install a meta-path finder that most domains never consult.  So domains are created
without ``site`` (``_native._ext.set_site_import``) and their boot does its work instead:
the creator reads its site directories' ``.pth`` files once (``plan``), the new domain
runs their import lines as ``site`` would (``SOURCE``, run before appdomain itself is
importable there) except the editable finders' ones, whose mappings one small finder
serves with what the import system has loaded anyway.  The creator's ``sys.path`` already
holds the ``.pth`` files' path lines.
"""

from __future__ import annotations

import os
import sys
import threading

from .._core import _compat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    # (import lines to run, editable finders' mappings: ((package, folder), ...) each)
    type SitePlan = tuple[tuple[str, ...], tuple[tuple[tuple[str, str], ...], ...]]

__all__ = ["SOURCE", "absent", "create_interp", "plan"]

_plan: SitePlan | None = None


def plan() -> SitePlan:
    """Read the .pth files of this interpreter's site directories (once per process)."""
    global _plan
    if _plan is None:
        _plan = _read_plan(_site_dirs())
    return _plan


def _site_dirs() -> list[str]:
    import site

    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if os.path.isdir(d)]


def _read_plan(dirs: list[str]) -> SitePlan:
    lines: list[str] = []
    finders: list[tuple[tuple[str, str], ...]] = []
    for folder in dirs:
        for name in sorted(os.listdir(folder)):  # site's order
            if not name.endswith(".pth") or name.startswith("."):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as file:
                    text = file.read()
            except (OSError, UnicodeDecodeError):
                continue
            for line in text.splitlines():
                if not line.startswith(("import ", "import\t")):
                    continue  # a comment, or a path line: the creator's sys.path has it
                mapping = _editable_mapping(folder, line.rstrip())
                if mapping is None:
                    lines.append(line)
                else:
                    finders.append(mapping)
    return tuple(lines), tuple(finders)


def _editable_mapping(folder: str, line: str) -> tuple[tuple[str, str], ...] | None:
    """The (package, folder) mapping an editable finder's .pth line installs; else None.

    Only lines exactly as setuptools writes them, for finders without namespace packages
    (those also hook sys.path: their line runs as it is).
    """
    words = line.replace(";", " ").split()
    if len(words) != 3 or words[0] != "import" or words[2] != f"{words[1]}.install()":
        return None
    module = words[1]
    if not (module.startswith("__editable___") and module.endswith("_finder")):
        return None
    try:
        with open(os.path.join(folder, module + ".py"), encoding="utf-8") as file:
            source = file.read()
    except (OSError, UnicodeDecodeError):
        return None
    mapping = _literal(source, "MAPPING")
    namespaces = _literal(source, "NAMESPACES")
    if not isinstance(mapping, dict) or namespaces != {}:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        return None
    return tuple(mapping.items())


def _literal(source: str, name: str) -> object:
    """The value of a one-line ``NAME = {...}`` (or ``NAME: type = {...}``) in source."""
    import ast

    for line in source.splitlines():
        head, sep, value = line.partition("=")
        if sep and head.split(":")[0].strip() == name and not line.startswith((" ", "\t")):
            try:
                return ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                return None
    return None


# Run by a new domain's boot (namespace: the creator's plan as `site_plan`, and `absent`'s
# answer for its sys.path as `site_absent` if known), before it imports appdomain:
# appdomain itself may be a package installed editable.
SOURCE = '''\
def _appdomain_site(plan, absent):
    import os, sys
    import _frozen_importlib_external as bootstrap

    lines, finders = plan
    suffixes = bootstrap.SOURCE_SUFFIXES + bootstrap.BYTECODE_SUFFIXES
    suffixes = suffixes + bootstrap.EXTENSION_SUFFIXES

    class EditableFinder:
        """Find what setuptools' editable finders would, from their mappings."""

        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            for mapping in finders:  # the finders' order on sys.meta_path
                for pkg, folder in reversed(mapping):  # as each finder looks
                    if fullname != pkg and not fullname.startswith(pkg + "."):
                        continue
                    rest = fullname[len(pkg):].strip(".")
                    candidate = os.path.join(folder, *rest.split(".")) if rest else folder
                    init = os.path.join(candidate, "__init__.py")
                    for location in [init] + [candidate + s for s in suffixes]:
                        if os.path.exists(location):
                            return bootstrap.spec_from_file_location(fullname, location)
                    return None
            return None

    if finders:
        sys.meta_path.append(EditableFinder)
    import site  # site is off here: importing it runs nothing

    site.setquit()
    site.setcopyright()
    site.sethelper()
    for line in lines:
        try:
            exec(line, {"__builtins__": __builtins__})
        except Exception as exc:
            print(f"Error processing .pth line {line!r}: {exc!r} (ignored)", file=sys.stderr)
    def present(name):
        # The creator's path finder found it nowhere on this sys.path (site_absent): then
        # only another finder could have it.  A failed import would list every folder.
        if name not in absent:
            return True
        for finder in sys.meta_path:
            if finder is not bootstrap.PathFinder and hasattr(finder, "find_spec"):
                if finder.find_spec(name, None) is not None:
                    return True
        return False

    if present("sitecustomize"):
        site.execsitecustomize()
    if site.check_enableusersite() and present("usercustomize"):
        site.execusercustomize()


_appdomain_site(site_plan, globals().get("site_absent", ()))
del _appdomain_site, site_plan
'''


_absent: dict[tuple[str, ...], tuple[str, ...]] = {}


def absent(sys_path: Sequence[str]) -> tuple[str, ...]:
    """Which of sitecustomize and usercustomize no folder of sys_path holds (once a path).

    Looked up with this interpreter's path finder, whose folder listings are made already.
    """
    key = tuple(sys_path)
    if key not in _absent:
        if len(_absent) >= 32:  # a few paths at a time
            _absent.clear()
        import importlib.machinery

        _absent[key] = tuple(
            name
            for name in ("sitecustomize", "usercustomize")
            if importlib.machinery.PathFinder.find_spec(name, list(sys_path)) is None
        )
    return _absent[key]


# One creation at a time while site is off: the setting is the creating interpreter's.
_creating = threading.Lock()


def create_interp() -> tuple[int, SitePlan | None]:
    """Create a domain's interpreter without site; return it and the plan its boot runs.

    The plan is None where site ran as usual (no C switch, a CPython it was not checked
    against) or this interpreter runs without site itself.
    """
    try:
        from .._native import _ext
    except ImportError:
        return _compat.create_interp(), None
    if sys.flags.no_site:
        return _compat.create_interp(), None
    site_plan = plan()
    with _creating:
        previous = _ext.set_site_import(False)
        try:
            interp_id = _compat.create_interp()
        finally:
            if previous is not None:
                _ext.set_site_import(previous)
    return interp_id, site_plan if previous else None
