"""Measure what appdomain's pytest plugin adds to an unrelated project's `pytest --co`.

Run: .venv/bin/python bench/bench_plugin_cost.py   (prints medians; no assertions)

The plugin loads in every pytest run of a venv where appdomain is installed, so collecting
a project that never uses it should cost (nearly) nothing more than with `-p no:appdomain`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 30
FILES = 30


def collect_seconds(project: Path, extra: list[str]) -> float:
    begun = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", *extra],
        cwd=project,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - begun


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
    with_plugin, without = statistics.median(on), statistics.median(off)
    print(f"pytest --co of an unrelated project ({FILES} files), medians of {RUNS} runs:")
    print(f"  with appdomain's plugin   {with_plugin * 1e3:7.1f} ms")
    print(f"  -p no:appdomain           {without * 1e3:7.1f} ms")
    print(f"  the plugin's cost         {(with_plugin - without) * 1e3:7.1f} ms   (target <= 5 ms)")


if __name__ == "__main__":
    main()
