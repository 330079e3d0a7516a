"""A process that starts on the pure path (APPDOMAIN_PURE=1, as without the C switch) works.

The ``route`` fixture switches routes inside one process, where proxy methods keep the
binding they got at import (in C when it was built).  Here a fresh process starts pure, so
``RemoteMethod`` and proxy members are the Python ones, and the remoting tests run on them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("module", ["test_remote_method.py", "test_remoting.py"])
def test_remoting_tests_pass_in_a_process_started_pure(module: str) -> None:
    env = {**os.environ, "APPDOMAIN_PURE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "pure",
            str(TESTS / module),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=TESTS,  # not the checkout: its appdomain/ has no marshal/ (see ./dev)
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1]
