"""Read a plugin folder: which plugins it holds, and a signature that changes with its files."""

from __future__ import annotations

import os

__all__ = ["Signature", "changed_files", "plugin_names", "signature"]

# (path relative to the folder, modification time in ns, size) of every file, sorted.
type Signature = tuple[tuple[str, int, int], ...]


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"


def plugin_names(folder: str) -> list[str]:
    """Return the plugins in folder: its modules (``x.py``) and packages (``x/__init__.py``).

    Names starting with ``_`` are the plugins' own helpers, imported by them, not plugins.
    """
    names = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_file() and entry.name.endswith(".py"):
            names.append(entry.name[:-3])
        elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
            names.append(entry.name)
    return [name for name in names if name.isidentifier()]


def signature(folder: str) -> Signature:
    """Return what changes whenever a file under folder is added, removed or written."""
    found: list[tuple[str, int, int]] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _skipped(d)]
        for name in files:
            if _skipped(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # removed while we looked: the next look sees it gone
            found.append((os.path.relpath(path, folder), st.st_mtime_ns, st.st_size))
    found.sort()
    return tuple(found)


def changed_files(before: Signature, after: Signature) -> tuple[str, ...]:
    """Return the files added, removed or written between two signatures."""
    old = {path: rest for path, *rest in before}
    new = {path: rest for path, *rest in after}
    return tuple(sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p)))
