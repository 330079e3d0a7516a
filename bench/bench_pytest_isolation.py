"""Run a PyPI project's own test suite normally and with --appdomain-isolate; compare.

Run: ``.venv/bin/python bench/bench_pytest_isolation.py [project==version] [--repeat N]
[--ahead N] [--no-floor]`` (default ``toolz==1.2.0``).  Downloads the sdist with pip into a
temporary folder (nothing is kept), compiles its bytecode caches (as Python does on a machine
where it may write them), runs its tests with this interpreter's pytest, normal and isolated
in turn, N times (default 3), and prints:

- the pass/fail counts of both runs;
- the isolation overhead per test, from the median wall-clock times (target: <= 20 ms);
- CPython's own cost of a fresh interpreter per test, measured without appdomain: create a
  subinterpreter, import the test's module into it (with appdomain's light ``pytest``
  stand-in, as isolated tests have), destroy it.  That CPU time, divided by the cores, is the
  least any interpreter-per-test isolation can add on this machine; the rest is appdomain's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

DEFAULT_PROJECT = "toolz==1.2.0"
# Where each known project keeps its tests, inside the unpacked sdist.
TEST_DIRS = {
    "toolz": "toolz/tests",
    "six": "test_six.py",
    "more-itertools": "tests",
    "iniconfig": "testing",
    "inflection": "test_inflection.py",
    "parse": "tests",
}
# Extra sys.path entries (inside the sdist) a project's tests need to import it.
SOURCE_DIRS = {"iniconfig": "src", "parse": "."}
# pytest options a project's configuration needs undone here (its addopts name plugins such as
# pytest-cov, which this environment does not have).
PYTEST_ARGS = {"parse": ["-o", "addopts="]}
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "appdomain"
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
) -> tuple[dict[str, int], float, str]:
    """Run pytest on the suite; return its counts (from JUnit XML), wall seconds and output."""
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
    start = time.perf_counter()
    done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None, "pytest wrote no test suite"
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts, elapsed, done.stdout


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


def floor_per_module(source: Path, nodeids: list[str], path: list[str]) -> dict[str, float]:
    """Measure, per test module, the CPU seconds of create + import + destroy (median of 5)."""
    import _interpreters

    from _pytest.pathlib import CouldNotResolvePathError, resolve_pkg_root_and_module_name

    import appdomain.marshal  # noqa: F401  (msgpack loads here before any subinterpreter)

    costs: dict[str, float] = {}
    for file in sorted({nodeid.split("::")[0] for nodeid in nodeids}):
        try:
            root, module = resolve_pkg_root_and_module_name(source / file)
        except CouldNotResolvePathError:  # not in a package: pytest puts its folder on sys.path
            root, module = (source / file).parent, (source / file).stem
        shared = {"path": (str(root), *path), "module": module}
        samples = []
        for _ in range(5):
            start = time.process_time()
            interp = _interpreters.create("isolated")
            try:
                failure = _interpreters.exec(interp, _FLOOR_SOURCE, shared)
            finally:
                _interpreters.destroy(interp)
            samples.append(time.process_time() - start)
            if failure is not None:
                print(f"  (floor: {file} did not import bare: {failure.msg})")
                break
        costs[file] = statistics.median(samples)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", default=DEFAULT_PROJECT)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind (median)")
    parser.add_argument("--ahead", type=int, default=None, help="--appdomain-prepare-ahead")
    parser.add_argument("--no-floor", action="store_true", help="skip CPython's floor")
    args = parser.parse_args()
    name = args.project.split("==")[0]
    with tempfile.TemporaryDirectory(prefix="appdomain-bench-") as tmp:
        source = download(args.project, Path(tmp))
        compile_caches(source, PACKAGE_DIR)
        tests = TEST_DIRS.get(name, "tests")
        project_args = PYTEST_ARGS.get(name, [])
        env = dict(os.environ)
        extra_path = [str(source / SOURCE_DIRS[name])] if name in SOURCE_DIRS else []
        if extra_path:
            env["PYTHONPATH"] = os.pathsep.join([*extra_path, env.get("PYTHONPATH", "")])
        print(f"{source.name}: running {tests}, {args.repeat} times each way")
        isolate = ["--appdomain-isolate"]
        if args.ahead is not None:
            isolate.append(f"--appdomain-prepare-ahead={args.ahead}")
        times: dict[str, list[float]] = {"normal": [], "isolated": []}
        counts: dict[str, dict[str, int]] = {}
        summary = ""
        for _ in range(args.repeat):
            for label, extra in (("normal", []), ("isolated", isolate)):
                counts[label], seconds, output = run_suite(
                    source, tests, [*project_args, *extra], env
                )
                times[label].append(seconds)
                if label == "isolated":
                    summary = "\n".join(
                        line for line in output.splitlines() if line.startswith("appdomain:")
                    )
        items = collect(source, tests, project_args, env)
        floor = {} if args.no_floor else floor_per_module(source, items, [*extra_path, *sys.path])
    for label in ("normal", "isolated"):
        c = counts[label]
        runs = ", ".join(f"{t:.2f}" for t in times[label])
        print(
            f"{label:>9}: {c['passed']} passed, {c['failures']} failed, {c['errors']} errors, "
            f"{c['skipped']} skipped; {runs} s"
        )
    if summary:
        print(summary)
    same = all(counts["normal"][k] == counts["isolated"][k] for k in counts["normal"])
    medians = {label: statistics.median(t) for label, t in times.items()}
    per_test = (medians["isolated"] - medians["normal"]) / max(1, len(items)) * 1000
    print(f"same outcome counts: {same}")
    print(f"test items: {len(items)}")
    print(
        f"isolation overhead: {per_test:.1f} ms per test (median of {args.repeat}; target <= 20 ms)"
    )
    if floor:
        per_file: dict[str, int] = {}
        for nodeid in items:
            file = nodeid.split("::")[0]
            per_file[file] = per_file.get(file, 0) + 1
        cpu = sum(floor[f] * n for f, n in per_file.items() if f in floor) / max(1, len(items))
        cores = os.cpu_count() or 1
        print(
            f"CPython's own work per test (bare subinterpreter: create, import the test module, "
            f"destroy): {cpu * 1000:.1f} ms CPU, so at least {cpu * 1000 / cores:.1f} ms per test "
            f"on {cores} cores"
        )


if __name__ == "__main__":
    main()
