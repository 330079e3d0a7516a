"""The code isolated tests' domains run, prepared once in the main process.

A test module crosses into a domain as code, its asserts rewritten: the code pytest
itself compiled for the module while collecting it (kept by ``_rewrites``), or,
failing that, compiled here the way pytest does.  Rewriting a module's asserts costs
~100-300 ms, and importing pytest's rewriter into each domain ~80 ms more.

The modules a test imports from source files without a usable pyc (no ``__pycache__``
writes, say) are compiled by the first domain that imports them; the code comes back here
and goes to the next domains, which would otherwise compile them again each.
"""

from __future__ import annotations

import ast
import marshal as _stdlib_marshal
import os
import threading
import types
import warnings
from collections.abc import Callable

import pytest

from ._remote import AR_ALIAS
from ._rewrites import rewritten

__all__ = ["code_cache", "stashed"]

_code_key = pytest.StashKey["_CodeCache"]()
# A source file's identity: (st_mtime_ns, st_size).
Stamp = tuple[int, int]
_PYTEST_AR = "_pytest.assertion.rewrite"


def stashed[T](
    config: pytest.Config, key: pytest.StashKey[T], make: Callable[[pytest.Config], T]
) -> T:
    """Return the session's value under key, made by make(config) on first use."""
    value = config.stash.get(key, None)
    if value is None:
        # Threads preparing domains may get here at once: setdefault keeps the first one.
        value = config.stash.setdefault(key, make(config))
    return value


def code_cache(config: pytest.Config) -> _CodeCache:
    """Return the session's code for the domains."""
    return stashed(config, _code_key, _CodeCache)


class _CodeCache:
    """Code for the domains: test modules compiled here, modules compiled by earlier domains.

    Entries are keyed by source path and stamped with the file's (mtime_ns, size), so an
    edited file is compiled anew.
    """

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._tests: dict[str, tuple[Stamp, bytes]] = {}
        self._shared: dict[str, tuple[Stamp, bytes]] = {}

    def test_module(self, item: pytest.Function) -> bytes | None:
        """Return the marshalled code of item's module, asserts rewritten as pytest did here."""
        module = item.module
        path = str(module.__file__)
        rewrite = self._config.getoption("assertmode", "rewrite") == "rewrite" and (
            "@pytest_ar" in vars(module)  # pytest rewrote it in this process
        )
        try:
            st = os.stat(path)
        except OSError:
            return None  # the domain imports it as it can, and reports what goes wrong
        stamp = (st.st_mtime_ns, st.st_size)
        key = f"{int(rewrite)}{path}"
        with self._lock:
            hit = self._tests.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            code = rewritten.get(path) if rewrite else None
            if code is None:
                code = _compile_test_module(path, self._config if rewrite else None)
        except (OSError, SyntaxError, ValueError):
            return None
        data = _stdlib_marshal.dumps(_redirect(code))
        with self._lock:
            self._tests[key] = (stamp, data)
        return data

    def shared(self) -> dict[str, tuple[Stamp, bytes]]:
        """Return the code earlier domains compiled from source, by path."""
        with self._lock:
            return dict(self._shared)

    def learn(self, compiled: dict[str, tuple[Stamp, bytes]] | None) -> None:
        """Keep the code a domain compiled from source files, for the next domains."""
        if compiled:
            with self._lock:
                self._shared.update(compiled)


def _compile_test_module(path: str, config: pytest.Config | None) -> types.CodeType:
    """Compile a test module for a domain; with config, rewrite its asserts as pytest does."""
    with open(path, "rb") as file:
        source = file.read()
    if config is None:
        return compile(source, path, "exec", dont_inherit=True)
    from _pytest.assertion.rewrite import rewrite_asserts

    tree = ast.parse(source, filename=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytest warned about these asserts when it collected
        rewrite_asserts(tree, source, path, config)
    return compile(tree, path, "exec", dont_inherit=True)


def _redirect(code: types.CodeType) -> types.CodeType:
    """Make the rewritten module's ``import _pytest.assertion.rewrite as @pytest_ar`` load
    appdomain's lazy stand-in instead (see ``appdomain._testing._ar``).

    The dotted name is only ever an import's in the module's top-level names, and the
    stand-in's alias has as many parts, so the rest of that import statement works as is.
    """
    names = code.co_names
    if _PYTEST_AR not in names:
        return code
    return code.replace(co_names=tuple(AR_ALIAS if name == _PYTEST_AR else name for name in names))
