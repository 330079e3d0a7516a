"""Run one ``unittest.TestCase`` test inside an isolated test's domain, as unittest runs it.

The test runs in a one-test suite, so its class and module fixtures (``setUpClass``,
``setUpModule`` and their tear-downs) run around it in the domain.  What unittest records
then becomes what pytest expects from a test function: the first error or failure is raised
(those of subtests included: they are not reported one by one), a skip raises pytest's skip,
an expected failure its xfail, an unexpected success its fail, as pytest's own unittest
support reports them.
"""

from __future__ import annotations

import unittest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

    # What unittest passes its results (None items only when nothing was raised).
    type ExcInfo = (
        tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
    )

__all__ = ["run_case"]


class _Recorder(unittest.TestResult):
    """Keep what unittest reports, exceptions as they are (not formatted to text)."""

    def __init__(self) -> None:
        super().__init__()
        self.raised: list[BaseException] = []
        self.skip_reason: str | None = None
        self.expected_failure = False
        self.unexpected_success = False

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
        if err is not None:
            self._keep(err)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        if self.skip_reason is None:
            self.skip_reason = reason

    def addExpectedFailure(self, test: unittest.TestCase, err: object) -> None:
        self.expected_failure = True

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        self.unexpected_success = True


def run_case(case_class: type[unittest.TestCase], method: str) -> None:
    """Run case_class(method) with its fixtures; raise what pytest should report."""
    __tracebackhide__ = True
    recorder = _Recorder()
    unittest.TestSuite([case_class(method)]).run(recorder)
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
