"""Stand in for ``_pytest.assertion.rewrite`` in test modules rewritten for an isolated test.

pytest's assertion rewriting puts ``import _pytest.assertion.rewrite as @pytest_ar`` at
the top of a test module, and the rewritten asserts call helpers on ``@pytest_ar`` only
to explain an assert that failed.  Importing that module costs a fresh domain ~80 ms, so
the test modules sent to an isolated test's domain import this one instead (under the
alias ``_remote.AR_ALIAS``): it loads the real helpers, and sets up pytest's
comparison explanations, the first time one is asked for.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types
    from collections.abc import Callable

# Returns pytest's assertion helpers, set up for this test's config: set by _remote, which
# installs this module as the alias (it is the one that knows the test's spec).
load_helpers: Callable[[], types.ModuleType] | None = None


def __getattr__(name: str) -> object:
    if name.startswith("__") or load_helpers is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(load_helpers(), name)
    globals()[name] = value  # later uses skip this function
    return value
