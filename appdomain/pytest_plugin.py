"""Load appdomain's pytest plugin (the ``pytest11`` entry point, or ``-p appdomain.pytest_plugin``).

The plugin lives in ``appdomain._testing``; this module only names its hooks and fixtures,
which is where pytest looks for them.
"""

from ._testing._plugin import (
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
