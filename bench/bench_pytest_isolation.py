"""Run a PyPI project's own test suite normally and with --appdomain-isolate; compare.

Run: ``.venv/bin/python bench/bench_pytest_isolation.py [project==version] [--ahead N]``
(default ``toolz==1.2.0``).  Downloads the sdist with pip into a temporary folder (nothing
is kept), runs its tests twice with this interpreter's pytest, and prints the pass/fail
counts of both runs and the isolation overhead per test (target: <= 20 ms).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

DEFAULT_PROJECT = "toolz==1.2.0"
# Where each known project keeps its tests, inside the unpacked sdist.
TEST_DIRS = {"toolz": "toolz/tests", "six": "test_six.py", "more-itertools": "tests"}


def download(requirement: str, into: Path) -> Path:
    """Fetch the project's sdist with pip and unpack it; return the unpacked folder."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            requirement,
            "-d",
            str(into),
        ],
        check=True,
    )
    archive = next(into.glob("*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return next(p for p in into.iterdir() if p.is_dir())


def run_suite(source: Path, tests: str, extra: list[str]) -> tuple[dict[str, int], float]:
    """Run pytest on the suite; return its counts (from JUnit XML) and wall-clock seconds."""
    report = source / f"report{len(extra)}.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
        tests,
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=source, stdout=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None, "pytest wrote no test suite"
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", default=DEFAULT_PROJECT)
    parser.add_argument("--ahead", type=int, default=None, help="--appdomain-prepare-ahead")
    args = parser.parse_args()
    name = args.project.split("==")[0]
    with tempfile.TemporaryDirectory(prefix="appdomain-bench-") as tmp:
        source = download(args.project, Path(tmp))
        tests = TEST_DIRS.get(name, "tests")
        print(f"{source.name}: running {tests}")
        normal, t_normal = run_suite(source, tests, [])
        extra = ["--appdomain-isolate"]
        if args.ahead is not None:
            extra.append(f"--appdomain-prepare-ahead={args.ahead}")
        isolated, t_isolated = run_suite(source, tests, extra)
    runs = (("normal", normal, t_normal), ("isolated", isolated, t_isolated))
    for label, counts, seconds in runs:
        print(
            f"{label:>9}: {counts['passed']} passed, {counts['failures']} failed, "
            f"{counts['errors']} errors, {counts['skipped']} skipped in {seconds:.2f} s"
        )
    same = all(normal[k] == isolated[k] for k in ("passed", "failures", "errors", "skipped"))
    per_test = (t_isolated - t_normal) / max(1, normal["tests"]) * 1000
    print(f"same outcome counts: {same}")
    print(f"isolation overhead: {per_test:.1f} ms per test (target <= 20 ms)")


if __name__ == "__main__":
    main()
