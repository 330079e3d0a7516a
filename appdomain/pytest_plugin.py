"""Load appdomain's pytest plugin (the ``pytest11`` entry point, or ``-p appdomain.pytest_plugin``).

The plugin lives in ``appdomain._testing``; this module only names its hooks and fixtures,
which is where pytest looks for them.
"""

import sys


def _plain_imports() -> None:
    """Let appdomain's modules import as they are, not through pytest's assertion rewriter.

    pytest rewrites the asserts of every module of a distribution with a ``pytest11``
    entry point, so each module of the package the run imports would be parsed and compiled
    again, ~1 ms each where no rewritten pyc is kept (``PYTHONDONTWRITEBYTECODE``): most of
    what the plugin cost a run that never uses it.  appdomain's few asserts are internal
    checks: rewriting them helps no test.
    Only this module and the package's ``__init__`` (imported before it, and importing
    nothing) were rewritten.
    """
    for finder in sys.meta_path:
        marked = getattr(finder, "_must_rewrite", None)  # pytest's AssertionRewritingHook
        cache = getattr(finder, "_marked_for_rewrite_cache", None)
        if isinstance(marked, set) and isinstance(cache, dict) and __package__ in marked:
            marked.discard(__package__)
            cache.clear()  # a memo of the marks, made again from them


_plain_imports()

from ._testing._plugin import (  # noqa: E402  (imported once the rewriter leaves them alone)
    appdomain,
    appdomain_factory,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_pyfunc_call,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_unconfigure,
)

__all__ = [
    "appdomain",
    "appdomain_factory",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_pyfunc_call",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
]
