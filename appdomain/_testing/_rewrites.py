"""Keep the code pytest's assertion rewriter makes for each test module (imports no appdomain).

The plugin installs this in every pytest run (``pytest_configure``), so it must cost nothing:
isolated tests' domains later run the kept code instead of compiling their module again
(see ``_code``).
"""

from __future__ import annotations

import functools
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["capture_rewrites", "rewritten"]

# Code pytest compiled for test modules (read from its pyc or rewritten), by source path.
rewritten: dict[str, types.CodeType] = {}


def capture_rewrites() -> None:
    """Keep the code pytest's assertion rewriter produces for each test module it imports."""
    try:
        from _pytest.assertion import rewrite
    except ImportError:
        return
    for name in ("_read_pyc", "_rewrite_test"):
        original = getattr(rewrite, name, None)
        if callable(original) and not getattr(original, "_appdomain_keeps", False):
            setattr(rewrite, name, _keeping(original))


def _keeping(original: Callable[..., object]) -> Callable[..., object]:
    # Both helpers take the source path first and return the code (last, in a tuple).
    @functools.wraps(original)
    def keep(fn: object, *args: object, **kwargs: object) -> object:
        result = original(fn, *args, **kwargs)
        code = result[-1] if isinstance(result, tuple) and result else result
        if isinstance(code, types.CodeType):
            rewritten[str(fn)] = code
        return result

    vars(keep)["_appdomain_keeps"] = True
    return keep
