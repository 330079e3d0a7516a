"""Run the ``appdomain`` command: list the samples and run one of them.

    appdomain samples                  list the samples with one-line descriptions
    appdomain sample                   the same
    appdomain sample NAME [ARGS...]    run samples/NAME.py as a script, exit with its code
    appdomain info                     what a bug report needs: versions, call paths, a self-check
    appdomain --version

A sample runs in a subprocess with this interpreter, exactly as ``python NAME.py`` would:
samples are ports of .NET programs whose ``Main`` lives in the script (``"__main__"`` in
``CreateInstanceAndUnwrap``), so they must be the main script of their own process.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["find_samples_dir", "list_samples", "main", "sample_description"]

USAGE = """\
usage: appdomain samples
       appdomain sample [NAME [ARGS...]]
       appdomain info
       appdomain --version

Lists and runs the samples shipped with appdomain (ports of the .NET AppDomain samples);
info prints what a bug report needs (versions, call paths, socket routes, a 2 s self-check).
"""


def find_samples_dir() -> Path | None:
    """Locate the samples: the package ``appdomain.samples`` (wheel), else the repo checkout."""
    candidates: list[Path] = []
    try:
        # find_spec locates the package without running it.
        spec = importlib.util.find_spec("appdomain.samples")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    # Editable install or plain checkout: samples/ sits beside the appdomain/ package.
    candidates.append(Path(__file__).resolve().parent.parent / "samples")
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.py")):
            return candidate
    return None


def list_samples(samples_dir: Path) -> dict[str, Path]:
    """Map each sample's name to its script, in name order (``_*.py`` files are not samples)."""
    return {
        path.stem: path
        for path in sorted(samples_dir.glob("*.py"))
        if not path.name.startswith("_")
    }


def sample_description(path: Path) -> str:
    """Return the first line of a sample's module docstring, without running it."""
    try:
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return "(unreadable)"
    return docstring.strip().splitlines()[0] if docstring else ""


def _print_samples(samples: dict[str, Path]) -> None:
    width = max((len(name) for name in samples), default=0)
    print("Samples (run one with: appdomain sample NAME [ARGS...]):")
    for name, path in samples.items():
        print(f"  {name:<{width}}  {sample_description(path)}")


def _run_sample(samples: dict[str, Path], name: str, args: Sequence[str]) -> int:
    script = samples.get(name)
    if script is None:
        # Accept "DuplicationSample.py" too, as a shell completion would type it.
        script = samples.get(name.removesuffix(".py"))
    if script is None:
        known = ", ".join(samples) or "(none)"
        print(f"appdomain: unknown sample {name!r}; the samples are: {known}", file=sys.stderr)
        return 2
    try:
        completed = subprocess.run([sys.executable, str(script), *args], check=False)
    except KeyboardInterrupt:
        # The child got the same SIGINT from the terminal and stops on its own.
        return 130
    # A sample killed by a signal reports -N; shells spell that 128+N.
    return completed.returncode if completed.returncode >= 0 else 128 - completed.returncode


def _print_info(rest: Sequence[str]) -> int:
    if rest:
        print(f"appdomain: 'info' takes no arguments (got {' '.join(rest)!r})", file=sys.stderr)
        return 2
    from . import __version__
    from ._info import report

    rows = report(__version__)
    width = max(len(topic) for topic, _ in rows)
    for topic, finding in rows:
        print(f"{topic + ':':<{width + 1}} {finding}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and do what it asks; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from . import __version__

        print(f"appdomain {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command == "info":
        return _print_info(rest)
    if command not in ("samples", "sample"):
        print(f"appdomain: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    samples_dir = find_samples_dir()
    if samples_dir is None:
        print(
            "appdomain: no samples found (neither appdomain.samples nor a checkout's samples/)",
            file=sys.stderr,
        )
        return 2
    samples = list_samples(samples_dir)
    if command == "samples" or not rest:
        if command == "samples" and rest:
            print(
                "appdomain: 'samples' takes no arguments; did you mean 'sample'?", file=sys.stderr
            )
            return 2
        _print_samples(samples)
        return 0
    return _run_sample(samples, rest[0], rest[1:])


if __name__ == "__main__":
    sys.exit(main())
