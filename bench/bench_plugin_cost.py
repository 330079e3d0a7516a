"""Measure what appdomain's pytest plugin adds to an unrelated project's `pytest --co`.

Run: .venv/bin/python bench/bench_plugin_cost.py   (prints medians; no assertions)

The plugin loads in every pytest run of a venv where appdomain is installed, so collecting
a project that never uses it should cost (nearly) nothing more than with `-p no:appdomain`.
Each run is timed by the wall clock and by the CPU time it used: the CPU time is what the
plugin costs, and it varies far less than the wall clock when other work shares the cores.
Every run turns off the venv's other plugins (hypothesis's, whose import costs the same
either way and whose spread would hide the plugin's few milliseconds).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 30
FILES = 30
OTHER_PLUGINS_OFF = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def collect_seconds(project: Path, extra: list[str]) -> tuple[float, float]:
    """Run `pytest --co` in project; return its (wall, CPU) seconds."""
    cpu, begun = _children_cpu(), time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", *OTHER_PLUGINS_OFF, *extra],
        cwd=project,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - begun, _children_cpu() - cpu


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        for i in range(FILES):
            (project / f"test_m{i}.py").write_text("def test_a():\n    pass\n")
        for _ in range(2):  # warm the OS caches either way
            collect_seconds(project, [])
            collect_seconds(project, ["-p", "no:appdomain"])
        on, off = [], []
        for _ in range(RUNS):  # interleaved, so drift on the machine hits both alike
            on.append(collect_seconds(project, []))
            off.append(collect_seconds(project, ["-p", "no:appdomain"]))
    print(f"pytest --co of an unrelated project ({FILES} files), medians of {RUNS} runs:")
    print("                              wall        CPU")
    medians = []
    for label, runs in (("with appdomain's plugin", on), ("-p no:appdomain", off)):
        wall, cpu = (statistics.median(run[i] for run in runs) for i in (0, 1))
        medians.append((wall, cpu))
        print(f"  {label:24s} {wall * 1e3:7.1f} ms {cpu * 1e3:7.1f} ms")
    (wall_on, cpu_on), (wall_off, cpu_off) = medians
    print(
        f"  {'the plugin cost':24s} {(wall_on - wall_off) * 1e3:7.1f} ms "
        f"{(cpu_on - cpu_off) * 1e3:7.1f} ms   (target <= 5 ms)"
    )


if __name__ == "__main__":
    main()
