"""Run one ``unittest.TestCase`` test inside an isolated test's domain, as unittest runs it.

The test runs in a one-test suite, so its class and module fixtures (``setUpClass``,
``setUpModule`` and their tear-downs) run around it in the domain.  What unittest records
then becomes what pytest expects from a test function: the first error or failure is raised
(each subtest goes back on its own, as pytest reports it), a skip raises pytest's skip,
an expected failure its xfail, an unexpected success its fail, as pytest's own unittest
support reports them.
"""

from __future__ import annotations

import unittest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    # A subtest, as it crosses back: message, params' reprs, outcome, skip reason.
    type Subtest = tuple[str | None, dict[str, str], str, str | None]

    # What unittest passes its results (None items only when nothing was raised).
    type ExcInfo = (
        tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
    )

__all__ = ["run_case"]

_SubTest = unittest.case._SubTest  # type: ignore[attr-defined]
_NO_MESSAGE = unittest.case._subtest_msg_sentinel  # type: ignore[attr-defined]


def _describe(subtest: unittest.TestCase, outcome: str, detail: object) -> Subtest:
    """Describe a subtest for the main process: (message, params' reprs, outcome, reason)."""
    message = getattr(subtest, "_message", _NO_MESSAGE)
    params = getattr(subtest, "params", {})
    reprs = {str(k): _short_repr(v) for k, v in params.items()}
    reason = detail if outcome == "skipped" and isinstance(detail, str) else None
    return (None if message is _NO_MESSAGE else str(message), reprs, outcome, reason)


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    return text if len(text) <= 240 else text[:237] + "..."


class _Recorder(unittest.TestResult):
    """Keep what unittest reports, exceptions as they are (not formatted to text)."""

    def __init__(self) -> None:
        super().__init__()
        self.raised: list[BaseException] = []
        self.skip_reason: str | None = None
        self.expected_failure = False
        self.unexpected_success = False
        # (subtest, "passed" / "failed" / "skipped", the error or the skip's reason)
        self.subtests: list[tuple[unittest.TestCase, str, object]] = []

    def _keep(self, err: ExcInfo) -> None:
        if err[1] is not None:
            self.raised.append(err[1].with_traceback(err[2]))

    def addError(self, test: unittest.TestCase, err: ExcInfo) -> None:
        self._keep(err)

    def addFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:
        self._keep(err)

    def addSubTest(
        self, test: unittest.TestCase, subtest: unittest.TestCase, err: ExcInfo | None
    ) -> None:
        self.subtests.append((subtest, "passed" if err is None else "failed", err))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        if isinstance(test, _SubTest):  # as pytest: a skipped subtest, not a skipped test
            self.subtests.append((test, "skipped", reason))
        elif self.skip_reason is None:
            self.skip_reason = reason

    def addExpectedFailure(self, test: unittest.TestCase, err: object) -> None:
        self.expected_failure = True

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        self.unexpected_success = True


def run_case(
    case_class: type[unittest.TestCase],
    method: str,
    report: Callable[[Subtest, BaseException | None], None],
) -> None:
    """Run case_class(method) with its fixtures; raise what pytest should report.

    Each subtest goes to report (the main process reports it as pytest does: on its own
    line, not as the test's outcome), with its error when it failed.
    """
    __tracebackhide__ = True
    recorder = _Recorder()
    try:
        unittest.TestSuite([case_class(method)]).run(recorder)
    finally:
        for subtest, outcome, detail in recorder.subtests:
            error = None
            if outcome == "failed" and isinstance(detail, tuple) and detail[1] is not None:
                error = detail[1].with_traceback(detail[2])
            report(_describe(subtest, outcome, detail), error)
    if recorder.raised:
        first = recorder.raised[0]
        for other in recorder.raised[1:]:
            first.add_note(f"and then: {type(other).__name__}: {other}")
        raise first
    from _pytest.outcomes import fail, skip, xfail

    if recorder.skip_reason is not None:
        skip(recorder.skip_reason)
    if recorder.expected_failure:
        xfail("")
    if recorder.unexpected_success:
        fail("Unexpected success", pytrace=False)
