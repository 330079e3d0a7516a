"""Stand in for ``_pytest.assertion.rewrite`` in test modules rewritten for an isolated test.

pytest's assertion rewriting puts ``import _pytest.assertion.rewrite as @pytest_ar`` at
the top of a test module, and the rewritten asserts call helpers on ``@pytest_ar`` only
to explain an assert that failed.  Importing that module costs a fresh domain ~80 ms, so
the test modules sent to an isolated test's domain import this one instead (under the
alias ``_pytest_remote.AR_ALIAS``): it loads the real helpers, and sets up pytest's
comparison explanations, the first time one is asked for.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ._pytest_remote import assertion_helpers

    value = getattr(assertion_helpers(), name)
    globals()[name] = value  # later uses skip this function
    return value
