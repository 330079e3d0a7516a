"""Run PyPI projects' own test suites normally and with --appdomain-isolate; compare.

Run: ``.venv/bin/python bench/bench_pytest_isolation.py [project==version ...] [--repeat N]
[--ahead N] [--no-floor]`` (default: the suites in ``DEFAULT_SUITES``).  For each project it
downloads the sdist with pip into a temporary folder (nothing is kept), compiles its bytecode
caches (as Python does on a machine where it may write them), runs its tests with this
interpreter's pytest, normal and isolated in turn, N times (default 3), and prints:

- the pass/fail counts of both runs, and whether they are the same;
- the tests the isolated run ran in the main interpreter (``appdomain: ... ran unisolated``)
  and why;
- the wall-clock times (medians), and the isolation overhead per test from them;
- CPython's own cost of a fresh interpreter per test, measured without appdomain: create a
  subinterpreter, import the test's module into it (with appdomain's light ``pytest``
  stand-in, as isolated tests have), destroy it.  That CPU time, divided by the cores, is the
  ideal floor: the least any interpreter-per-test isolation can add on this machine; the
  ratio is the overhead over it (target <= 1.25, and <= 15 ms a test where the floor allows).
- The same work run on as many threads as there are cores, timed by the clock: the measured
  parallel floor, what CPython itself reaches here and now.  It is above the ideal one when
  other processes take cores (the machine may be shared) or CPython serialises something.
- The cores the isolated run kept busy (its CPU over its wall time) and those the rest of the
  machine used meanwhile (from /proc/stat): the wall figures are only as good as that is low.

A table of every suite's figures ends the output.  The machine may be shared: compare the
figures of one run, not of runs made at different times.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_SUITES = (
    "boltons==26.2.0",
    "more-itertools==11.2.1",
    "toolz==1.2.0",
    "inflection==0.5.1",
    "parse==1.22.4",
    "six==1.17.0",
    "pluggy==1.7.0",
    "iniconfig==2.3.1",
)
# Where each known project keeps its tests, inside the unpacked sdist (default "tests").
TEST_DIRS = {
    "toolz": "toolz/tests",
    "six": "test_six.py",
    "iniconfig": "testing",
    "inflection": "test_inflection.py",
    "pluggy": "testing",  # tests the pluggy installed with pytest: the same release
}
# Extra sys.path entries (inside the sdist) a project's tests need to import it.
SOURCE_DIRS = {"iniconfig": "src", "parse": "."}
# pytest options a project's configuration needs undone here (its addopts name plugins such as
# pytest-cov, which this environment does not have).
PYTEST_ARGS = {"parse": ["-o", "addopts="]}


def _package_dir() -> Path:
    """The folder appdomain is imported from (a link tree for ./dev's editable install, whose
    caches the domains read: an edited module's stale pyc would be compiled in every one)."""
    import importlib.util

    spec = importlib.util.find_spec("appdomain")
    assert spec is not None and spec.origin is not None, "appdomain is not installed"
    return Path(spec.origin).parent


PACKAGE_DIR = _package_dir()
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


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


def compile_caches(*folders: Path) -> None:
    """Write the bytecode caches, even where PYTHONDONTWRITEBYTECODE is set."""
    for folder in folders:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(folder)],
            stdout=subprocess.DEVNULL,
            check=False,
        )


def run_suite(
    source: Path, tests: str, extra: list[str], env: dict[str, str]
) -> tuple[dict[str, int], float, float, str]:
    """Run pytest on the suite; return its counts (from JUnit XML), wall and CPU seconds
    (user + system, every thread and domain of the run) and its output."""
    report = source / "report.xml"
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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None, "pytest wrote no test suite"
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts, elapsed, cpu, done.stdout


def collect(source: Path, tests: str, args: list[str], env: dict[str, str]) -> list[str]:
    """Return the node ids of the suite's test items (subtests are not items)."""
    done = subprocess.run(
        [*PYTEST, "--collect-only", *args, tests],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
    )
    return [line for line in done.stdout.splitlines() if "::" in line]


# Runs in a bare subinterpreter: what any interpreter-per-test design has to do.
_FLOOR_SOURCE = """
import importlib, sys
sys.path[:] = list(path)
from appdomain._testing import _standin
_standin.install()
importlib.import_module(module)
"""


class Floor(NamedTuple):
    """CPython's own work per test module: CPU seconds serially, wall seconds in parallel."""

    cpu: dict[str, float]  # file -> CPU of create + import + destroy (median of 5)
    parallel: dict[str, float]  # file -> wall of one, run on `cores` threads at once


def floor_per_module(source: Path, nodeids: list[str], path: list[str], cores: int) -> Floor:
    """Measure, per test module, CPython's create + import + destroy: its CPU one at a time
    (median of 5), and its wall time per interpreter with `cores` threads doing it at once."""
    import _interpreters

    from _pytest.pathlib import CouldNotResolvePathError, resolve_pkg_root_and_module_name

    import appdomain.marshal  # noqa: F401  (msgpack loads here before any subinterpreter)

    def once(shared: dict[str, object]) -> Any:  # None, or the exception's description
        interp = _interpreters.create("isolated")
        try:
            return _interpreters.exec(interp, _FLOOR_SOURCE, shared)
        finally:
            _interpreters.destroy(interp)

    costs: dict[str, float] = {}
    parallel: dict[str, float] = {}
    for file in sorted({nodeid.split("::")[0] for nodeid in nodeids}):
        try:
            root, module = resolve_pkg_root_and_module_name(source / file)
        except CouldNotResolvePathError:  # not in a package: pytest puts its folder on sys.path
            root, module = (source / file).parent, (source / file).stem
        shared = {"path": (str(root), *path), "module": module}
        samples = []
        failure = None
        for _ in range(5):
            start = time.process_time()
            failure = once(shared)
            samples.append(time.process_time() - start)
            if failure is not None:
                print(f"  (floor: {file} did not import bare: {failure.msg})")
                break
        costs[file] = statistics.median(samples)
        if failure is None:
            parallel[file] = _parallel_wall(once, shared, cores)
    return Floor(costs, parallel)


def _parallel_wall(
    once: Callable[[dict[str, object]], object], shared: dict[str, object], cores: int
) -> float:
    """Wall seconds per interpreter when `cores` threads each create, import, destroy 3."""
    each = 3

    def work() -> None:
        for _ in range(each):
            once(shared)

    threads = [threading.Thread(target=work) for _ in range(cores)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - start) / (cores * each)


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy since boot (None where /proc/stat is not)."""
    try:
        with open("/proc/stat", encoding="ascii") as file:
            fields = [int(v) for v in file.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Counts(NamedTuple):
    passed: int
    failed: int
    errors: int
    skipped: int

    def __str__(self) -> str:
        return f"{self.passed}/{self.failed}/{self.errors}/{self.skipped}"


class Result(NamedTuple):
    """One suite's figures: counts and medians of both runs, the floor, what ran unisolated."""

    name: str
    items: int
    normal: Counts
    isolated: Counts
    normal_s: float
    isolated_s: float
    normal_cpu: float
    isolated_cpu: float
    floor_cpu_ms: float | None  # CPython's CPU per test
    floor_parallel_ms: float | None  # CPython's wall per test, on `cores` threads at once
    cores: int
    unisolated: list[tuple[str, str]]
    others_cores: float | None  # cores the rest of the machine kept busy during isolated runs

    @property
    def cores_used(self) -> float:
        """The cores the isolated run kept busy on average (its CPU over its wall time)."""
        return self.isolated_cpu / self.isolated_s if self.isolated_s else 0.0

    @property
    def overhead_ms(self) -> float:
        return (self.isolated_s - self.normal_s) / max(1, self.items) * 1000

    @property
    def floor_ms(self) -> float | None:
        """The ideal floor: the least wall time a test can add, CPython's CPU over the cores."""
        return None if self.floor_cpu_ms is None else self.floor_cpu_ms / self.cores

    @property
    def ratio(self) -> float | None:
        """The wall overhead over the ideal floor."""
        return self.overhead_ms / self.floor_ms if self.floor_ms else None

    @property
    def parallel_ratio(self) -> float | None:
        """The wall overhead over the floor CPython measurably reached in parallel."""
        return self.overhead_ms / self.floor_parallel_ms if self.floor_parallel_ms else None

    @property
    def cpu_overhead_ms(self) -> float:
        return (self.isolated_cpu - self.normal_cpu) / max(1, self.items) * 1000

    @property
    def cpu_ratio(self) -> float | None:
        """CPU added per test over CPython's: unlike wall time, not inflated by other load."""
        return self.cpu_overhead_ms / self.floor_cpu_ms if self.floor_cpu_ms else None


def unisolated_tests(output: str) -> list[tuple[str, str]]:
    """Read the plugin's summary line: [(node id, why)] of the tests run in the main process."""
    for line in output.splitlines():
        found = re.match(r"appdomain: \d+ tests? ran unisolated: (.*)$", line)
        if found:
            entries = re.split(r"; (?=\S+::)", found.group(1))
            return [(e.partition(" (")[0], e.partition(" (")[2].removesuffix(")")) for e in entries]
    return []


def run_project(requirement: str, repeat: int, ahead: int | None, floor: bool) -> Result:
    """Download one project, run its suite both ways repeat times; return its figures."""
    name = requirement.split("==")[0]
    with tempfile.TemporaryDirectory(prefix="appdomain-bench-") as tmp:
        source = download(requirement, Path(tmp))
        compile_caches(source, PACKAGE_DIR)
        tests = TEST_DIRS.get(name, "tests")
        project_args = PYTEST_ARGS.get(name, [])
        env = dict(os.environ)
        extra_path = [str(source / SOURCE_DIRS[name])] if name in SOURCE_DIRS else []
        if extra_path:
            env["PYTHONPATH"] = os.pathsep.join([*extra_path, env.get("PYTHONPATH", "")])
        print(f"{source.name}: running {tests}, {repeat} times each way", flush=True)
        isolate = ["--appdomain-isolate"]
        if ahead is not None:
            isolate.append(f"--appdomain-prepare-ahead={ahead}")
        times: dict[str, list[float]] = {"normal": [], "isolated": []}
        cpus: dict[str, list[float]] = {"normal": [], "isolated": []}
        counts: dict[str, dict[str, int]] = {}
        unisolated: list[tuple[str, str]] = []
        others: list[float] = []
        for _ in range(repeat):
            for label, extra in (("normal", []), ("isolated", isolate)):
                busy = _busy_seconds()
                counts[label], seconds, cpu, output = run_suite(
                    source, tests, [*project_args, *extra], env
                )
                times[label].append(seconds)
                cpus[label].append(cpu)
                if label == "isolated":
                    unisolated = unisolated_tests(output)
                    after = _busy_seconds()
                    if busy is not None and after is not None:
                        others.append(max(0.0, after - busy - cpu) / seconds)
        items = collect(source, tests, project_args, env)
        cores = os.cpu_count() or 1
        measured = (
            floor_per_module(source, items, [*extra_path, *sys.path], cores) if floor else None
        )
    for label in ("normal", "isolated"):
        c = counts[label]
        runs = ", ".join(f"{t:.2f}" for t in times[label])
        print(
            f"{label:>9}: {c['passed']} passed, {c['failures']} failed, {c['errors']} errors, "
            f"{c['skipped']} skipped; {runs} s"
        )
    floor_cpu_ms = floor_parallel_ms = None
    if measured is not None and measured.cpu:
        per_file: dict[str, int] = {}
        for nodeid in items:
            file = nodeid.split("::")[0]
            per_file[file] = per_file.get(file, 0) + 1
        floor_cpu_ms = _per_test(measured.cpu, per_file) * 1000
        print(
            f"CPython's own work per test (bare subinterpreter: create, import the test module, "
            f"destroy): {floor_cpu_ms:.1f} ms CPU, so at least {floor_cpu_ms / cores:.1f} ms per "
            f"test on {cores} cores (ideal floor)"
        )
        if measured.parallel:
            floor_parallel_ms = _per_test(measured.parallel, per_file) * 1000
            print(
                f"the same on {cores} threads at once, by the clock: {floor_parallel_ms:.1f} ms "
                f"per test (measured parallel floor)"
            )
    result = Result(
        name=source.name,
        items=len(items),
        normal=_counts(counts["normal"]),
        isolated=_counts(counts["isolated"]),
        normal_s=statistics.median(times["normal"]),
        isolated_s=statistics.median(times["isolated"]),
        normal_cpu=statistics.median(cpus["normal"]),
        isolated_cpu=statistics.median(cpus["isolated"]),
        floor_cpu_ms=floor_cpu_ms,
        floor_parallel_ms=floor_parallel_ms,
        cores=cores,
        unisolated=unisolated,
        others_cores=statistics.median(others) if others else None,
    )
    print(f"same outcome counts: {result.normal == result.isolated}; test items: {len(items)}")
    print(
        f"isolation overhead: {result.overhead_ms:.1f} ms per test of wall time, "
        f"{result.cpu_overhead_ms:.1f} ms of CPU (medians of {repeat})"
    )
    print(
        f"isolated run kept {result.cores_used:.2f} of {cores} cores busy; the rest of the "
        f"machine used {_f(result.others_cores, 2)} cores meanwhile"
    )
    print_unisolated(result)
    return result


def _per_test(per_module: dict[str, float], per_file: dict[str, int]) -> float:
    """Average a per-module figure over the suite's tests (modules not measured left out)."""
    measured = {f: n for f, n in per_file.items() if f in per_module}
    return sum(per_module[f] * n for f, n in measured.items()) / max(1, sum(measured.values()))


def _counts(c: dict[str, int]) -> Counts:
    return Counts(c["passed"], c["failures"], c["errors"], c["skipped"])


def print_unisolated(result: Result) -> None:
    """List the tests the isolated run ran in the main interpreter, grouped by why."""
    if not result.unisolated:
        print("ran unisolated: none")
        return
    print(f"ran unisolated: {len(result.unisolated)}")
    by_why: dict[str, list[str]] = {}
    for nodeid, why in result.unisolated:
        by_why.setdefault(re.sub(r" at 0x[0-9a-f]+", "", why), []).append(nodeid)
    for why, nodeids in by_why.items():
        print(f"  {len(nodeids)} x {why}:")
        for nodeid in nodeids:
            print(f"      {nodeid}")


def print_table(results: list[Result]) -> None:
    """Print every suite's figures in one table (counts: passed/failed/errors/skipped)."""
    print()
    print(
        "| suite | tests | plain counts | isolated counts | same | unisolated | plain s | "
        "isolated s | overhead ms/test | ideal floor ms/test | ratio | measured parallel "
        "floor ms/test | ratio to it | CPU overhead ms/test | floor CPU ms/test | CPU ratio | "
        "cores used | others' cores |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.name} | {r.items} | {r.normal} | {r.isolated} | "
            f"{'yes' if r.normal == r.isolated else 'NO'} | {len(r.unisolated)} | "
            f"{r.normal_s:.2f} | {r.isolated_s:.2f} | {r.overhead_ms:.1f} | {_f(r.floor_ms)} | "
            f"{_f(r.ratio, 2)} | {_f(r.floor_parallel_ms)} | {_f(r.parallel_ratio, 2)} | "
            f"{r.cpu_overhead_ms:.1f} | {_f(r.floor_cpu_ms)} | {_f(r.cpu_ratio, 2)} | "
            f"{r.cores_used:.2f} | {_f(r.others_cores, 2)} |"
        )
    print(
        "counts: passed/failed/errors/skipped; times are medians; ratio = overhead / floor; "
        "ideal floor = CPython's CPU per test over the cores; measured parallel floor = CPython's "
        "wall per test with one thread per core; others' cores = load from the rest of the "
        "machine during the isolated runs"
    )


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="*", default=list(DEFAULT_SUITES))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind (median)")
    parser.add_argument("--ahead", type=int, default=None, help="--appdomain-prepare-ahead")
    parser.add_argument("--no-floor", action="store_true", help="skip CPython's floor")
    args = parser.parse_args()
    results = []
    for project in args.projects:
        results.append(run_project(project, args.repeat, args.ahead, not args.no_floor))
        print(flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
