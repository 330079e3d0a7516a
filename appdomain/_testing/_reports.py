"""Give pytest the reports of what an isolated test did in its domain.

The outcome exception crosses back by name (pytest's outcomes cannot be imported by it),
the failure report as pytest serialized it there, and a unittest test's subtests one by
one; here they become what pytest's own run would have produced.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import _remote

__all__ = [
    "longrepr_key",
    "rebuild_longrepr",
    "rebuild_outcome",
    "report_subtests",
    "take_longrepr",
    "take_skip_location",
]

longrepr_key = pytest.StashKey[Any]()
_skip_where_key = pytest.StashKey[tuple[str, int]]()


def take_longrepr(item: pytest.Item) -> Any:
    """Return (once) the failure report an isolated test brought back from its domain."""
    if longrepr_key not in item.stash:
        return None
    longrepr = item.stash[longrepr_key]
    del item.stash[longrepr_key]
    return longrepr


def rebuild_outcome(item: pytest.Item, name: str, state: dict[str, object]) -> BaseException:
    """Rebuild the skip/xfail/fail/exit exception the test raised in its domain."""
    from _pytest import outcomes

    cls = getattr(outcomes, name, None)
    if not (isinstance(cls, type) and issubclass(cls, outcomes.OutcomeException)):
        cls = outcomes.Failed
    where = state.pop(_remote.SKIP_WHERE, None)
    exc = cls.__new__(cls)
    exc.__dict__.update(state)
    exc.args = (state.get("msg"),)
    if isinstance(exc, outcomes.Skipped):
        # Not at the plugin line that re-raised it: at the test, and then (in the report
        # hook) at the line inside the test that skipped, as pytest itself reports it.
        exc._use_item_location = True
        if isinstance(where, tuple):  # (file, line), as _remote._raised_at packed it
            item.stash[_skip_where_key] = (str(where[0]), int(where[1]))
    return exc


def take_skip_location(item: pytest.Item) -> tuple[str, int] | None:
    """Return (once) the file and line where an isolated test called ``pytest.skip()``."""
    where = item.stash.get(_skip_where_key, None)
    if where is not None:
        del item.stash[_skip_where_key]
    return where


def rebuild_longrepr(data: Any, exc: BaseException) -> Any:
    """Turn the report rendered in the domain back into pytest's report object."""
    if data is not None:
        from _pytest.reports import _report_kwargs_from_json

        try:
            return _report_kwargs_from_json({"longrepr": data})["longrepr"]
        except Exception:
            pass
    from _pytest.outcomes import Failed, OutcomeException

    if isinstance(exc, Failed) and not exc.pytrace:
        # Its message alone, as pytest shows it: the frames it was re-raised through here
        # are all hidden, and pytest would add a line saying so.
        return str(exc.msg)
    if isinstance(exc, OutcomeException):
        return None  # pytest reports skips and xfails itself
    remote = getattr(exc, "remote_traceback", None)
    return f"{remote}(ran inside an isolated AppDomain)" if remote else None


def report_subtests(item: pytest.Function, subtests: list[tuple[Any, ...]]) -> None:
    """Report the subtests a unittest test ran in its domain, each on its own, as pytest does."""
    if not subtests:
        return
    try:
        from _pytest.subtests import SubtestContext, SubtestReport
    except ImportError:  # a pytest before 9 reports no subtests itself
        return
    from _pytest.runner import CallInfo

    for message, params, outcome, reason, longrepr in subtests:
        call = CallInfo[None](None, None, start=0, stop=0, duration=0, when="call", _ispytest=True)
        report = item.ihook.pytest_runtest_makereport(item=item, call=call)
        report.outcome = outcome
        if outcome == "failed":
            report.longrepr = rebuild_longrepr(longrepr, AssertionError("subtest failed"))
        elif outcome == "skipped":
            line = item.location[1]
            report.longrepr = (str(item.path), (line or 0) + 1, f"Skipped: {reason}")
        kwargs = {name: _Repr(text) for name, text in params.items()}
        context = SubtestContext(msg=message, kwargs=kwargs)
        sub = SubtestReport._new(report, context, captured_output=None, captured_logs=None)
        item.ihook.pytest_runtest_logreport(report=sub)


class _Repr(str):
    """A repr made in the domain: pytest's saferepr of it gives it back as it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)
